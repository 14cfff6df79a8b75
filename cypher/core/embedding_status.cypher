// name: embedding_status
// params: none
// returns: modelId, embedded, lesions
// idempotent: read-only
// Lesion counts per model and embedded flag (embedded null: never went through the embedding stage).
MATCH (l:Lesion)
RETURN l.modelId AS modelId, l.embedded AS embedded, count(*) AS lesions
ORDER BY lesions DESC
