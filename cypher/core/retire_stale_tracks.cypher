// name: retire_stale_tracks
// params: rows: LIST<MAP>
// returns: retired
// idempotent: yes
// For each row {trackingUid}: a track no lesion is in any more, but that a mining proposal points
// at, is kept with status 'retired' (so the proposal and its review history stay linked).
UNWIND $rows AS row
MATCH (t:Track {trackingUid: row.trackingUid})
WHERE NOT (t)<-[:IN_TRACK]-(:Lesion) AND (t)<-[:PROPOSED_FOR]-(:Proposal)
SET t.status = 'retired'
RETURN count(t) AS retired
