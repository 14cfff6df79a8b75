// name: vector_index_info
// params: none
// returns: dimension (null without a vector index), state (ONLINE or POPULATING)
// idempotent: read-only
// The :Lesion vector index. FalkorDB keeps one index per label, rebuilt as a whole when a field
// is added or dropped; its state is mapped onto Neo4j's words so callers see one meaning.
CALL db.indexes() YIELD label, types, options, status
WHERE label = 'Lesion'
RETURN CASE WHEN 'VECTOR' IN coalesce(types.embedding, []) THEN options.embedding.dimension END AS dimension,
       CASE status WHEN 'OPERATIONAL' THEN 'ONLINE' ELSE 'POPULATING' END AS state
