// name: upsert_studies
// params: rows: LIST<MAP>
// returns: total
// idempotent: yes
// Writes patients and studies with their HAS_STUDY links, merged on their stable ids, for studies
// that may have no annotated lesion (DICOM cohort ingest writes every study it finds). Each row is
// {patient: MAP, study: MAP}.
UNWIND $rows AS row
MERGE (p:Patient {patientId: row.patient.patientId})
SET p += row.patient
MERGE (s:Study {studyId: row.study.studyId})
SET s += row.study
MERGE (p)-[:HAS_STUDY]->(s)
RETURN count(*) AS total
