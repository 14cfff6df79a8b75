// name: match_patient_tracks
// params: patientIds: LIST<STRING>
// returns: patientId, lesionId, trackingUid, matchHash
// idempotent: read-only
// The current track of each lesion of a batch of patients, with the track's matchHash (a hash of
// its properties, member links and SAME_LESION edges): a re-match rewrites only tracks whose hash
// or membership changed.
UNWIND $patientIds AS pid
MATCH (:Patient {patientId: pid})-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(l:Lesion)-[:IN_TRACK]->(t:Track)
RETURN pid AS patientId, l.lesionId AS lesionId, t.trackingUid AS trackingUid, t.matchHash AS matchHash
