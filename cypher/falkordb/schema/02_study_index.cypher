// name: schema_study_index
// params: none
// returns: nothing
// idempotent: yes (an existing index is reported by the server and ignored by lesiondb)
// Range index on :Study(studyId), which every MERGE on Study uses.
CREATE INDEX FOR (n:Study) ON (n.studyId)
