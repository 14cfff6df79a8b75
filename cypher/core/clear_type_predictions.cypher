// name: clear_type_predictions
// params: keep: LIST<STRING>
// returns: cleared
// idempotent: yes
// Removes type predictions from lesions not in $keep (the lesions just predicted): lesions that
// got a label since, or lost their embedding, keep no stale prediction.
MATCH (l:Lesion)
WHERE l.predictedTypeCode IS NOT NULL AND NOT l.lesionId IN $keep
SET l.predictedTypeCode = null, l.predictedTypeName = null, l.predictedTypeConfidence = null,
    l.predictedTypeModelId = null, l.predictedTypeMethod = null, l.predictedTypeK = null
RETURN count(l) AS cleared
