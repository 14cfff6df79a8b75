// name: delete_in_track
// params: rows: LIST<MAP>
// returns: deleted
// idempotent: yes (deleting a missing link does nothing)
// Removes a lesion's stale track membership; each row is {lesionId, trackingUid}.
UNWIND $rows AS row
MATCH (:Lesion {lesionId: row.lesionId})-[it:IN_TRACK]->(:Track {trackingUid: row.trackingUid})
DELETE it
RETURN count(*) AS deleted
