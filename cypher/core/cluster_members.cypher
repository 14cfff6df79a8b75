// name: cluster_members
// params: clusterId: STRING, limit: INTEGER
// returns: lesionId, typeName, predictedTypeName, patientId, longDiameterMm
// idempotent: read-only
// The lesions of one cluster.
MATCH (p:Patient)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(l:Lesion)-[:IN_CLUSTER]->(:Cluster {clusterId: $clusterId})
RETURN l.lesionId AS lesionId, l.typeName AS typeName, l.predictedTypeName AS predictedTypeName,
       p.patientId AS patientId, l.longDiameterMm AS longDiameterMm
ORDER BY lesionId
LIMIT $limit
