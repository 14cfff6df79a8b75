// name: write_possible_same_lesion
// params: rows: LIST<MAP>
// returns: written
// idempotent: yes
// POSSIBLE_SAME_LESION edges from a track member to a lesion of a scan the track has no member in
// (a plausible candidate the track did not take), merged; each row is {src, dst, reviewId,
// probability, cost, trackingUid}. A new edge is 'pending' review; a reviewed edge (accepted or
// rejected) is left exactly as the reviewer left it.
UNWIND $rows AS row
MATCH (a:Lesion {lesionId: row.src})
MATCH (b:Lesion {lesionId: row.dst})
MERGE (a)-[r:POSSIBLE_SAME_LESION]->(b)
ON CREATE SET r.status = 'pending'
WITH r, row
WHERE r.status = 'pending'
SET r.reviewId = row.reviewId, r.probability = row.probability, r.cost = row.cost, r.trackingUid = row.trackingUid
RETURN count(r) AS written
