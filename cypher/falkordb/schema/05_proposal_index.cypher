// name: schema_proposal_index
// params: none
// returns: nothing
// idempotent: yes (an existing index is reported by the server and ignored by lesiondb)
// Range index on :Proposal(proposalId), which every MERGE on Proposal uses.
CREATE INDEX FOR (n:Proposal) ON (n.proposalId)
