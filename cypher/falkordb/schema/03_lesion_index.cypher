// name: schema_lesion_index
// params: none
// returns: nothing
// idempotent: yes (an existing index is reported by the server and ignored by lesiondb)
// Range index on :Lesion(lesionId), which every MERGE on Lesion uses.
CREATE INDEX FOR (n:Lesion) ON (n.lesionId)
