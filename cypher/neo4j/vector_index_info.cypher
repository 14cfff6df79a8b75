// name: vector_index_info
// params: none
// returns: dimension (null without a vector index), state (ONLINE, POPULATING or FAILED)
// idempotent: read-only
// The vector index lesion_embedding: its dimension and state (no row when it does not exist).
SHOW INDEXES YIELD name, state, options
WHERE name = 'lesion_embedding'
RETURN options.indexConfig.`vector.dimensions` AS dimension, state
