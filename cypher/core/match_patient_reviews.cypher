// name: match_patient_reviews
// params: patientIds: LIST<STRING>
// returns: patientId, src, dst, status
// idempotent: read-only
// The reviewed POSSIBLE_SAME_LESION edges of a batch of patients: an accepted one is a must-link
// of the next match (the two lesions share a track), a rejected one a cannot-link (never).
UNWIND $patientIds AS pid
MATCH (:Patient {patientId: pid})-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(l:Lesion)-[r:POSSIBLE_SAME_LESION]->(m:Lesion)
WHERE r.status IN ['accepted', 'rejected']
RETURN pid AS patientId, l.lesionId AS src, m.lesionId AS dst, r.status AS status
