// name: write_tracks
// params: rows: LIST<MAP>
// returns: tracks, links
// idempotent: yes
// Tracks merged on trackingUid, their properties replaced, and IN_TRACK links from their lesions
// with the per-visit properties replaced. Each row is
// {track: {trackingUid, patientId, status, …}, members: [{lesionId, link: {visit, response, …}}]}.
UNWIND $rows AS row
MERGE (t:Track {trackingUid: row.track.trackingUid})
SET t = row.track
WITH t, row
UNWIND row.members AS m
MATCH (l:Lesion {lesionId: m.lesionId})
MERGE (l)-[it:IN_TRACK]->(t)
SET it = m.link
RETURN count(DISTINCT t) AS tracks, count(it) AS links
