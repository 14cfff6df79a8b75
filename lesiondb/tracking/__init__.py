"""Matching lesions across a patient's follow-up studies into tracks with RECIST responses.

- :func:`match_graph` — every patient's lesions: SAME_LESION edges, (:Track) nodes, RECIST status;
- :func:`evaluate_dls`, :func:`evaluate_cohort` — the DLS benchmark and synthetic cohorts.
"""
from .evaluate import MatchingEvaluation, evaluate_cohort, evaluate_dls
from .match import MatchReport, match_graph

__all__ = ["MatchReport", "MatchingEvaluation", "evaluate_cohort", "evaluate_dls", "match_graph"]
