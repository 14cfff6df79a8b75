// name: drop_vector_index
// params: none
// returns: nothing
// idempotent: no (FalkorDB reports a missing index as an error; lesiondb checks vector_index_info first)
// Drops the vector index on :Lesion(embedding), before a bulk (re-)embedding or a model of
// another dimension. Embeddings stay on the lesions.
DROP VECTOR INDEX FOR (l:Lesion) ON (l.embedding)
