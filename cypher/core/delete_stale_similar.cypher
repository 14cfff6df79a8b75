// name: delete_stale_similar
// params: modelId: STRING
// returns: deleted
// idempotent: yes
// Deletes SIMILAR_TO edges made by any model other than $modelId (after a new model re-embedded
// the graph) and edges touching a lesion that is no longer embedded by $modelId.
MATCH (a:Lesion)-[r:SIMILAR_TO]->(b:Lesion)
WHERE r.modelId <> $modelId OR a.modelId IS NULL OR a.modelId <> $modelId
   OR b.modelId IS NULL OR b.modelId <> $modelId
DELETE r
RETURN count(*) AS deleted
