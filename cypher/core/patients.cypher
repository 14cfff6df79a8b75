// name: patients
// params: none
// returns: patientId, sex, sourceId, studies, lesions
// idempotent: read-only
// Every patient with the number of studies and annotated lesions.
MATCH (p:Patient)
OPTIONAL MATCH (p)-[:HAS_STUDY]->(s:Study)
OPTIONAL MATCH (s)-[:HAS_LESION]->(l:Lesion)
RETURN p.patientId AS patientId, p.sex AS sex, p.sourceId AS sourceId,
       count(DISTINCT s) AS studies, count(DISTINCT l) AS lesions
ORDER BY patientId
