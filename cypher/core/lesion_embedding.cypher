// name: lesion_embedding
// params: lesionId: STRING
// returns: lesionId, patientId, embedded, modelId, embeddingProblem, edges, embedding
// idempotent: read-only
// One lesion's embedding state: its embedding, model, patient and number of SIMILAR_TO edges.
MATCH (p:Patient)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(l:Lesion {lesionId: $lesionId})
OPTIONAL MATCH (l)-[r:SIMILAR_TO]->()
RETURN l.lesionId AS lesionId, p.patientId AS patientId, l.embedded AS embedded, l.modelId AS modelId,
       l.embeddingProblem AS embeddingProblem, count(r) AS edges, l.embedding AS embedding
