// name: write_same_lesion
// params: rows: LIST<MAP>
// returns: written
// idempotent: yes
// SAME_LESION edges from the earlier to the later lesion, merged; each row is
// {src, dst, cost, confidence, probability, method} (lesionIds and the edge's properties, which are replaced).
UNWIND $rows AS row
MATCH (a:Lesion {lesionId: row.src})
MATCH (b:Lesion {lesionId: row.dst})
MERGE (a)-[r:SAME_LESION]->(b)
SET r.cost = row.cost, r.confidence = row.confidence, r.probability = row.probability, r.method = row.method
RETURN count(r) AS written
