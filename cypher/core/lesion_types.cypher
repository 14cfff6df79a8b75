// name: lesion_types
// params: modelId: STRING
// returns: lesionId, typeName, predictedTypeName
// idempotent: read-only
// Type label (null when unlabelled) and predicted type of every lesion embedded by $modelId.
MATCH (l:Lesion)
WHERE l.embedded AND l.modelId = $modelId
RETURN l.lesionId AS lesionId, l.typeName AS typeName, l.predictedTypeName AS predictedTypeName
