// name: create_vector_index
// params: dimension: INTEGER
// returns: nothing
// idempotent: yes
// The vector index lesion_embedding on :Lesion(embedding), Euclidean (Neo4j 5.13+). Populated in
// the background: lesiondb waits for vector_index_info to say ONLINE.
CREATE VECTOR INDEX lesion_embedding IF NOT EXISTS
FOR (l:Lesion) ON l.embedding
OPTIONS {indexConfig: {`vector.dimensions`: $dimension, `vector.similarity_function`: 'euclidean'}}
