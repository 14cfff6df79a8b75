// name: lesion_track
// params: lesionId: STRING
// returns: trackingUid, status, studyIndex, studyDay, studyId, lesionId, longDiameterMm, response, changeFromBaselinePct, sameLesionCost, sameLesionConfidence, sameLesionProbability
// idempotent: read-only
// The track of one lesion: every member in time order with its RECIST response, and the cost,
// confidence and probability of the SAME_LESION edge from the given lesion (null for the lesion itself).
MATCH (:Lesion {lesionId: $lesionId})-[:IN_TRACK]->(t:Track)
MATCH (s:Study)-[:HAS_LESION]->(l:Lesion)-[it:IN_TRACK]->(t)
OPTIONAL MATCH (:Lesion {lesionId: $lesionId})-[r:SAME_LESION]-(l)
RETURN t.trackingUid AS trackingUid, t.status AS status, s.studyIndex AS studyIndex, s.studyDay AS studyDay,
       s.studyId AS studyId, l.lesionId AS lesionId, l.longDiameterMm AS longDiameterMm, it.response AS response,
       it.changeFromBaselinePct AS changeFromBaselinePct, r.cost AS sameLesionCost,
       r.confidence AS sameLesionConfidence, r.probability AS sameLesionProbability
ORDER BY studyIndex, lesionId
