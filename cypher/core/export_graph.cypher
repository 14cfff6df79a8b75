// name: export_graph
// params: label: STRING, key: STRING, keys: MAP, after: STRING, limit: INTEGER
// returns: id, labels, props (every property, the embedding included), out (the node's outgoing relationships: [type, end label, end id, properties])
// idempotent: read-only
// One page of the nodes labelled $label, in the order of their key property $key (the ids after
// $after, at most $limit of them), each with every property and its outgoing relationships; the
// end node of each is named by its label's key property ($keys: label -> key property). Read
// label by label, page by page, this is the whole graph (`lesiondb export neo4j-import`, and the
// engine parity test).
MATCH (n)
WHERE $label IN labels(n) AND n[$key] > $after
WITH n
ORDER BY n[$key]
LIMIT $limit
OPTIONAL MATCH (n)-[r]->(m)
WITH n, collect(CASE WHEN r IS NULL THEN null
                     ELSE [type(r), labels(m)[0], m[$keys[labels(m)[0]]], properties(r)] END) AS out
RETURN n[$key] AS id, labels(n) AS labels, properties(n) AS props, out
ORDER BY id
