"""How to rank a study's mining candidates, learned from the graph's own tracks.

:class:`RankCalibrator` follows the scikit-learn contract: ``fit`` returns the calibrator, what it
learned ends in ``_``. For every annotated instance of a track seen at least twice it withholds
the instance, mines its study from the track's other instances, and notes which candidate lies
within the withheld lesion's radius; :func:`lesiondb.core.mining.fit_rank_weights` then fits the
weights of the score terms that best rank the withheld lesions first. No label beyond the
annotations is used, so it runs on any graph (synthetic or real).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ..core import mining as M
from ..errors import LesionDBError
from .case import CaseCache, Embedder, MiningConfig, MiningStats, PatientCase, Probe, VolumeLoader, mine_case

#: Leave-one-out studies a ranking calibration collects at most.
CALIBRATION_STUDIES = 300


class RankCalibrator:
    """Learns the rank weights of mining's score terms from leave-one-out mining of tracks.

    ``max_studies``: leave-one-out studies searched at most (cases are read in order until then:
    patientId order in :func:`lesiondb.mining.mine`, so a one-patient run ranks as the whole graph's
    first patients do); ``prior``: the weights' shrinkage towards plain score ranking.

    Fitted: ``weights_`` (term → weight, or None to rank by score when too few studies had the
    withheld lesion among two or more candidates), ``studies_`` (leave-one-out studies searched),
    ``choice_sets_`` (those usable for the fit), ``seconds_``."""

    def __init__(self, max_studies: int = CALIBRATION_STUDIES, prior: float = 1.0,
                 config: MiningConfig = MiningConfig()):
        self.max_studies = max_studies
        self.prior = prior
        self.config = config

    def fit(self, cases: Iterable[PatientCase], load_volume: VolumeLoader, *, embedder: Embedder | None = None,
            prepare: Callable[[PatientCase, MiningStats], PatientCase] | None = None,
            stats: MiningStats | None = None) -> RankCalibrator:
        """Mine each withheld instance of ``cases`` back and fit the weights. ``prepare`` adapts a
        case to its images first (as the mining loader's ``prepare_case``)."""
        t0 = time.perf_counter()
        stats = stats if stats is not None else MiningStats()
        sets: list[tuple[list[dict], list[bool]]] = []
        studies = 0
        for case in cases:
            if studies >= self.max_studies:
                break
            if not any(len(obs) >= 2 for obs in case.tracks.values()):
                continue
            try:
                case = prepare(case, stats) if prepare else case
            except LesionDBError as exc:
                stats.skip(f"patient {case.patient_id}", f"not used for calibration: {exc}")
                continue
            cache = CaseCache()  # each volume read and reference measured once per patient
            for uid, obs in sorted(case.tracks.items()):
                if len(obs) < 2:
                    continue
                for o in obs:
                    if studies >= self.max_studies or o.position_mm is None:
                        continue
                    scored = self._mine_withheld(case, uid, o, load_volume, embedder, cache, stats)
                    if not scored:
                        continue
                    studies += 1
                    radius = max(o.long_diameter_mm / 2.0, 1.0)
                    sets.append(([c.terms for c in scored],
                                 [M._dist(c.position_mm, o.position_mm) <= radius for c in scored]))
        self.weights_ = M.fit_rank_weights(sets, prior=self.prior)
        self.studies_ = studies
        self.choice_sets_ = sum(1 for _, r in sets if any(r) and len(r) >= 2)
        self.seconds_ = round(time.perf_counter() - t0, 3)
        return self

    def _mine_withheld(self, case: PatientCase, uid: str, o: M.Observation, load_volume: VolumeLoader,
                       embedder: Embedder | None, cache: CaseCache, stats: MiningStats) -> list[M.Candidate]:
        """The ranked candidates of ``o``'s study when ``o`` is withheld from track ``uid``."""
        rest = [x for x in case.tracks[uid] if x is not o]
        loo = replace(case, tracks={**case.tracks, uid: rest},
                      lesions={k: [x for x in v if x is not o] for k, v in case.lesions.items()})
        scored: list[M.Candidate] = []
        probe = Probe(select=lambda u, sid: u == uid and sid == o.study_id,
                      on_scored=lambda _u, _s, cands: scored.extend(cands))
        try:
            mine_case(loo, load_volume, embedder=embedder, config=self.config, stats=MiningStats(), cache=cache,
                      probe=probe)
        except LesionDBError as exc:
            stats.skip(f"lesion {o.lesion_id}", f"not used for calibration: {exc}")
            return []
        return scored

    def summary(self) -> dict[str, Any]:
        """What ``lesiondb mine --json`` reports as ``ranking`` (zeros when not fitted)."""
        return {"rankWeights": getattr(self, "weights_", None), "studies": getattr(self, "studies_", 0),
                "choiceSets": getattr(self, "choice_sets_", 0), "seconds": getattr(self, "seconds_", 0.0)}
