// name: schema_track_unique
// params: none
// returns: nothing
// idempotent: yes
// Uniqueness constraint (and its index) on :Track(trackingUid).
CREATE CONSTRAINT track_trackingUid IF NOT EXISTS FOR (n:Track) REQUIRE n.trackingUid IS UNIQUE
