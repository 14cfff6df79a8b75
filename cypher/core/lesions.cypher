// name: lesions
// params: patientId: STRING, studyId: STRING, typeName: STRING, limit: INTEGER
// returns: patientId, studyId, studyIndex, lesion (all lesion properties but the embedding)
// idempotent: read-only
// Lesions with their study and patient; a null parameter means "any".
MATCH (p:Patient)-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(l:Lesion)
WHERE ($patientId IS NULL OR p.patientId = $patientId)
  AND ($studyId IS NULL OR s.studyId = $studyId)
  AND ($typeName IS NULL OR l.typeName = $typeName)
RETURN p.patientId AS patientId, s.studyId AS studyId, s.studyIndex AS studyIndex,
       l.lesionId AS lesionId, properties(l) AS lesion
ORDER BY patientId, studyIndex, lesionId
LIMIT $limit
