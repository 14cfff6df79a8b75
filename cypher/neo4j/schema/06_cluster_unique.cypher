// name: schema_cluster_unique
// params: none
// returns: nothing
// idempotent: yes
// Uniqueness constraint (and its index) on :Cluster(clusterId).
CREATE CONSTRAINT cluster_clusterId IF NOT EXISTS FOR (n:Cluster) REQUIRE n.clusterId IS UNIQUE
