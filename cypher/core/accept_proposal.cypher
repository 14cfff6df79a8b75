// name: accept_proposal
// params: proposalId: STRING, lesion: MAP, reviewedBy: STRING, reviewedAt: STRING
// returns: proposalId, lesionId, status
// idempotent: yes
// Accepts a pending (or already accepted) proposal: merges the annotated Lesion it becomes (its
// lesionId derives from the proposalId, so accepting twice creates one lesion; properties are set
// only on creation), links it HAS_LESION from the proposal's study and IN_TRACK to its track, and
// records who/when on the proposal (first acceptance wins). A rejected proposal is not matched.
// Lesions of annotations are never touched: the merged id is the proposal's own.
MATCH (pr:Proposal {proposalId: $proposalId})-[:IN_STUDY]->(s:Study)
WHERE pr.status IN ['pending', 'accepted']
MATCH (pr)-[:PROPOSED_FOR]->(t:Track)
MERGE (l:Lesion {lesionId: $lesion.lesionId})
ON CREATE SET l += $lesion
MERGE (s)-[:HAS_LESION]->(l)
MERGE (l)-[:IN_TRACK]->(t)
SET pr.reviewedBy = CASE WHEN pr.status = 'accepted' THEN pr.reviewedBy ELSE $reviewedBy END,
    pr.reviewedAt = CASE WHEN pr.status = 'accepted' THEN pr.reviewedAt ELSE $reviewedAt END,
    pr.lesionId = l.lesionId,
    pr.status = 'accepted'
RETURN pr.proposalId AS proposalId, l.lesionId AS lesionId, pr.status AS status
