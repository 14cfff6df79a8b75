// name: mining_patient_data
// params: patientIds: LIST<STRING>
// returns: patientId, study (properties), lesion (properties, null for a study without lesions), trackingUid
// idempotent: read-only
// Everything mining needs for a batch of patients: every study, every lesion with its embedding,
// and the track each lesion belongs to (null when untracked). Proposal-made lesions are included:
// once accepted they count as observations of their track. In one order on every engine (a
// track's observations, a study's lesions come in row order).
UNWIND $patientIds AS pid
MATCH (p:Patient {patientId: pid})-[:HAS_STUDY]->(s:Study)
OPTIONAL MATCH (s)-[:HAS_LESION]->(l:Lesion)
OPTIONAL MATCH (l)-[:IN_TRACK]->(t:Track)
RETURN pid AS patientId, properties(s) AS study, properties(l) AS lesion, t.trackingUid AS trackingUid
ORDER BY patientId, study.studyIndex, study.studyId, lesion.lesionId
