// name: embedding_targets
// params: none
// returns: f (LIST: lesionId, source, imageRef, keySliceIndex, bboxPx, spacingXMm, spacingYMm, sliceIntervalMm, contentHash, modelId, embeddedHash, patientId, sourceId, typeCode, seriesId, seriesUid)
// idempotent: read-only
// What the embedding stage reads of every lesion (never the embeddings themselves): where its
// image is, the box, the spacing, and whether its data changed since it was embedded
// (contentHash vs embeddedHash). One list per lesion: lists parse faster than maps.
MATCH (p:Patient)-[:HAS_STUDY]->(:Study)-[:HAS_LESION]->(l:Lesion)
RETURN [l.lesionId, l.source, l.imageRef, l.keySliceIndex, l.bboxPx, l.spacingXMm, l.spacingYMm,
        l.sliceIntervalMm, l.contentHash, l.modelId, l.embeddedHash, p.patientId, l.sourceId,
        coalesce(l.typeCode, -1), l.seriesId, l.seriesUid] AS f
