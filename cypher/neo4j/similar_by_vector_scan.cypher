// name: similar_by_vector_scan
// params: vector: LIST<FLOAT>, k: INTEGER, modelId: STRING, typeName: STRING, excludePatientId: STRING
// returns: lesionId, distance, typeName, typeCode, predictedTypeName, patientId, studyId, longDiameterMm, locationX, locationY, locationZ
// idempotent: read-only
// Exact: the $k lesions nearest to a vector among every embedding of $modelId (a full scan,
// filters applied first). Neo4j's similarity 1 / (1 + d²) turned back into the distance d.
MATCH (pb:Patient)-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(b:Lesion)
WHERE b.embedded AND b.modelId = $modelId
  AND ($typeName IS NULL OR b.typeName = $typeName)
  AND ($excludePatientId IS NULL OR pb.patientId <> $excludePatientId)
WITH b, s, pb, vector.similarity.euclidean(b.embedding, $vector) AS sim
WITH b, s, pb, CASE WHEN sim >= 1.0 THEN 0.0 ELSE sqrt(1.0 / sim - 1.0) END AS distance
ORDER BY distance, b.lesionId
LIMIT $k
RETURN b.lesionId AS lesionId, distance, b.typeName AS typeName, b.typeCode AS typeCode,
       b.predictedTypeName AS predictedTypeName, pb.patientId AS patientId, s.studyId AS studyId,
       b.longDiameterMm AS longDiameterMm, b.locationX AS locationX, b.locationY AS locationY,
       b.locationZ AS locationZ
