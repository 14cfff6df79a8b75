// name: similar_by_vector
// params: vector: LIST<FLOAT>, k: INTEGER, modelId: STRING, typeName: STRING, excludePatientId: STRING
// returns: lesionId, distance, typeName, typeCode, predictedTypeName, patientId, studyId, longDiameterMm, locationX, locationY, locationZ
// idempotent: read-only
// Lesions nearest to a vector through the vector index (approximate): the $k nearest embeddings,
// then the filters (so fewer than $k rows may come back; callers ask for more). The distance is
// the stored embedding's, as in the scan (the index's score may be quantized):
// vector.similarity.euclidean is 1 / (1 + d²), turned back into the Euclidean distance d.
// queryNodes searches the HNSW graph with its k as the candidate list, which at k = 5 misses true
// neighbours even among a hundred lesions: the index is asked for at least 64 candidates (the
// efRuntime of the FalkorDB index) and the $k nearest of them by the stored embeddings are kept,
// so both engines search as wide.
CALL db.index.vector.queryNodes('lesion_embedding', CASE WHEN $k < 64 THEN 64 ELSE $k END, $vector) YIELD node
WITH node AS b, vector.similarity.euclidean(node.embedding, $vector) AS sim
WITH b, CASE WHEN sim >= 1.0 THEN 0.0 ELSE sqrt(1.0 / sim - 1.0) END AS distance
ORDER BY distance, b.lesionId
LIMIT $k
WITH b, distance
WHERE ($modelId IS NULL OR b.modelId = $modelId) AND ($typeName IS NULL OR b.typeName = $typeName)
MATCH (pb:Patient)-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(b)
WHERE $excludePatientId IS NULL OR pb.patientId <> $excludePatientId
RETURN b.lesionId AS lesionId, distance, b.typeName AS typeName, b.typeCode AS typeCode,
       b.predictedTypeName AS predictedTypeName, pb.patientId AS patientId, s.studyId AS studyId,
       b.longDiameterMm AS longDiameterMm, b.locationX AS locationX, b.locationY AS locationY,
       b.locationZ AS locationZ
ORDER BY distance, lesionId
