// name: tracking_uid_lesions
// params: patientIds: LIST<STRING>
// returns: patientId, studyIndex, lesionId, sourceTrackingUid
// idempotent: read-only
// The lesions of a batch of patients that a DICOM SR gave a Tracking Unique Identifier
// (`lesiondb ingest sr`): lesions of different studies with one UID get a SAME_LESION edge.
UNWIND $patientIds AS pid
MATCH (:Patient {patientId: pid})-[:HAS_STUDY]->(s:Study)-[:HAS_LESION]->(l:Lesion)
WHERE l.sourceTrackingUid IS NOT NULL
RETURN pid AS patientId, s.studyIndex AS studyIndex, l.lesionId AS lesionId, l.sourceTrackingUid AS sourceTrackingUid
ORDER BY patientId, studyIndex, lesionId
