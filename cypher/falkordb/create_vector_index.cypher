// name: create_vector_index
// params: dimension: INTEGER
// returns: nothing
// idempotent: yes (an existing index is reported by the server and ignored by lesiondb)
// The HNSW vector index on :Lesion(embedding), Euclidean. FalkorDB rebuilds every index of the
// label in the background: lesiondb waits for vector_index_info to say ONLINE before the next
// query on :Lesion. M/efConstruction are below FalkorDB's defaults (16/200): the index is only
// used for new-image queries, bulk builds take a third of the time, and recall@10 measured 1.0
// on DeepLesion-scale synthetic embeddings (benchmarks/bench_scale.py).
CREATE VECTOR INDEX FOR (l:Lesion) ON (l.embedding)
OPTIONS {dimension: $dimension, similarityFunction: 'euclidean', M: 16, efConstruction: 64, efRuntime: 64}
