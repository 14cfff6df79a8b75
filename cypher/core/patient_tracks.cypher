// name: patient_tracks
// params: patientId: STRING
// returns: trackingUid, status, nVisits, baselineMm, nadirMm, lastMm, changeFromBaselinePct, changeFromNadirPct, studyId, studyIndex, studyDay, lesionId, seriesIndex, typeName, longDiameterMm, response, visitChangeFromBaselinePct
// idempotent: read-only
// One row per (track, member lesion) of a patient, in track then time order: what
// Client.tracks(patient) turns into a DataFrame.
MATCH (:Patient {patientId: $patientId})-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(l:Lesion)-[it:IN_TRACK]->(t:Track)
RETURN t.trackingUid AS trackingUid, t.status AS status, t.nVisits AS nVisits, t.baselineMm AS baselineMm,
       t.nadirMm AS nadirMm, t.lastMm AS lastMm, t.changeFromBaselinePct AS changeFromBaselinePct,
       t.changeFromNadirPct AS changeFromNadirPct, s.studyId AS studyId, s.studyIndex AS studyIndex,
       s.studyDay AS studyDay, l.lesionId AS lesionId, l.seriesIndex AS seriesIndex, l.typeName AS typeName,
       l.longDiameterMm AS longDiameterMm, it.response AS response,
       it.changeFromBaselinePct AS visitChangeFromBaselinePct
ORDER BY trackingUid, studyIndex, lesionId
