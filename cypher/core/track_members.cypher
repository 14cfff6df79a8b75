// name: track_members
// params: trackingUids: LIST<STRING>
// returns: trackingUid, status, studyId, studyIndex, studyDay, lesionId, source, typeName, longDiameterMm, response
// idempotent: read-only
// The member lesions of each given track in time order (the review queue shows them beside a
// proposal or a POSSIBLE_SAME_LESION link of that track).
UNWIND $trackingUids AS uid
MATCH (s:Study)-[:HAS_LESION]->(l:Lesion)-[it:IN_TRACK]->(t:Track {trackingUid: uid})
RETURN t.trackingUid AS trackingUid, t.status AS status, s.studyId AS studyId, s.studyIndex AS studyIndex,
       s.studyDay AS studyDay, l.lesionId AS lesionId, l.source AS source, l.typeName AS typeName,
       l.longDiameterMm AS longDiameterMm, it.response AS response
ORDER BY trackingUid, studyIndex, lesionId
