// name: gds_louvain
// params: graphName: STRING
// returns: lesionId, communityId
// idempotent: read-only
// requires: gds
// Louvain communities of the projected graph $graphName (weighted). One thread, so the same
// graph gives the same communities (GDS Louvain has no random seed; its parallel runs vary).
CALL gds.louvain.stream($graphName, {relationshipWeightProperty: 'weight', concurrency: 1})
YIELD nodeId, communityId
RETURN gds.util.asNode(nodeId).lesionId AS lesionId, communityId
