// name: patient_lesion_links
// params: patientId: STRING
// returns: studyId, lesion, type, targetLabel, target, rel
// idempotent: read-only
// Every lesion of a patient and every relationship leaving it (to tracks, proposals, other
// lesions); one row per (lesion, relationship), with nulls for a lesion that has none.
MATCH (p:Patient {patientId: $patientId})-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(l:Lesion)
OPTIONAL MATCH (l)-[r]->(m)
RETURN s.studyId AS studyId, properties(l) AS lesion, type(r) AS type, labels(m)[0] AS targetLabel,
       properties(m) AS target, properties(r) AS rel
