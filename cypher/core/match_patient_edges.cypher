// name: match_patient_edges
// params: patientIds: LIST<STRING>
// returns: patientId, src, dst, cost, confidence, probability, method
// idempotent: read-only
// The SAME_LESION edges leaving the lesions of a batch of patients (what the evaluations score).
UNWIND $patientIds AS pid
MATCH (:Patient {patientId: pid})-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(l:Lesion)-[r:SAME_LESION]->(m:Lesion)
RETURN pid AS patientId, l.lesionId AS src, m.lesionId AS dst, r.cost AS cost, r.confidence AS confidence,
       r.probability AS probability, r.method AS method
