// name: set_active_model
// params: modelId: STRING, embedded: INTEGER, k: INTEGER, updatedAt: STRING
// returns: modelId, active
// idempotent: yes
// Marks $modelId as the model whose embeddings and SIMILAR_TO edges the graph serves (every
// other :Model stays, inactive, as history) and records how many lesions it embedded and its k.
// One SET clause, no filter after it (FalkorDB drops SETs on rows a later WHERE filters out).
MATCH (m:Model)
WITH m, m.modelId = $modelId AS this
SET m.active = this,
    m.embeddedLesions = CASE WHEN this THEN $embedded ELSE m.embeddedLesions END,
    m.k = CASE WHEN this THEN $k ELSE m.k END,
    m.updatedAt = CASE WHEN this THEN $updatedAt ELSE m.updatedAt END
RETURN m.modelId AS modelId, m.active AS active
