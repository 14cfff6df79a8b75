// name: similar_lesions_scan
// params: lesionId: STRING, k: INTEGER, typeName: STRING, excludeSamePatient: BOOLEAN
// returns: lesionId, distance, typeName, typeCode, predictedTypeName, patientId, studyId, longDiameterMm, locationX, locationY, locationZ
// idempotent: read-only
// Exact nearest lesions by scanning every embedding of the same model (used when filters or a
// k above the stored SIMILAR_TO edges leave too few edges). Euclidean distance; ties by lesionId.
MATCH (pa:Patient)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(a:Lesion {lesionId: $lesionId})
MATCH (pb:Patient)-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(b:Lesion)
WHERE b.embedded AND b.modelId = a.modelId AND b <> a
  AND ($typeName IS NULL OR b.typeName = $typeName)
  AND (NOT $excludeSamePatient OR pb.patientId <> pa.patientId)
WITH b, s, pb, vec.euclideanDistance(a.embedding, b.embedding) AS distance
ORDER BY distance, b.lesionId
LIMIT $k
RETURN b.lesionId AS lesionId, distance, b.typeName AS typeName, b.typeCode AS typeCode,
       b.predictedTypeName AS predictedTypeName, pb.patientId AS patientId, s.studyId AS studyId,
       b.longDiameterMm AS longDiameterMm, b.locationX AS locationX, b.locationY AS locationY,
       b.locationZ AS locationZ
