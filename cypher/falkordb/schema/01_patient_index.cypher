// name: schema_patient_index
// params: none
// returns: nothing
// idempotent: yes (an existing index is reported by the server and ignored by lesiondb)
// Range index on :Patient(patientId), which every MERGE on Patient uses.
CREATE INDEX FOR (n:Patient) ON (n.patientId)
