// name: mark_not_embedded
// params: rows: LIST<LIST<STRING>>, modelId: STRING
// returns: marked
// idempotent: yes
// Lesions that could not be embedded with $modelId (no image, unreadable image): each row is
// [lesionId, reason]. They stay in the graph with embedded = false and the reason; an embedding
// from another model is removed (it lives in another space), with the SIMILAR_TO edges leaving
// the lesion. A lesion already embedded by $modelId is left as it is.
UNWIND $rows AS row
MATCH (l:Lesion {lesionId: row[0]})
WHERE l.modelId IS NULL OR l.modelId <> $modelId
OPTIONAL MATCH (l)-[r:SIMILAR_TO]->()
DELETE r
WITH DISTINCT l, row
SET l.embedded = false, l.embeddingProblem = row[1], l.embedding = null, l.modelId = null,
    l.embeddedHash = null
RETURN count(l) AS marked
