// name: sr_export_lesions
// params: patientId: STRING
// returns: patientId, studyId, studyIndex, lesionId, source, seriesId, keySliceIndex, recistLongAxisPx, recistShortAxisPx, longDiameterMm, shortDiameterMm, typeCode, trackingUid, trackFirstStudyIndex, response
// idempotent: read-only
// What a DICOM SR measurement report says of each lesion of every patient (or of one, $patientId
// not null): key slice, RECIST axes, type, track (trackingUid, null before `lesiondb match`) and
// the RECIST response at that visit. `lesiondb export sr` maps seriesId back to the images.
MATCH (p:Patient)-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(l:Lesion)
WHERE $patientId IS NULL OR p.patientId = $patientId
OPTIONAL MATCH (l)-[it:IN_TRACK]->(t:Track)
RETURN p.patientId AS patientId, s.studyId AS studyId, s.studyIndex AS studyIndex, l.lesionId AS lesionId,
       l.source AS source, l.seriesId AS seriesId, l.keySliceIndex AS keySliceIndex,
       l.recistLongAxisPx AS recistLongAxisPx, l.recistShortAxisPx AS recistShortAxisPx,
       l.longDiameterMm AS longDiameterMm, l.shortDiameterMm AS shortDiameterMm, l.typeCode AS typeCode,
       t.trackingUid AS trackingUid, t.firstStudyIndex AS trackFirstStudyIndex, it.response AS response
ORDER BY patientId, studyIndex, lesionId
