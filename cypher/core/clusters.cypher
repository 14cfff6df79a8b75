// name: clusters
// params: none
// returns: clusterId, size, dominantType, dominantTypeShare, labelled, modelId, method, resolution, seed, createdAt
// idempotent: read-only
// The current clustering of the SIMILAR_TO graph, largest cluster first.
MATCH (c:Cluster)
RETURN c.clusterId AS clusterId, c.size AS size, c.dominantType AS dominantType,
       c.dominantTypeShare AS dominantTypeShare, c.labelled AS labelled, c.modelId AS modelId,
       c.method AS method, c.resolution AS resolution, c.seed AS seed, c.createdAt AS createdAt
ORDER BY size DESC, clusterId
