// name: lesion_detail
// params: lesionId: STRING
// returns: patientId, studyId, studyIndex, studyDay, lesion (properties)
// idempotent: read-only
// One lesion with its study and patient (the web's lesion page and its crop).
MATCH (p:Patient)-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(l:Lesion {lesionId: $lesionId})
RETURN p.patientId AS patientId, s.studyId AS studyId, s.studyIndex AS studyIndex, s.studyDay AS studyDay,
       properties(l) AS lesion
LIMIT 1
