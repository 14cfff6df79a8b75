// name: delete_stale_tracks
// params: rows: LIST<MAP>
// returns: deleted
// idempotent: yes
// For each row {trackingUid}: a track left without lesions is deleted, unless a mining proposal
// points at it — then it stays, with status 'retired', so the proposal's history is kept.
UNWIND $rows AS row
MATCH (t:Track {trackingUid: row.trackingUid})
OPTIONAL MATCH (l:Lesion)-[:IN_TRACK]->(t)
WITH t, count(l) AS members
WHERE members = 0
OPTIONAL MATCH (pr:Proposal)-[:PROPOSED_FOR]->(t)
WITH t, count(pr) AS proposals
SET t.status = CASE WHEN proposals > 0 THEN 'retired' ELSE t.status END
WITH t, proposals
WHERE proposals = 0
DETACH DELETE t
RETURN count(*) AS deleted
