// name: reject_proposal
// params: proposalId: STRING, reviewedBy: STRING, reviewedAt: STRING, reason: STRING
// returns: proposalId, status
// idempotent: yes
// Rejects a pending proposal (records who, when and why); rejecting again changes nothing. An
// accepted proposal is not matched (its lesion stays). Annotations are never touched.
MATCH (pr:Proposal {proposalId: $proposalId})
WHERE pr.status IN ['pending', 'rejected']
SET pr.reviewedBy = CASE WHEN pr.status = 'rejected' THEN pr.reviewedBy ELSE $reviewedBy END,
    pr.reviewedAt = CASE WHEN pr.status = 'rejected' THEN pr.reviewedAt ELSE $reviewedAt END,
    pr.rejectReason = CASE WHEN pr.status = 'rejected' THEN pr.rejectReason ELSE $reason END,
    pr.status = 'rejected'
RETURN pr.proposalId AS proposalId, pr.status AS status
