// name: schema_proposal_unique
// params: none
// returns: nothing
// idempotent: yes
// Uniqueness constraint (and its index) on :Proposal(proposalId).
CREATE CONSTRAINT proposal_proposalId IF NOT EXISTS FOR (n:Proposal) REQUIRE n.proposalId IS UNIQUE
