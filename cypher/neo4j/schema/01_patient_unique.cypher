// name: schema_patient_unique
// params: none
// returns: nothing
// idempotent: yes
// Uniqueness constraint (and its index) on :Patient(patientId).
CREATE CONSTRAINT patient_patientId IF NOT EXISTS FOR (n:Patient) REQUIRE n.patientId IS UNIQUE
