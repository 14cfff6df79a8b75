// name: delete_stale_tracks
// params: rows: LIST<MAP>
// returns: deleted
// idempotent: yes
// For each row {trackingUid}: deletes the track if no lesion is in it any more and no mining
// proposal points at it (those are retired by retire_stale_tracks instead, keeping their history).
UNWIND $rows AS row
MATCH (t:Track {trackingUid: row.trackingUid})
WHERE NOT (t)<-[:IN_TRACK]-(:Lesion) AND NOT (t)<-[:PROPOSED_FOR]-(:Proposal)
DETACH DELETE t
RETURN count(*) AS deleted
