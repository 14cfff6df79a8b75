// name: embeddings
// params: modelId: STRING
// returns: lesionId, patientId, typeCode, embedding
// idempotent: read-only
// Every embedding of $modelId with the lesion's patient and type label (-1 unlabelled), by lesionId.
MATCH (p:Patient)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(l:Lesion)
WHERE l.embedded AND l.modelId = $modelId
RETURN l.lesionId AS lesionId, p.patientId AS patientId, coalesce(l.typeCode, -1) AS typeCode,
       l.embedding AS embedding
ORDER BY lesionId
