// name: match_patients
// params: patientId: STRING
// returns: patientId
// idempotent: read-only
// Patients with at least one annotated lesion, in patientId order; a null patientId means all.
MATCH (p:Patient)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(:Lesion)
WHERE $patientId IS NULL OR p.patientId = $patientId
RETURN DISTINCT p.patientId AS patientId
ORDER BY patientId
