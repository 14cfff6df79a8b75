// name: similar_lesions_scan
// params: lesionId: STRING, k: INTEGER, typeName: STRING, excludeSamePatient: BOOLEAN
// returns: lesionId, distance, typeName, typeCode, predictedTypeName, patientId, studyId, longDiameterMm, locationX, locationY, locationZ
// idempotent: read-only
// Exact nearest lesions by scanning every embedding of the same model (used when filters or a
// k above the stored SIMILAR_TO edges leave too few edges). Neo4j's Euclidean similarity is
// 1 / (1 + d²): turned back into the distance d. Ties by lesionId.
MATCH (pa:Patient)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(a:Lesion {lesionId: $lesionId})
MATCH (pb:Patient)-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(b:Lesion)
WHERE b.embedded AND b.modelId = a.modelId AND b <> a
  AND ($typeName IS NULL OR b.typeName = $typeName)
  AND (NOT $excludeSamePatient OR pb.patientId <> pa.patientId)
WITH b, s, pb, vector.similarity.euclidean(a.embedding, b.embedding) AS sim
WITH b, s, pb, CASE WHEN sim >= 1.0 THEN 0.0 ELSE sqrt(1.0 / sim - 1.0) END AS distance
ORDER BY distance, b.lesionId
LIMIT $k
RETURN b.lesionId AS lesionId, distance, b.typeName AS typeName, b.typeCode AS typeCode,
       b.predictedTypeName AS predictedTypeName, pb.patientId AS patientId, s.studyId AS studyId,
       b.longDiameterMm AS longDiameterMm, b.locationX AS locationX, b.locationY AS locationY,
       b.locationZ AS locationZ
