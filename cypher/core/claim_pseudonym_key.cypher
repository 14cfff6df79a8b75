// name: claim_pseudonym_key
// params: fingerprint: STRING, claimedAt: STRING
// returns: fingerprint, claimedAt
// idempotent: yes
// The graph's one (:GraphInfo {infoId: 'graph'}) node records the fingerprint of the pseudonym key
// its ids were made with: set by the first ingest, kept after (coalesce), returned so the caller
// can refuse an ingest whose key differs. The fingerprint identifies the key without revealing it.
MERGE (g:GraphInfo {infoId: 'graph'})
SET g.pseudonymKeyFingerprint = coalesce(g.pseudonymKeyFingerprint, $fingerprint),
    g.keyClaimedAt = coalesce(g.keyClaimedAt, $claimedAt)
RETURN g.pseudonymKeyFingerprint AS fingerprint, g.keyClaimedAt AS claimedAt
