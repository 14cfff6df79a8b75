// name: count_relationships
// params: none
// returns: type, count
// idempotent: read-only
// Relationship counts per type.
MATCH ()-[r]->()
RETURN type(r) AS type, count(*) AS count
ORDER BY type
