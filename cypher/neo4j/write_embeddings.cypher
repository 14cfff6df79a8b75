// name: write_embeddings
// params: rows: LIST<LIST<ANY>>, modelId: STRING, scale: FLOAT
// returns: written, replaced (lesions that already held an embedding)
// idempotent: yes
// Stores embeddings on lesions: each row is [lesionId, embedding, contentHash], the embedding in
// fixed point (unit-vector components × $scale, as integers), stored as LIST<FLOAT>.
// embeddedHash records which version of the lesion's data was embedded.
UNWIND $rows AS row
MATCH (l:Lesion {lesionId: row[0]})
WITH l, row, l.embedding IS NOT NULL AS had
SET l.embedding = [x IN row[1] | x / $scale], l.modelId = $modelId, l.embedded = true,
    l.embeddedHash = row[2], l.embeddingProblem = null
RETURN count(l) AS written, sum(CASE WHEN had THEN 1 ELSE 0 END) AS replaced
