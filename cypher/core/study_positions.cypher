// name: study_positions
// params: studyIds: LIST<STRING>
// returns: studyId, studyIndex, studyDay
// idempotent: read-only
// Where each given study lies in its patient's course: its index and its day since the first study.
UNWIND $studyIds AS sid
MATCH (s:Study {studyId: sid})
RETURN s.studyId AS studyId, s.studyIndex AS studyIndex, s.studyDay AS studyDay
