// name: schema_study_unique
// params: none
// returns: nothing
// idempotent: yes
// Uniqueness constraint (and its index) on :Study(studyId).
CREATE CONSTRAINT study_studyId IF NOT EXISTS FOR (n:Study) REQUIRE n.studyId IS UNIQUE
