// name: assign_clusters
// params: rows: LIST<LIST<STRING>>
// returns: assigned
// idempotent: yes
// (:Lesion)-[:IN_CLUSTER]->(:Cluster): each row is [lesionId, clusterId]; a lesion's older
// IN_CLUSTER edges are replaced.
UNWIND $rows AS row
MATCH (l:Lesion {lesionId: row[0]})
OPTIONAL MATCH (l)-[old:IN_CLUSTER]->()
DELETE old
WITH DISTINCT l, row
MATCH (c:Cluster {clusterId: row[1]})
MERGE (l)-[r:IN_CLUSTER]->(c)
RETURN count(r) AS assigned
