// name: schema_cluster_index
// params: none
// returns: nothing
// idempotent: yes (an existing index is reported by the server and ignored by lesiondb)
// Range index on :Cluster(clusterId), which every MERGE on Cluster uses.
CREATE INDEX FOR (n:Cluster) ON (n.clusterId)
