// name: delete_clusters
// params: none
// returns: deleted
// idempotent: yes
// Removes the previous clustering: every (:Cluster) and its IN_CLUSTER edges.
MATCH (c:Cluster)
DETACH DELETE c
RETURN count(*) AS deleted
