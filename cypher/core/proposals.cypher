// name: proposals
// params: status: STRING, patientId: STRING, proposalId: STRING, limit: INTEGER
// returns: proposal (properties), studyId, studyIndex, studyUid, patientId, trackingUid, lesionId (of the accepted lesion, else null)
// idempotent: read-only
// Mining proposals with their study, patient and track; a null parameter means "any".
MATCH (pr:Proposal)-[:IN_STUDY]->(s:Study)<-[:HAS_STUDY]-(p:Patient)
WHERE ($status IS NULL OR pr.status = $status)
  AND ($patientId IS NULL OR p.patientId = $patientId)
  AND ($proposalId IS NULL OR pr.proposalId = $proposalId)
OPTIONAL MATCH (pr)-[:PROPOSED_FOR]->(t:Track)
RETURN properties(pr) AS proposal, s.studyId AS studyId, s.studyIndex AS studyIndex, s.studyUid AS studyUid,
       p.patientId AS patientId, t.trackingUid AS trackingUid, pr.lesionId AS lesionId
ORDER BY patientId, studyId, proposal.score DESC
LIMIT $limit
