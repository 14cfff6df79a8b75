// name: gds_drop_graph
// params: graphName: STRING
// returns: graphName
// idempotent: yes (dropping a graph that is not there is not an error)
// requires: gds
// Frees the in-memory GDS graph $graphName.
CALL gds.graph.drop($graphName, false) YIELD graphName
RETURN graphName
