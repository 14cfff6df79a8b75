// name: write_clusters
// params: rows: LIST<MAP>
// returns: written
// idempotent: yes
// (:Cluster) nodes: each row is {clusterId, size, dominantType, dominantTypeShare, labelled,
// modelId, method, resolution, seed, createdAt}, merged on clusterId.
UNWIND $rows AS row
MERGE (c:Cluster {clusterId: row.clusterId})
SET c += row
RETURN count(c) AS written
