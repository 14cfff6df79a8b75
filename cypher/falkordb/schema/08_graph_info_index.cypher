// name: schema_graph_info_index
// params: none
// returns: nothing
// idempotent: yes (an existing index is reported by the server and ignored by lesiondb)
// Range index on :GraphInfo(infoId), which the MERGE of claim_pseudonym_key uses (FalkorDB runs
// writes one at a time, so that MERGE cannot create two nodes).
CREATE INDEX FOR (n:GraphInfo) ON (n.infoId)
