// name: delete_same_lesion
// params: rows: LIST<MAP>
// returns: deleted
// idempotent: yes (deleting a missing edge does nothing)
// Removes a lesion's stale SAME_LESION edges: each row is {lesionId, keep: [lesionIds]}; every
// SAME_LESION edge leaving the lesion to a lesion not in keep is deleted.
UNWIND $rows AS row
MATCH (:Lesion {lesionId: row.lesionId})-[r:SAME_LESION]->(m:Lesion)
WHERE NOT m.lesionId IN row.keep
DELETE r
RETURN count(*) AS deleted
