// name: similarity_edges
// params: modelId: STRING
// returns: source, target, distance
// idempotent: read-only
// The SIMILAR_TO graph of $modelId as an edge list (what clustering reads).
MATCH (a:Lesion)-[r:SIMILAR_TO]->(b:Lesion)
WHERE r.modelId = $modelId
RETURN a.lesionId AS source, b.lesionId AS target, r.distance AS distance
