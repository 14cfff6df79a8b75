// name: similarity_lists
// params: modelId: STRING
// returns: lesionId, neighbours, distances, ranks
// idempotent: read-only
// The stored SIMILAR_TO lists of $modelId, one row per lesion (lists in any order: sort by rank).
MATCH (a:Lesion)-[r:SIMILAR_TO]->(b:Lesion)
WHERE r.modelId = $modelId
RETURN a.lesionId AS lesionId, collect(b.lesionId) AS neighbours, collect(r.distance) AS distances,
       collect(r.rank) AS ranks
