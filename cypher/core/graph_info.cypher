// name: graph_info
// params: none
// returns: fingerprint, claimedAt
// idempotent: read-only
// The fingerprint of the pseudonym key the graph's ids were made with (no row: none recorded yet).
MATCH (g:GraphInfo {infoId: 'graph'})
RETURN g.pseudonymKeyFingerprint AS fingerprint, g.keyClaimedAt AS claimedAt
