// name: replace_similar
// params: rows: LIST<LIST<ANY>>, modelId: STRING
// returns: edges
// idempotent: yes
// Replaces the SIMILAR_TO edges leaving each lesion: each row is [lesionId, [neighbour lesionIds],
// [distances]], nearest first (rank = position, from 1). Every old SIMILAR_TO edge of the lesion,
// whatever its model, is deleted first, so re-running leaves the same edges.
UNWIND $rows AS row
MATCH (a:Lesion {lesionId: row[0]})
OPTIONAL MATCH (a)-[old:SIMILAR_TO]->()
DELETE old
WITH DISTINCT a, row
UNWIND range(0, size(row[1]) - 1) AS i
MATCH (b:Lesion {lesionId: row[1][i]})
CREATE (a)-[r:SIMILAR_TO {distance: row[2][i], rank: i + 1, modelId: $modelId}]->(b)
RETURN count(r) AS edges
