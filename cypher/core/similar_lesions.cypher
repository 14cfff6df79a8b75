// name: similar_lesions
// params: lesionId: STRING, k: INTEGER, typeName: STRING, excludeSamePatient: BOOLEAN
// returns: lesionId, distance, rank, modelId, typeName, typeCode, predictedTypeName, patientId, studyId, longDiameterMm, locationX, locationY, locationZ
// idempotent: read-only
// The lesions most similar to $lesionId, read from its precomputed SIMILAR_TO edges (nearest
// first). $typeName (null: any) and $excludeSamePatient filter the stored neighbours, so fewer
// than $k rows come back when they remove some: lesiondb then scans (similar_lesions_scan).
MATCH (pa:Patient)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(a:Lesion {lesionId: $lesionId})
MATCH (a)-[r:SIMILAR_TO]->(b:Lesion)<-[:HAS_LESION]-(s:Study)<-[:HAS_STUDY]-(pb:Patient)
WHERE ($typeName IS NULL OR b.typeName = $typeName)
  AND (NOT $excludeSamePatient OR pb.patientId <> pa.patientId)
RETURN b.lesionId AS lesionId, r.distance AS distance, r.rank AS rank, r.modelId AS modelId,
       b.typeName AS typeName, b.typeCode AS typeCode, b.predictedTypeName AS predictedTypeName,
       pb.patientId AS patientId, s.studyId AS studyId, b.longDiameterMm AS longDiameterMm,
       b.locationX AS locationX, b.locationY AS locationY, b.locationZ AS locationZ
ORDER BY rank
LIMIT $k
