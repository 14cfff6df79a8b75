"""Matching lesions across a patient's follow-up studies into tracks with RECIST responses.

- :func:`match_graph` — every patient's lesions: SAME_LESION edges, (:Track) nodes, RECIST status;
- :func:`list_possible`, :func:`accept_possible`, :func:`reject_possible` — review of the links
  matching found plausible but not sure enough to make (POSSIBLE_SAME_LESION);
- :func:`evaluate_dls`, :func:`evaluate_cohort` — the DLS benchmark and synthetic cohorts.
"""
from .evaluate import MatchingEvaluation, evaluate_cohort, evaluate_dls
from .match import MatchReport, match_graph
from .review import accept_possible, list_possible, reject_possible

__all__ = ["MatchReport", "MatchingEvaluation", "accept_possible", "evaluate_cohort", "evaluate_dls", "list_possible",
           "match_graph", "reject_possible"]
