// name: patient_timeline
// params: patientId: STRING
// returns: studyIndex, studyDay, studyId, lesionId, seriesIndex, typeName, longDiameterMm, trackingUid, trackStatus, response, changeFromBaselinePct, changeFromNadirPct
// idempotent: read-only
// A patient's lesions study by study, each with its track and its RECIST response at that visit
// (run `lesiondb match` first; unmatched lesions have null track columns).
MATCH (:Patient {patientId: $patientId})-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(l:Lesion)
OPTIONAL MATCH (l)-[it:IN_TRACK]->(t:Track)
RETURN s.studyIndex AS studyIndex, s.studyDay AS studyDay, s.studyId AS studyId, l.lesionId AS lesionId,
       l.seriesIndex AS seriesIndex, l.typeName AS typeName, l.longDiameterMm AS longDiameterMm,
       t.trackingUid AS trackingUid, t.status AS trackStatus, it.response AS response,
       it.changeFromBaselinePct AS changeFromBaselinePct, it.changeFromNadirPct AS changeFromNadirPct
ORDER BY studyIndex, trackingUid, lesionId
