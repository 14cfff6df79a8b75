// name: schema_track_index
// params: none
// returns: nothing
// idempotent: yes (an existing index is reported by the server and ignored by lesiondb)
// Range index on :Track(trackingUid), which every MERGE on Track uses.
CREATE INDEX FOR (n:Track) ON (n.trackingUid)
