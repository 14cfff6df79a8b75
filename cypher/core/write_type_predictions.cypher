// name: write_type_predictions
// params: rows: LIST<LIST<ANY>>, modelId: STRING, method: STRING, k: INTEGER
// returns: written
// idempotent: yes
// Predicted coarse types of unlabelled lesions: each row is [lesionId, typeCode, typeName,
// confidence]. Written beside the label (predictedType*), never over typeCode/typeName, and
// never on a labelled lesion.
UNWIND $rows AS row
MATCH (l:Lesion {lesionId: row[0]})
WHERE NOT coalesce(l.labelled, false)
SET l.predictedTypeCode = row[1], l.predictedTypeName = row[2], l.predictedTypeConfidence = row[3],
    l.predictedTypeModelId = $modelId, l.predictedTypeMethod = $method, l.predictedTypeK = $k
RETURN count(l) AS written
