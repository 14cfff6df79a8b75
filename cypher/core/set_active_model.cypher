// name: set_active_model
// params: modelId: STRING, embedded: INTEGER, k: INTEGER, updatedAt: STRING
// returns: modelId, active
// idempotent: yes
// Marks $modelId as the model whose embeddings and SIMILAR_TO edges the graph serves (every
// other :Model stays, inactive, as history) and records how many lesions it embedded and its k.
MATCH (m:Model)
SET m.active = (m.modelId = $modelId)
WITH m
WHERE m.modelId = $modelId
SET m.embeddedLesions = $embedded, m.k = $k, m.updatedAt = $updatedAt
RETURN m.modelId AS modelId, m.active AS active
