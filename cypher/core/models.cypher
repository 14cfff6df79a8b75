// name: models
// params: none
// returns: modelId, name, dim, active, embeddedLesions, k, embeddingsVersion, createdAt, updatedAt, config
// idempotent: read-only
// Every (:Model) that embedded lesions, the active one first.
MATCH (m:Model)
RETURN m.modelId AS modelId, m.name AS name, m.dim AS dim, coalesce(m.active, false) AS active,
       m.embeddedLesions AS embeddedLesions, m.k AS k, m.embeddingsVersion AS embeddingsVersion,
       m.createdAt AS createdAt, m.updatedAt AS updatedAt, m.config AS config
ORDER BY active DESC, createdAt DESC
