// name: create_vector_index
// params: dimension: INTEGER
// returns: nothing
// idempotent: yes
// The vector index lesion_embedding on :Lesion(embedding), Euclidean (Neo4j 5.23+). Populated in
// the background: lesiondb waits for vector_index_info to say ONLINE. Not quantized: Neo4j 5.26
// quantizes by default, which shifts the scores by several hundredths and reorders close
// neighbours. The HNSW graph is built as FalkorDB's (M 16, efConstruction 64): a bulk build of
// DeepLesion's embeddings takes half the time of Neo4j's default (efConstruction 100), and the
// queries search at least 64 wide (similar_by_vector), so recall stays as high.
CREATE VECTOR INDEX lesion_embedding IF NOT EXISTS
FOR (l:Lesion) ON l.embedding
OPTIONS {indexConfig: {`vector.dimensions`: $dimension, `vector.similarity_function`: 'euclidean',
                       `vector.quantization.enabled`: false, `vector.hnsw.m`: 16,
                       `vector.hnsw.ef_construction`: 64}}
