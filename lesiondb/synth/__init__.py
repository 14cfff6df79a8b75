"""Synthetic CT cohorts with ground truth: a torso phantom (:mod:`.phantom`), lesions that evolve
over follow-up studies, written as DICOM series + DeepLesion-like annotations (:mod:`.generate`).

:func:`generate_cohort` is what ``lesiondb synth`` and ``lesiondb demo`` run.
"""
from .generate import CohortSummary, generate_cohort

__all__ = ["CohortSummary", "generate_cohort"]
