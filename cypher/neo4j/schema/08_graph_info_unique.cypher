// name: schema_graph_info_unique
// params: none
// returns: nothing
// idempotent: yes
// Uniqueness constraint on :GraphInfo(infoId): concurrent first ingests MERGE one node, not two.
CREATE CONSTRAINT graph_info_infoId IF NOT EXISTS FOR (n:GraphInfo) REQUIRE n.infoId IS UNIQUE
