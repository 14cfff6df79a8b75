// name: match_patient_lesions
// params: patientIds: LIST<STRING>
// returns: row (STRING "patientId|studyId|studyIndex|studyDate|lesionId|source|seriesIndex|series (seriesId, else seriesUid)|locationX|locationY|locationZ|positionXMm|positionYMm|positionZMm|longDiameterMm|shortDiameterMm|typeCode|sourceTrackingUid|keySliceIndex|sliceIntervalMm|spacingXMm|spacingYMm|boxCenterXPx|boxCenterYPx", lesion fields empty for a study without lesions, a missing value empty), embedding
// idempotent: read-only
// What lesion matching reads of a batch of patients, in one query: every study (a study without
// lesions still counts as a visit) and each lesion's matching features. The fields travel as one
// '|'-separated string per row: on the embedded FalkorDB a string parses about five times faster
// than the same values as columns or a map (the ids and UIDs never contain '|'). sourceTrackingUid
// (the Tracking Unique Identifier a DICOM SR gave the lesion, `lesiondb ingest sr`) joins lesions.
// The key slice, spacings and box centre place a lesion within its own scan (bookmarks of one
// lesion: two lesions of one scan whose centres lie inside each other).
UNWIND $patientIds AS pid
MATCH (:Patient {patientId: pid})-[:HAS_STUDY]->(s:Study)
OPTIONAL MATCH (s)-[:HAS_LESION]->(l:Lesion)
RETURN pid + '|' + s.studyId + '|' + coalesce(toString(s.studyIndex), '') + '|' + coalesce(s.studyDate, '') + '|' +
       CASE WHEN l IS NULL THEN '' ELSE
         l.lesionId + '|' + coalesce(l.source, '') + '|' + coalesce(toString(l.seriesIndex), '') + '|' +
         coalesce(l.seriesId, l.seriesUid, '') + '|' + coalesce(toString(l.locationX), '') + '|' +
         coalesce(toString(l.locationY), '') + '|' + coalesce(toString(l.locationZ), '') + '|' +
         coalesce(toString(l.positionXMm), '') + '|' + coalesce(toString(l.positionYMm), '') + '|' +
         coalesce(toString(l.positionZMm), '') + '|' + coalesce(toString(l.longDiameterMm), '') + '|' +
         coalesce(toString(l.shortDiameterMm), '') + '|' + coalesce(toString(l.typeCode), '') + '|' +
         coalesce(l.sourceTrackingUid, '') + '|' + coalesce(toString(l.keySliceIndex), '') + '|' +
         coalesce(toString(l.sliceIntervalMm), '') + '|' + coalesce(toString(l.spacingXMm), '') + '|' +
         coalesce(toString(l.spacingYMm), '') + '|' + coalesce(toString((l.bboxPx[0] + l.bboxPx[2]) / 2.0), '') + '|' +
         coalesce(toString((l.bboxPx[1] + l.bboxPx[3]) / 2.0), '') END AS row,
       l.embedding AS embedding
