// name: match_patient_possible
// params: patientIds: LIST<STRING>
// returns: patientId, src, dst, probability, cost, status, trackingUid
// idempotent: read-only
// The POSSIBLE_SAME_LESION edges leaving the lesions of a batch of patients (what the evaluations score).
UNWIND $patientIds AS pid
MATCH (:Patient {patientId: pid})-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(l:Lesion)-[r:POSSIBLE_SAME_LESION]->(m:Lesion)
RETURN pid AS patientId, l.lesionId AS src, m.lesionId AS dst, r.probability AS probability, r.cost AS cost,
       r.status AS status, r.trackingUid AS trackingUid
