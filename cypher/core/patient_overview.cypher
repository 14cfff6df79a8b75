// name: patient_overview
// params: skip: INTEGER, limit: INTEGER
// returns: patientId, sex, studies, lesions, tracks, pendingProposals, pendingLinks
// idempotent: read-only
// Every patient (a page of them, in patientId order) with the numbers the web index shows:
// studies, lesions, tracks, pending mining proposals and pending POSSIBLE_SAME_LESION links.
MATCH (p:Patient)
WITH p ORDER BY p.patientId SKIP $skip LIMIT $limit
OPTIONAL MATCH (p)-[:HAS_STUDY]->(s:Study)
WITH p, count(DISTINCT s) AS studies
OPTIONAL MATCH (p)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(l:Lesion)
WITH p, studies, count(DISTINCT l) AS lesions
OPTIONAL MATCH (p)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(:Lesion)-[:IN_TRACK]->(t:Track)
WITH p, studies, lesions, count(DISTINCT t) AS tracks
OPTIONAL MATCH (p)-[:HAS_STUDY]->(:Study)<-[:IN_STUDY]-(pr:Proposal)
WHERE pr.status = 'pending'
WITH p, studies, lesions, tracks, count(DISTINCT pr) AS pendingProposals
OPTIONAL MATCH (p)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(:Lesion)-[r:POSSIBLE_SAME_LESION]->(:Lesion)
WHERE r.status = 'pending'
RETURN p.patientId AS patientId, p.sex AS sex, studies, lesions, tracks, pendingProposals,
       count(DISTINCT r) AS pendingLinks
ORDER BY patientId
