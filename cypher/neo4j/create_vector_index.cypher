// name: create_vector_index
// params: dimension: INTEGER
// returns: nothing
// idempotent: yes
// The vector index lesion_embedding on :Lesion(embedding), Euclidean (Neo4j 5.23+). Populated in
// the background: lesiondb waits for vector_index_info to say ONLINE. Not quantized: Neo4j 5.26
// quantizes by default, which shifts the scores by several hundredths and reorders close
// neighbours.
CREATE VECTOR INDEX lesion_embedding IF NOT EXISTS
FOR (l:Lesion) ON l.embedding
OPTIONS {indexConfig: {`vector.dimensions`: $dimension, `vector.similarity_function`: 'euclidean',
                       `vector.quantization.enabled`: false}}
