// name: gds_project_similarity
// params: graphName: STRING, modelId: STRING
// returns: graphName, nodeCount, pairs
// idempotent: no (creates the in-memory GDS graph $graphName; drop it with gds_drop_graph)
// requires: gds
// Projects the SIMILAR_TO graph of $modelId into GDS as an undirected graph (Cypher projection),
// one relationship per lesion pair whatever the direction of its kNN edges, weighted by the
// cosine similarity of the two embeddings (1 - d^2/2, at least 0) as the networkx path does.
MATCH (a:Lesion)-[r:SIMILAR_TO]-(b:Lesion)
WHERE r.modelId = $modelId AND elementId(a) < elementId(b)
WITH a, b, max(1.0 - r.distance * r.distance / 2.0) AS similarity
WITH a, b, CASE WHEN similarity > 0.0 THEN similarity ELSE 0.0 END AS weight
WITH gds.graph.project($graphName, a, b, {relationshipProperties: {weight: weight}},
                       {undirectedRelationshipTypes: ['*']}) AS g, count(*) AS pairs
RETURN g.graphName AS graphName, g.nodeCount AS nodeCount, pairs
