// name: upsert_model
// params: modelId: STRING, modelName: STRING, dim: INTEGER, config: STRING, createdAt: STRING, version: STRING
// returns: modelId
// idempotent: yes
// The (:Model) that produced embeddings: its id (hash of the weights), encoder name, embedding
// dimension and config (JSON). createdAt is kept from the first write; embeddingsVersion changes
// with every write of this model's embeddings or SIMILAR_TO edges (it validates local caches).
MERGE (m:Model {modelId: $modelId})
SET m.name = $modelName, m.dim = $dim, m.config = $config, m.createdAt = coalesce(m.createdAt, $createdAt),
    m.embeddingsVersion = $version
RETURN m.modelId AS modelId
