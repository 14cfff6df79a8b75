// name: type_vote_edges
// params: none
// returns: lesionId, labelled, neighbour, typeCode, distance, rank
// idempotent: read-only
// Each embedded lesion's SIMILAR_TO neighbours that carry a type label (the votes of the
// edge-based type prediction), nearest first.
MATCH (a:Lesion)-[r:SIMILAR_TO]->(b:Lesion)
WHERE a.embedded AND coalesce(b.labelled, false)
RETURN a.lesionId AS lesionId, coalesce(a.labelled, false) AS labelled, b.lesionId AS neighbour,
       b.typeCode AS typeCode, r.distance AS distance, r.rank AS rank
ORDER BY lesionId, rank
