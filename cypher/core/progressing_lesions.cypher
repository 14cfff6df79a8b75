// name: progressing_lesions
// params: patientId: STRING, limit: INTEGER
// returns: patientId, trackingUid, lesionId, studyId, studyIndex, typeName, nadirMm, lastMm, changeFromNadirPct, nVisits
// idempotent: read-only
// Tracks whose latest measurement is progressing under RECIST 1.1 (≥ 20 % and ≥ 5 mm over the
// nadir), with their latest lesion, largest growth first; a null patientId means all patients.
MATCH (t:Track)
WHERE t.status = 'progressing' AND ($patientId IS NULL OR t.patientId = $patientId)
MATCH (s:Study)-[:HAS_LESION]->(l:Lesion)-[:IN_TRACK]->(t)
WITH t, s, l
ORDER BY s.studyIndex DESC, l.lesionId
WITH t, collect({lesionId: l.lesionId, studyId: s.studyId, studyIndex: s.studyIndex, typeName: l.typeName})[0] AS last
RETURN t.patientId AS patientId, t.trackingUid AS trackingUid, last.lesionId AS lesionId, last.studyId AS studyId,
       last.studyIndex AS studyIndex, last.typeName AS typeName, t.nadirMm AS nadirMm, t.lastMm AS lastMm,
       t.changeFromNadirPct AS changeFromNadirPct, t.nVisits AS nVisits
ORDER BY changeFromNadirPct DESC, trackingUid
LIMIT $limit
