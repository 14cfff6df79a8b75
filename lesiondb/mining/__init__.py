"""Missing-annotation mining: propose the lesions radiologists did not annotate, for review.

- :func:`mine` — every tracked patient: each study where a track's lesion should be visible but
  is not annotated is searched around the predicted position; the best candidate becomes a
  pending (:Proposal). Candidates are ranked by a :class:`RankCalibrator` fitted on the graph's
  own tracks; images come through :class:`StudyVolumes` (DICOM series or DeepLesion PNGs).
- :func:`list_proposals`, :func:`accept`, :func:`reject` — the review.
- :func:`evaluate_cohort` — recall and precision on a synthetic cohort with withheld annotations.
"""
from .case import (
    DEFAULT_MIN_SCORE,
    CaseCache,
    MiningConfig,
    MiningStats,
    PatientCase,
    Probe,
    ProposalRecord,
    StudyData,
    cases_from_rows,
    mine_case,
    read_cases,
)
from .evaluate import MiningEvaluation, evaluate_cohort
from .ranker import RankCalibrator
from .review import EXPORT_FIELDS, ReviewDecision, accept, list_proposals, reject
from .run import MiningResult, load_embedder, make_embedder, mine, write_proposals
from .volumes import DicomVolumes, StudyVolumes, has_deeplesion_studies

__all__ = ["DEFAULT_MIN_SCORE", "EXPORT_FIELDS", "CaseCache", "DicomVolumes", "MiningConfig", "MiningEvaluation",
           "MiningResult", "MiningStats", "PatientCase", "Probe", "ProposalRecord", "RankCalibrator",
           "ReviewDecision", "StudyData", "StudyVolumes", "accept", "cases_from_rows", "evaluate_cohort", "has_deeplesion_studies",
           "list_proposals", "load_embedder", "make_embedder", "mine", "mine_case", "read_cases", "reject",
           "write_proposals"]
