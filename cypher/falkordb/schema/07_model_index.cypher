// name: schema_model_index
// params: none
// returns: nothing
// idempotent: yes (an existing index is reported by the server and ignored by lesiondb)
// Range index on :Model(modelId), which every MERGE on Model uses.
CREATE INDEX FOR (n:Model) ON (n.modelId)
