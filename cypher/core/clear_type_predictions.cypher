// name: clear_type_predictions
// params: modelId: STRING
// returns: cleared
// idempotent: yes
// Removes stale type predictions: from lesions labelled since, and from lesions no longer
// embedded by $modelId (the model the new predictions come from).
MATCH (l:Lesion)
WHERE l.predictedTypeCode IS NOT NULL
  AND (coalesce(l.labelled, false) OR NOT coalesce(l.embedded, false) OR l.modelId <> $modelId)
SET l.predictedTypeCode = null, l.predictedTypeName = null, l.predictedTypeConfidence = null,
    l.predictedTypeModelId = null, l.predictedTypeMethod = null, l.predictedTypeK = null
RETURN count(l) AS cleared
