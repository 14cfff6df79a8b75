// name: possible_same_lesion
// params: status: STRING, patientId: STRING, reviewId: STRING, limit: INTEGER
// returns: reviewId, status, probability, cost, patientId, trackingUid, memberLesionId, memberStudyIndex, candidateLesionId, candidateStudyId, candidateStudyIndex, candidateStudyDay, candidateSeriesIndex, candidateTypeName, candidateLongDiameterMm, candidateTrackingUid, reviewedBy, reviewedAt, rejectReason
// idempotent: read-only
// POSSIBLE_SAME_LESION edges to review (null parameters match everything): a track's plausible
// lesion in a study where the track has none, most probable first within each patient. The
// member is the track's lesion with the strongest pairwise evidence; candidateTrackingUid is the
// track the candidate is in now.
MATCH (p:Patient)-[:HAS_STUDY]->(ms:Study)-[:HAS_LESION]->(a:Lesion)-[r:POSSIBLE_SAME_LESION]->(b:Lesion)
WHERE ($status IS NULL OR r.status = $status) AND ($patientId IS NULL OR p.patientId = $patientId)
  AND ($reviewId IS NULL OR r.reviewId = $reviewId)
MATCH (cs:Study)-[:HAS_LESION]->(b)
OPTIONAL MATCH (b)-[:IN_TRACK]->(bt:Track)
RETURN r.reviewId AS reviewId, r.status AS status, r.probability AS probability, r.cost AS cost,
       p.patientId AS patientId, r.trackingUid AS trackingUid, a.lesionId AS memberLesionId,
       ms.studyIndex AS memberStudyIndex, b.lesionId AS candidateLesionId, cs.studyId AS candidateStudyId,
       cs.studyIndex AS candidateStudyIndex, cs.studyDay AS candidateStudyDay,
       b.seriesIndex AS candidateSeriesIndex, b.typeName AS candidateTypeName, b.longDiameterMm AS candidateLongDiameterMm,
       bt.trackingUid AS candidateTrackingUid, r.reviewedBy AS reviewedBy, r.reviewedAt AS reviewedAt,
       r.rejectReason AS rejectReason
ORDER BY patientId, probability DESC, reviewId
LIMIT $limit
