// name: mining_patients
// params: patientId: STRING
// returns: patientId
// idempotent: read-only
// Patients with at least one tracked lesion (a lesion IN_TRACK of a Track); a null patientId means all.
MATCH (p:Patient)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(:Lesion)-[:IN_TRACK]->(:Track)
WHERE $patientId IS NULL OR p.patientId = $patientId
RETURN DISTINCT p.patientId AS patientId
ORDER BY patientId
