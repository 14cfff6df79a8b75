// name: count_nodes
// params: none
// returns: label, count
// idempotent: read-only
// Node counts per (first) label; the graph's own bookkeeping node (:GraphInfo, the pseudonym key's
// fingerprint) is not data and is left out.
MATCH (n)
WHERE NOT n:GraphInfo
RETURN labels(n)[0] AS label, count(*) AS count
ORDER BY label
