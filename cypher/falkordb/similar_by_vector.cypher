// name: similar_by_vector
// params: vector: LIST<FLOAT>, k: INTEGER, modelId: STRING, typeName: STRING, excludePatientId: STRING
// returns: lesionId, distance, typeName, typeCode, predictedTypeName, patientId, studyId, longDiameterMm, locationX, locationY, locationZ
// idempotent: read-only
// Lesions nearest to a vector through the HNSW index (approximate): the $k nearest embeddings,
// then the filters (so fewer than $k rows may come back; callers ask for more). FalkorDB's
// score is the Euclidean distance itself.
CALL db.idx.vector.queryNodes('Lesion', 'embedding', $k, vecf32($vector)) YIELD node, score
WITH node AS b, score AS distance
WHERE ($modelId IS NULL OR b.modelId = $modelId) AND ($typeName IS NULL OR b.typeName = $typeName)
MATCH (pb:Patient)-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(b)
WHERE $excludePatientId IS NULL OR pb.patientId <> $excludePatientId
RETURN b.lesionId AS lesionId, distance, b.typeName AS typeName, b.typeCode AS typeCode,
       b.predictedTypeName AS predictedTypeName, pb.patientId AS patientId, s.studyId AS studyId,
       b.longDiameterMm AS longDiameterMm, b.locationX AS locationX, b.locationY AS locationY,
       b.locationZ AS locationZ
ORDER BY distance, lesionId
