// name: drop_vector_index
// params: none
// returns: nothing
// idempotent: yes
// Drops the vector index lesion_embedding, before a bulk (re-)embedding or a model of another
// dimension. Embeddings stay on the lesions.
DROP INDEX lesion_embedding IF EXISTS
