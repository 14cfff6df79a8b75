"""Evaluations of lesion matching: the DLS benchmark on DeepLesion and synthetic cohorts.

Both ingest their lesions into a **scratch graph** (never the user's graph: a separate FalkorDB
graph on the same embedded server, or a temporary embedded data dir when the app uses Neo4j),
run :func:`lesiondb.tracking.match.match_graph` on it exactly as ``lesiondb match`` does, and score
what the graph then holds.

DLS (Deep Lesion Tracker, Cai et al. CVPR 2021): directed pairs of the same lesion in two scans
of one patient. A pair maps to DeepLesion rows by key-slice file name and RECIST endpoints (DLS
stores DL_info's coordinates minus 1 px, rounded to 0.1). The candidates of a pair are the
DeepLesion lesions of the target scan (series). Metrics:

- ``pair_accuracy``: the lesion of the target scan in the source's track is the true target;
- ``non_trivial``: the same over pairs whose target scan has more than one lesion;
- ``cpm_radius`` / ``cpm_10mm``: DLT's centre-point matching — the matched lesion's centre lies
  within the target's radius (half its long diameter) / within 10 mm of the target's centre
  (3-D, in the target series' pixel spacing and slice interval); ``mean_distance_mm`` over
  pairs with a match;
- ``baseline_nearest_location``: the target-scan lesion nearest in normalised location;
- ``directed_accuracy``: the cheapest target-scan lesion under the scan pair's alignment,
  without the one-to-one constraint and tracks (the DLT task: locate one lesion);
- ``failed_pairs`` / ``failed_count``: the keys of the pairs ``pair_accuracy`` counts as wrong
  (the first ``MAX_LISTED``); ``failure_causes``: how many are gate, track-building and
  assignment losses (:func:`lesiondb.core.matching.failure_cause`);
- ``probability``: calibration of the SAME_LESION probabilities (ECE, reliability diagram), per
  pair: the edge from the source to its track's lesion in the target scan, right iff it is the
  target; ``possible``: the POSSIBLE_SAME_LESION edges' precision (where DLS says the truth) and
  recall (the failing pairs whose target one points at);
- ``cross_validated``: a held-out figure — patients split in folds; for each fold, the setting
  of a small grid (gate, tail weight) that scores best on the other folds is applied to it.

With images (DeepLesion PNGs for DLS, the cohort's DICOM series for a synthetic cohort) the
scratch graph's lesions are embedded first with the encoder (the packaged default or a given
model), so the matcher's appearance term joins the metadata terms where both lesions of a pair
are embedded; ``embedding`` in the output says how many were.
"""
from __future__ import annotations

import contextlib
import math
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import matching as M
from ..core.progress import Progress, bar, stage
from ..core.pseudonym import Pseudonymizer
from ..core.results import Result, json_field
from ..datasets.cohort import read_cohort_meta, read_ground_truth
from ..datasets.deeplesion import RowError, parse_file_name, read_dl_info
from ..datasets.dls import read_dls_pairs
from ..embedding.encoder import load_encoder
from ..embedding.patches import CohortImages, DeepLesionImages
from ..embedding.stage import EmbedOptions, EmbedResult, embed_lesions
from ..errors import InputError
from ..graph.engine import Engine
from ..graph.falkor_engine import FalkorEngine
from ..ingest.dicom import ingest_dicom
from ..ingest.records import IngestReport, write_annotated
from .match import match_graph, read_patients

EVAL_GRAPH_DLS = "lesiondb_eval_dls"
EVAL_GRAPH_MATCHING = "lesiondb_eval_matching"
#: The grid the cross-validation chooses from when the gate is not calibrated (the default is in it).
CV_GRID: tuple[dict[str, float], ...] = tuple(
    {"gate_cost": g, "tail_dof": d} for g in (8.0, 12.0, 16.0) for d in (0.5, 1.0, 2.0))
#: With a calibrated gate the grid varies its spread (MatchParams.gate_spread) and the tail weight.
CV_SPREADS = (2.3, 3.0, 3.7)
CV_DOFS = (0.5, 1.0, 2.0)
MAX_LISTED = 200  # failing pair keys listed in the output (for tools/dls_bound.py --failures)


def cv_grid(calibration: dict[str, Any] | None) -> list[dict[str, float]]:
    """The settings the cross-validation chooses from: the calibrated gate's spread × tail weight
    (each spread's gate recomputed from the calibration's cost statistics), else CV_GRID."""
    g = ((calibration or {}).get("measured") or {}).get("gate_cost")
    if not g:
        return [dict(x) for x in CV_GRID]
    (med, q90), n = g
    base = M.MatchParams()
    return [{"gate_spread": k, "gate_cost": M.calibrated_gate(med, q90, n, base, k), "tail_dof": d}
            for k in CV_SPREADS for d in CV_DOFS]


# -- scratch graph --------------------------------------------------------------------------------
@contextlib.contextmanager
def scratch_engine(app_engine, name: str, keep: bool = False) -> Iterator[Any]:
    """A fresh, empty graph for an evaluation, deleted afterwards unless ``keep``.

    On the embedded FalkorDB: graph ``name`` on the same server. Otherwise (Neo4j): a temporary
    embedded FalkorDB data dir (the matcher does not depend on the engine).
    """
    if isinstance(app_engine, FalkorEngine):
        eng = FalkorEngine(app_engine.db, graph=name)  # no server: closing it must not stop the app's
        _drop(eng)
        eng = FalkorEngine(app_engine.db, graph=name)
        try:
            yield eng
        finally:
            if not keep:
                _drop(eng)
        return
    with tempfile.TemporaryDirectory(prefix="lesiondb-eval-") as d:
        eng = FalkorEngine.embedded(d, graph=name)
        try:
            yield eng
        finally:
            eng.close()


def _drop(eng) -> None:
    with contextlib.suppress(Exception):
        eng.graph.delete()


def _scan_of(file_name: str) -> tuple[int, int, int]:
    p, s, se, _k = parse_file_name(file_name)
    return p, s, se


@dataclass
class _Row:
    """What the evaluation needs of one DL_info lesion."""

    lesion_id: str
    file_name: str
    coords: tuple[float, ...]
    scan: tuple[int, int, int]
    key_slice: int
    center_px: tuple[float, float]
    spacing: tuple[float, float, float]
    long_mm: float
    location: tuple[float, float, float]


def _recist_center(c: Sequence[float]) -> tuple[float, float]:
    xs, ys = c[0::2], c[1::2]
    return (min(xs) + max(xs)) / 2.0, (min(ys) + max(ys)) / 2.0


@dataclass
class MatchingEvaluation(Result):
    """The metrics of :func:`evaluate_dls` or :func:`evaluate_cohort` (see the module doc)."""

    metrics: dict[str, Any] = json_field(flatten=True)




def _embedding_summary(run: EmbedResult | None, data) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"modelId": run.model_id, "embedded": run.embedded, "notEmbedded": run.not_embedded,
            "problems": run.embed_problems[:3],
            # what the matcher read back: lesions whose appearance term can apply
            "lesionsWithEmbedding": sum(les.embedding is not None for d in data for les in d.lesions)}


def evaluate_dls(app_engine: Engine | None, pairs_path: str | Path, dl_info: str | Path, *, calibrate: bool = True,
                 cv_folds: int = 5, seed: int = 0, keep_graph: bool = False,
                 images: str | Path | None = None, model_path: str | Path | None = None, workers: int = 0,
                 progress: Progress | None = None) -> MatchingEvaluation:
    """Run the DLS benchmark (see module doc). With ``images`` (a DeepLesion ``Images_png``
    folder) the lesions whose slices are there are embedded first."""
    t0 = time.perf_counter()
    if images is not None and not Path(images).is_dir():
        raise InputError("images folder not found (a DeepLesion Images_png folder)", str(images))
    pairs = read_dls_pairs(pairs_path)
    patients = {_scan_of(p.source_file)[0] for p in pairs} | {_scan_of(p.target_file)[0] for p in pairs}
    ids = Pseudonymizer(uuid.uuid4().bytes + uuid.uuid4().bytes)  # a throwaway key: a throwaway graph
    items, rows = [], {}
    bad_rows = 0
    for item in read_dl_info(dl_info, ids, keep_source_ids=True):
        if isinstance(item, RowError):
            bad_rows += 1
            continue
        les = item.lesion
        fname = les.source_id or ""
        if not fname or _scan_of(fname)[0] not in patients:
            continue
        items.append(item)
        coords = tuple(les.recist_long_px) + tuple(les.recist_short_px)
        rows.setdefault(fname, []).append(_Row(
            les.lesion_id, fname, coords, _scan_of(fname), les.key_slice_index, _recist_center(coords),
            (les.spacing_mm[0], les.spacing_mm[1], les.slice_interval_mm), les.long_diameter_mm,
            tuple(les.location) if les.location else (math.nan,) * 3))

    def find(fname: str, coords: tuple[float, ...]) -> _Row | None:
        best, err = None, math.inf
        for r in rows.get(fname, []):
            e = max(abs(a - b) for a, b in zip(r.coords, coords, strict=True))
            if e < err:
                best, err = r, e
        return best if err <= 0.15 else None  # DLS rounds to 0.1 px

    mapped, unmapped = [], []
    for p in pairs:
        s, t = find(p.source_file, p.source_coords), find(p.target_file, p.target_coords)
        if s is None or t is None:
            unmapped.append(p.key)
        else:
            mapped.append((p, s, t))
    if not mapped:
        raise InputError(f"none of the {len(pairs)} DLS pairs maps to a row of {dl_info} "
                         "(is it the DL_info of the same split?)", str(pairs_path))
    by_scan: dict[tuple[int, int, int], list[_Row]] = {}
    for rs in rows.values():
        for r in rs:
            by_scan.setdefault(r.scan, []).append(r)

    run = None
    with scratch_engine(app_engine, EVAL_GRAPH_DLS, keep_graph) as eng:
        write_annotated(eng, items, IngestReport(source=str(dl_info)))
        if images is not None:
            enc = load_encoder(model_path)
            run = embed_lesions(eng, DeepLesionImages(images, enc.patch_spec, ids), enc, EmbedOptions(workers=workers))
        report = match_graph(eng, calibrate=calibrate)
        pids = [r["patientId"] for r in eng.run("match_patients", patientId=None)]
        data = list(read_patients(eng, pids))
        edges, possible = _read_edges(eng, pids)
    steps = bar(progress, "eval dls")  # the match, then each cross-validation setting
    steps.update(1)
    by_id = {r.lesion_id: r for rs in rows.values() for r in rs}
    track_of = {lid: t[0] for d in data for lid, t in d.tracks.items()}
    members: dict[str, list[str]] = {}
    for lid, uid in track_of.items():
        members.setdefault(uid, []).append(lid)

    graph = _score_pairs(mapped, by_scan, lambda s, t: _matched_in_track(s, t, track_of, members, by_id))
    params = M.MatchParams.from_dict(report.calibration["params"]) if report.calibration else M.MatchParams()
    where = _match_in_memory(data, params)
    directed = _score_pairs(mapped, by_scan, _directed(where, by_id))
    probs = _dls_probabilities(mapped, edges, possible, track_of, members, by_id)
    baseline = _score_pairs(mapped, by_scan, lambda s, t: _nearest(s, by_scan[t.scan]))
    cv = (_cross_validate(mapped, data, params, by_id, cv_folds, seed, steps.update, cv_grid(report.calibration))
          if cv_folds > 1 else None)
    steps.close()
    out: dict[str, Any] = {
        "pairs": len(pairs), "mapped": len(mapped), "unmapped": unmapped[:20], "unmappedCount": len(unmapped),
        "patients": len(pids), "lesions": sum(len(d.lesions) for d in data),
        "pair_accuracy": graph["accuracy"], "non_trivial": graph["non_trivial"],
        "non_trivial_accuracy": graph["non_trivial_accuracy"], "cpm_radius": graph["cpm_radius"],
        "cpm_10mm": graph["cpm_10mm"], "mean_distance_mm": graph["mean_distance_mm"],
        "unmatched": graph["unmatched"],
        "failed_pairs": graph["failed"][:MAX_LISTED], "failed_count": len(graph["failed"]),
        "failure_causes": _failure_causes(mapped, set(graph["failed"]), where, params),
        "probability": probs["sameLesion"], "possible": probs["possible"],
        "baseline_nearest_location": baseline["accuracy"],
        "baseline_non_trivial_accuracy": baseline["non_trivial_accuracy"],
        "directed_accuracy": directed["accuracy"],
        "cross_validated": cv,
        "calibration": report.calibration, "match": {k: v for k, v in report.to_dict().items() if k != "calibration"},
        "embedding": _embedding_summary(run, data),
        "dlInfoRowsRejected": bad_rows, "seconds": round(time.perf_counter() - t0, 2),
    }
    return MatchingEvaluation(out)


def _matched_in_track(s: _Row, t: _Row, track_of, members, by_id) -> _Row | None:
    uid = track_of.get(s.lesion_id)
    if uid is None:
        return None
    found = None
    for lid in members[uid]:  # two there only when they are bookmarks of one lesion
        r = by_id.get(lid)
        if r is not None and r.scan == t.scan and lid != s.lesion_id:
            if lid == t.lesion_id:
                return r
            found = found or r
    return found


def _nearest(s: _Row, candidates: Sequence[_Row]) -> _Row | None:
    best, bd = None, math.inf
    for c in candidates:
        if c.lesion_id == s.lesion_id:
            continue
        d = math.dist(s.location, c.location)
        if d < bd:
            best, bd = c, d
    return best


def _read_edges(eng, pids: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The SAME_LESION and POSSIBLE_SAME_LESION edges of the patients."""
    edges, possible = [], []
    for i in range(0, len(pids), 200):
        edges += eng.run("match_patient_edges", patientIds=pids[i:i + 200])
        possible += eng.run("match_patient_possible", patientIds=pids[i:i + 200])
    return edges, possible


def _match_in_memory(data, params: M.MatchParams) -> dict[str, tuple[M.PatientMatch, int]]:
    """Each lesion's patient matched again in memory (same data, same parameters: the graph's
    tracks), keeping what the scan pairs said: lesionId → (match, index)."""
    where: dict[str, tuple[M.PatientMatch, int]] = {}
    for d in data:
        pm = M.match_patient(d.lesions, params, keep_pair_results=True)
        for i, les in enumerate(d.lesions):
            where[les.lesion_id] = (pm, i)
    return where


def _failure_causes(mapped, failed: set[str], where, params: M.MatchParams) -> dict[str, int]:
    """How many failing pairs are gate, track-building and assignment losses (core.matching.failure_cause)."""
    out = dict.fromkeys(M.FAILURE_CAUSES, 0)
    for p, s, t in mapped:
        if p.key in failed and s.lesion_id in where and t.lesion_id in where:
            pm, i = where[s.lesion_id]
            cause = M.failure_cause(pm, i, where[t.lesion_id][1], params.link_probability)
            if cause:
                out[cause] += 1
    return out


def _dls_probabilities(mapped, edges, possible, track_of, members, by_id) -> dict[str, Any]:
    """Where DLS says the truth, per pair s → t (the unit of every DLS figure): when s's track
    holds a lesion m of t's scan, the SAME_LESION edge s–m states "m is s's lesion there" with its
    probability, right iff m is t (``probability``; ``probability.byEdge``: each edge once); when
    it holds none, a POSSIBLE edge from s's track to a lesion x of t's scan states the same of x
    (``possible``: precision over those, recall over every pair the tracks miss)."""
    prob = {frozenset((e["src"], e["dst"])): float(e["probability"]) for e in edges
            if e.get("probability") is not None}
    pointed: dict[tuple[str, tuple], list[tuple[str, float]]] = {}  # (track, scan) -> [(candidate, p)]
    for e in possible:
        uid, x = track_of.get(e["src"]), by_id.get(e["dst"])
        if uid is not None and x is not None and e.get("probability") is not None:
            pointed.setdefault((uid, x.scan), []).append((x.lesion_id, float(e["probability"])))
    same, by_edge, labelled = [], {}, []
    missed = hit = 0
    for _p, s, t in mapped:
        uid = track_of.get(s.lesion_id)
        if uid is None:
            continue
        there = _matched_in_track(s, t, track_of, members, by_id)
        m = there.lesion_id if there is not None else None
        if m is not None and frozenset((s.lesion_id, m)) in prob:
            same.append((prob[frozenset((s.lesion_id, m))], m == t.lesion_id))
            by_edge[frozenset((s.lesion_id, m))] = same[-1]
        if m == t.lesion_id:
            continue
        missed += 1
        cands = pointed.get((uid, t.scan), []) if m is None else []
        hit += any(x == t.lesion_id for x, _q in cands)
        labelled += [(q, x == t.lesion_id) for x, q in cands]
    out = M.calibration_summary([p for p, _y in same], [y for _p, y in same])
    edge = M.calibration_summary([p for p, _y in by_edge.values()], [y for _p, y in by_edge.values()])
    out["byEdge"] = {k: edge[k] for k in ("n", "meanProbability", "frequency", "ece")}
    return {"sameLesion": out, "possible": {"edges": len(possible), **_possible_summary(labelled, hit, missed)}}


def _possible_summary(labelled: Sequence[tuple[float, bool]], hit: int, missed: int) -> dict[str, Any]:
    cal = M.calibration_summary([p for p, _y in labelled], [y for _p, y in labelled])
    return {"labelled": len(labelled), "precision": _ratio(sum(y for _p, y in labelled), len(labelled)),
            "recall": _ratio(hit, missed), "missedPairs": missed, "missedPairsPointedAt": hit,
            "ece": cal["ece"], "meanProbability": cal["meanProbability"]}


def _directed(where: dict[str, tuple[M.PatientMatch, int]], by_id: dict[str, _Row]
              ) -> Callable[[_Row, _Row], _Row | None]:
    """The cheapest candidate of the target scan under the scan pair's alignment."""

    def pick(s: _Row, t: _Row) -> _Row | None:
        if s.lesion_id not in where or t.lesion_id not in where:
            return None
        pm, i = where[s.lesion_id]
        jt = where[t.lesion_id][1]
        j = pm.cheapest_in(i, pm.lesions[jt].scan)
        if j is not None and any(j in g and jt in g for g in pm.bookmarks):
            j = jt  # a bookmark of the target's lesion (same costs)
        return None if j is None else by_id.get(pm.lesions[j].lesion_id)

    return pick


def _score_pairs(mapped, by_scan, match: Callable[[_Row, _Row], _Row | None]) -> dict[str, Any]:
    n = ok = nt = ok_nt = unmatched = cpm_r = cpm_10 = 0
    dists = []
    failed = []
    for p, s, t in mapped:
        m = match(s, t)
        n += 1
        hit = m is not None and m.lesion_id == t.lesion_id
        ok += hit
        if not hit:
            failed.append(p.key)
        if len(by_scan.get(t.scan, [])) > 1:
            nt += 1
            ok_nt += hit
        if m is None:
            unmatched += 1
            continue
        sx, sy, sz = t.spacing
        d = math.sqrt(((m.center_px[0] - t.center_px[0]) * sx) ** 2 + ((m.center_px[1] - t.center_px[1]) * sy) ** 2
                      + ((m.key_slice - t.key_slice) * sz) ** 2)
        dists.append(d)
        cpm_r += d <= t.long_mm / 2.0
        cpm_10 += d <= 10.0
    return {"n": n, "accuracy": _ratio(ok, n), "non_trivial": nt, "non_trivial_accuracy": _ratio(ok_nt, nt),
            "cpm_radius": _ratio(cpm_r, n), "cpm_10mm": _ratio(cpm_10, n), "unmatched": unmatched,
            "mean_distance_mm": round(sum(dists) / len(dists), 3) if dists else None, "failed": failed}


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _cross_validate(mapped, data, params: M.MatchParams, by_id: dict[str, _Row], folds: int, seed: int,
                    progress: Callable[[int], None] | None, grid: Sequence[dict[str, float]] = CV_GRID
                    ) -> dict[str, Any]:
    """Leave-patients-out choice of the grid setting; returns the held-out accuracy."""
    pair_patient = [s.scan[0] for _p, s, _t in mapped]
    patients = sorted(set(pair_patient))
    rng = random.Random(seed)
    rng.shuffle(patients)
    fold_of = {p: k % folds for k, p in enumerate(patients)}
    # every setting once over every patient: per-pair correctness
    correct: list[list[bool]] = []
    for setting in grid:
        p = params.replace(**setting)
        track_of: dict[str, str] = {}
        members: dict[str, list[str]] = {}
        for d, pm in zip(data, M.match_patients([d.lesions for d in data], p), strict=True):
            for k, t in enumerate(pm.tracks):
                uid = f"{d.patient_id}/{k}"
                lids = [d.lesions[i].lesion_id for i in t]
                members[uid] = lids
                for lid in lids:
                    track_of[lid] = uid
        correct.append([(m := _matched_in_track(s, t, track_of, members, by_id)) is not None
                        and m.lesion_id == t.lesion_id for _p, s, t in mapped])
        if progress:
            progress(1)
    # ties go to the setting in use (when it is on the grid)
    in_use = [k for k, s in enumerate(grid) if all(getattr(params, n) == v for n, v in s.items())]
    default = in_use[0] if in_use else 0
    held_ok = held_n = 0
    chosen = []
    for f in range(folds):
        train = [i for i, pp in enumerate(pair_patient) if fold_of[pp] != f]
        test = [i for i, pp in enumerate(pair_patient) if fold_of[pp] == f]
        if not test:
            continue
        scores = [sum(c[i] for i in train) for c in correct]
        best = max(range(len(grid)), key=lambda k: (scores[k], k == default))
        chosen.append(grid[best])
        held_ok += sum(correct[best][i] for i in test)
        held_n += len(test)
    in_sample = {",".join(f"{k}={v:g}" for k, v in s.items()): _ratio(sum(c), len(c))
                 for s, c in zip(grid, correct, strict=True)}
    return {"folds": folds, "pair_accuracy": _ratio(held_ok, held_n), "chosen": chosen,
            "grid_in_sample": in_sample}


# -- synthetic cohorts ----------------------------------------------------------------------------
def evaluate_cohort(app_engine: Engine | None, cohort: str | Path, *, calibrate: bool = True,
                    keep_graph: bool = False, embed: bool = False, model_path: str | Path | None = None,
                    workers: int = 0, progress: Progress | None = None) -> MatchingEvaluation:
    """Ingest a synthetic cohort (``lesiondb synth``), match it, and score SAME_LESION edges and
    tracks against ``ground_truth.json``. With ``embed`` the lesions are embedded from the
    cohort's DICOM series first (a cohort made with ``--no-images`` has none to embed)."""
    t0 = time.perf_counter()
    cohort = Path(cohort)
    gt = read_ground_truth(cohort)
    meta = read_cohort_meta(cohort)
    ids = Pseudonymizer(uuid.uuid4().bytes + uuid.uuid4().bytes)
    run = None
    with scratch_engine(app_engine, EVAL_GRAPH_MATCHING, keep_graph) as eng:
        ing = ingest_dicom(eng, cohort, ids, embed=False, keep_source_ids=True)  # scored by annotation id
        if embed:
            enc = load_encoder(model_path)
            run = embed_lesions(eng, CohortImages(cohort, enc.patch_spec, ids), enc, EmbedOptions(workers=workers))
        report = match_graph(eng, calibrate=calibrate)
        ann = {r["lesionId"]: r["lesion"].get("annotationId") for r in eng.run(
            "lesions", patientId=None, studyId=None, typeName=None, limit=10 ** 9)}
        pids = [r["patientId"] for r in eng.run("match_patients", patientId=None)]
        data = list(read_patients(eng, pids))
        edges, possible = _read_edges(eng, pids)
    with stage(progress, "eval matching") as b:
        b.update(1)
    inst = gt.by_annotation_id()
    truth_track = {a: i["track_id"] for a, i in inst.items()}
    where = {a: (i["patient_id"], i.get("series_uid") or i["study_uid"]) for a, i in inst.items()}
    scored = {a for a in ann.values() if a in truth_track}
    # ground truth: every pair of ingested annotated instances of one track in different scans
    by_track: dict[str, list[str]] = {}
    for a in scored:
        by_track.setdefault(truth_track[a], []).append(a)
    truth = set()
    for members in by_track.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if where[a] != where[b]:
                    truth.add(frozenset((a, b)))
    pred = set()
    track_members: dict[str, list[str]] = {}
    for e in edges:
        a, b = ann.get(e["src"]), ann.get(e["dst"])
        if a and b:
            pred.add(frozenset((a, b)))
    for d in data:
        for lid, (uid, _h) in d.tracks.items():
            if ann.get(lid):
                track_members.setdefault(uid, []).append(ann[lid])
    tp = len(pred & truth)
    probs = _cohort_probabilities(edges, possible, ann, truth_track, truth - pred, track_members, data)
    purity_num = sum(max(_count(truth_track.get(a) for a in m).values()) for m in track_members.values())
    n_tracked = sum(len(m) for m in track_members.values())
    pred_track = {a: uid for uid, m in track_members.items() for a in m}
    compl_num = sum(max(_count(pred_track.get(a) for a in m).values()) for m in by_track.values())
    return MatchingEvaluation({
        "cohort": str(cohort), "seed": gt.seed if gt.seed is not None else meta.get("seed"),
        "images": meta.get("images"), "patients": len(pids), "lesions": len(scored),
        "truePairs": len(truth), "predictedPairs": len(pred), "truePositives": tp,
        "precision": _ratio(tp, len(pred)), "recall": _ratio(tp, len(truth)),
        "f1": _ratio(2 * tp, len(pred) + len(truth)),
        "track_purity": _ratio(purity_num, n_tracked), "track_completeness": _ratio(compl_num, len(scored)),
        "tracks": len(track_members), "trueTracks": len(by_track),
        "probability": probs["sameLesion"], "possible": probs["possible"],
        "ingest": {"written": ing.written, "rejected": len(ing.rejected)},
        "calibration": report.calibration, "match": {k: v for k, v in report.to_dict().items() if k != "calibration"},
        "embedding": _embedding_summary(run, data),
        "seconds": round(time.perf_counter() - t0, 2),
    })


def _cohort_probabilities(edges, possible, ann, truth_track, missed: set[frozenset], track_members, data
                          ) -> dict[str, Any]:
    """Calibration of the SAME_LESION probabilities against the ground truth, and precision /
    recall of the POSSIBLE edges: one is right iff its two lesions are one true track; recall is
    the share of the true pairs the tracks miss that a POSSIBLE edge joins (its candidate is one
    of the pair, the other is in the edge's track)."""
    def same(a: str | None, b: str | None) -> bool:
        return a is not None and b is not None and truth_track.get(a) is not None \
            and truth_track.get(a) == truth_track.get(b)

    scored = [(float(e["probability"]), same(ann.get(e["src"]), ann.get(e["dst"])))
              for e in edges if e.get("probability") is not None]
    uid_of = {lid: uid for d in data for lid, (uid, _h) in d.tracks.items()}
    labelled, joined = [], set()
    for e in possible:
        if e.get("probability") is None:
            continue
        a, x = ann.get(e["src"]), ann.get(e["dst"])
        labelled.append((float(e["probability"]), same(a, x)))
        if x is not None:
            joined |= {frozenset((x, y)) for y in track_members.get(uid_of.get(e["src"]), ()) if y != x}
    return {"sameLesion": M.calibration_summary([p for p, _y in scored], [y for _p, y in scored]),
            "possible": {"edges": len(possible), **_possible_summary(labelled, len(missed & joined), len(missed))}}


def _count(items) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out or {None: 0}
