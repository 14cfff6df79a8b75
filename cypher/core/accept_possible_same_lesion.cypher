// name: accept_possible_same_lesion
// params: reviewId: STRING, reviewedBy: STRING, reviewedAt: STRING
// returns: reviewId, status, src, dst
// idempotent: yes
// Accepts a pending (or already accepted) POSSIBLE_SAME_LESION edge: records who/when (first
// acceptance wins). The next match of the patient makes the pair a must-link (the candidate joins
// the member's track). A rejected edge is not matched.
MATCH (a:Lesion)-[r:POSSIBLE_SAME_LESION]->(b:Lesion)
WHERE r.reviewId = $reviewId AND r.status IN ['pending', 'accepted']
SET r.reviewedBy = CASE WHEN r.status = 'accepted' THEN r.reviewedBy ELSE $reviewedBy END,
    r.reviewedAt = CASE WHEN r.status = 'accepted' THEN r.reviewedAt ELSE $reviewedAt END,
    r.status = 'accepted'
RETURN r.reviewId AS reviewId, r.status AS status, a.lesionId AS src, b.lesionId AS dst
