// name: upsert_proposals
// params: rows: LIST<MAP>
// returns: created, refreshed, kept
// idempotent: yes
// Writes mining proposals, merged on proposalId (a hash of track + study), linked IN_STUDY to
// their study and PROPOSED_FOR to their track. Each row is {proposalId, studyId, trackingUid,
// createdAt, props: MAP}. A new proposal is 'pending'; a pending one is refreshed with the new
// props; an accepted or rejected one is left exactly as it is (re-mining never resurrects it).
UNWIND $rows AS row
MATCH (s:Study {studyId: row.studyId})
MATCH (t:Track {trackingUid: row.trackingUid})
MERGE (pr:Proposal {proposalId: row.proposalId})
ON CREATE SET pr.status = 'pending', pr.createdAt = row.createdAt, pr.isNew = true
WITH pr, s, t, row, coalesce(pr.isNew, false) AS created
FOREACH (_ IN CASE WHEN pr.status = 'pending' THEN [1] ELSE [] END | SET pr += row.props)
REMOVE pr.isNew
MERGE (pr)-[:IN_STUDY]->(s)
MERGE (pr)-[:PROPOSED_FOR]->(t)
RETURN sum(CASE WHEN created THEN 1 ELSE 0 END) AS created,
       sum(CASE WHEN NOT created AND pr.status = 'pending' THEN 1 ELSE 0 END) AS refreshed,
       sum(CASE WHEN pr.status <> 'pending' THEN 1 ELSE 0 END) AS kept
