// name: delete_possible_same_lesion
// params: rows: LIST<MAP>
// returns: deleted
// idempotent: yes (deleting a missing edge does nothing)
// Removes a lesion's stale POSSIBLE_SAME_LESION edges: each row is {lesionId, keep: [lesionIds]};
// every pending edge leaving the lesion to a lesion not in keep is deleted. Reviewed edges
// (accepted, rejected) stay: they are the reviewers' decisions, which every re-match keeps.
UNWIND $rows AS row
MATCH (:Lesion {lesionId: row.lesionId})-[r:POSSIBLE_SAME_LESION]->(m:Lesion)
WHERE r.status = 'pending' AND NOT m.lesionId IN row.keep
DELETE r
RETURN count(*) AS deleted
