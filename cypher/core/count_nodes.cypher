// name: count_nodes
// params: none
// returns: label, count
// idempotent: read-only
// Node counts per (first) label.
MATCH (n)
RETURN labels(n)[0] AS label, count(*) AS count
ORDER BY label
