// name: patient_studies
// params: patientId: STRING
// returns: patient, study
// idempotent: read-only
// One row per study of a patient, with both nodes' properties.
MATCH (p:Patient {patientId: $patientId})-[:HAS_STUDY]->(s:Study)
RETURN properties(p) AS patient, properties(s) AS study
ORDER BY s.studyIndex
