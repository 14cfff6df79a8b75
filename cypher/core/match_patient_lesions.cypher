// name: match_patient_lesions
// params: patientIds: LIST<STRING>
// returns: patientId, studyId, studyIndex, studyDate, f (LIST: lesionId, source, seriesIndex, seriesUid, locationX, locationY, locationZ, positionXMm, positionYMm, positionZMm, longDiameterMm, shortDiameterMm, typeCode; null for a study without lesions), embedding
// idempotent: read-only
// What lesion matching reads of a batch of patients, in one query: every study (a study without
// lesions still counts as a visit) and each lesion's matching features. The features come as one
// list per lesion, in the order above: a list parses several times faster than a map.
UNWIND $patientIds AS pid
MATCH (:Patient {patientId: pid})-[:HAS_STUDY]->(s:Study)
OPTIONAL MATCH (s)-[:HAS_LESION]->(l:Lesion)
RETURN pid AS patientId, s.studyId AS studyId, s.studyIndex AS studyIndex, s.studyDate AS studyDate,
       CASE WHEN l IS NULL THEN NULL ELSE [l.lesionId, l.source, l.seriesIndex, l.seriesUid,
         l.locationX, l.locationY, l.locationZ, l.positionXMm, l.positionYMm, l.positionZMm,
         l.longDiameterMm, l.shortDiameterMm, l.typeCode] END AS f,
       l.embedding AS embedding
ORDER BY patientId, studyIndex
