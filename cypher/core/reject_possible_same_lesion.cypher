// name: reject_possible_same_lesion
// params: reviewId: STRING, reviewedBy: STRING, reviewedAt: STRING, reason: STRING
// returns: reviewId, status
// idempotent: yes
// Rejects a pending POSSIBLE_SAME_LESION edge (records who, when and why); rejecting again
// changes nothing. Every later match keeps the pair out of one track (a cannot-link). An accepted
// edge is not matched.
MATCH (:Lesion)-[r:POSSIBLE_SAME_LESION]->(:Lesion)
WHERE r.reviewId = $reviewId AND r.status IN ['pending', 'rejected']
SET r.reviewedBy = CASE WHEN r.status = 'rejected' THEN r.reviewedBy ELSE $reviewedBy END,
    r.reviewedAt = CASE WHEN r.status = 'rejected' THEN r.reviewedAt ELSE $reviewedAt END,
    r.rejectReason = CASE WHEN r.status = 'rejected' THEN r.rejectReason ELSE $reason END,
    r.status = 'rejected'
RETURN r.reviewId AS reviewId, r.status AS status
