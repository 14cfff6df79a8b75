// name: gds_available
// params: none
// returns: procedures
// idempotent: read-only
// How many of the Graph Data Science procedures lesiondb's clustering calls this server has
// (3 when the GDS plug-in is installed, 0 without it). Needs no plug-in itself.
SHOW PROCEDURES YIELD name
WHERE name IN ['gds.graph.drop', 'gds.louvain.stream', 'gds.version']
RETURN count(name) AS procedures
