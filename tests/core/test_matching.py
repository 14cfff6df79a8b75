"""Lesion matching maths (lesiondb/core/matching.py): alignment, assignment, gating, tracks, calibration."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lesiondb.core import matching as M

SCALE = np.asarray(M.LOCATION_SCALE_MM)


def les(lid, scan, loc, long_mm=20.0, type_code=3, order=None, position=None, embedding=None):
    return M.LesionObs(lesion_id=lid, scan=scan, order=order if order is not None else (scan,),
                       location=tuple(loc), long_diameter_mm=long_mm, type_code=type_code,
                       position_mm=position, embedding=embedding)


def feats(*lesions):
    return M.ScanFeatures.of(list(lesions))


def shifted_pair(shift=(0.05, 0.0, 0.0)):
    """Three lesions in a row 6 cm apart... except two only 2 cm apart; scan B is shifted by
    ``shift`` (normalised units; 0.05 ≈ 18 mm in x). Nearest location confuses A1 with B0."""
    xs = [0.30, 0.36, 0.60]
    sizes = [20.0, 20.0, 30.0]
    a = [les(f"a{k}", "A", (x, 0.5, 0.5), s) for k, (x, s) in enumerate(zip(xs, sizes, strict=True))]
    b = [les(f"b{k}", "B", (x + shift[0], 0.5 + shift[1], 0.5 + shift[2]), s)
         for k, (x, s) in enumerate(zip(xs, sizes, strict=True))]
    return a, b


def test_alignment_fixes_what_nearest_location_gets_wrong():
    a, b = shifted_pair()
    # the baseline: a1 (x 0.36) is nearest to b0 (x 0.35), not to its own lesion b1 (x 0.41)
    assert M.nearest_location(a[1], b) == 0
    res = M.match_scans(feats(*a), feats(*b))
    assert sorted(res.pairs) == [(0, 0), (1, 1), (2, 2)]
    assert res.alignment.location_shift[0] == pytest.approx(0.05, abs=0.005)
    assert res.alignment.anchors == 3
    # without the shift search (a prior that forbids shifts) the matcher is as wrong as the baseline
    stiff = M.MatchParams(location_shift_sigma_mm=(1e-3, 1e-3, 1e-3))
    assert (1, 1) not in M.match_scans(feats(*a), feats(*b), stiff).pairs


def test_align_scans_recovers_a_3d_shift():
    a, b = shifted_pair((-0.03, 0.02, 0.01))
    al = M.align_scans(feats(*a), feats(*b))
    np.testing.assert_allclose(al.location_shift, [-0.03, 0.02, 0.01], atol=0.004)


def test_far_lesion_is_not_matched_and_gate_is_the_cost_threshold():
    a = feats(les("a", "A", (0.3, 0.5, 0.5)))
    b = feats(les("b", "B", (0.6, 0.5, 0.5)))
    res = M.match_scans(a, b)
    assert res.pairs == []
    assert res.cost[0, 0] >= M.MatchParams().gate_cost
    near = feats(les("c", "B", (0.302, 0.5, 0.5)))
    res = M.match_scans(a, near)
    assert res.pairs == [(0, 0)] and res.cost[0, 0] < M.MatchParams().gate_cost


def test_single_pair_pays_its_shift():
    """One lesion each, displaced 25 mm: the shift explains it but its prior cost stays on the pair."""
    a = feats(les("a", "A", (0.5, 0.5, 0.5)))
    b = feats(les("b", "B", (0.5 + 25 / SCALE[0], 0.5, 0.5)))
    res = M.match_scans(a, b)
    assert res.alignment.prior_cost > 1.0
    assert res.cost[0, 0] >= res.alignment.prior_cost * 0.9


def test_size_and_type_break_a_location_tie():
    a = feats(les("a", "A", (0.5, 0.5, 0.5), 30.0, type_code=4))
    b = feats(les("b0", "B", (0.49, 0.5, 0.5), 10.0, type_code=4),
              les("b1", "B", (0.51, 0.5, 0.5), 31.0, type_code=4))
    assert M.match_scans(a, b).pairs == [(0, 1)]
    c = feats(les("c0", "B", (0.49, 0.5, 0.5), 30.0, type_code=4),
              les("c1", "B", (0.51, 0.5, 0.5), 30.0, type_code=5))
    assert M.match_scans(a, c).pairs == [(0, 0)]


def test_embedding_distance_decides_between_twins():
    e1, e2 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    a = feats(les("a", "A", (0.5, 0.5, 0.5), embedding=e2))
    b = feats(les("b0", "B", (0.495, 0.5, 0.5), embedding=e1), les("b1", "B", (0.505, 0.5, 0.5), embedding=e2))
    assert M.match_scans(a, b).pairs == [(0, 1)]
    b = feats(les("b0", "B", (0.495, 0.5, 0.5), embedding=e2), les("b1", "B", (0.505, 0.5, 0.5), embedding=e1))
    assert M.match_scans(a, b).pairs == [(0, 0)]


def test_patient_mm_position_is_used_when_every_lesion_has_one():
    # normalised locations say a↔b1, DICOM positions (after a 40 mm table shift) say a↔b0
    a = feats(les("a", "A", (0.5, 0.5, 0.5), position=(0.0, 0.0, 0.0)),
              les("a2", "A", (0.7, 0.5, 0.5), position=(80.0, 0.0, 0.0)))
    b = feats(les("b0", "B", (0.56, 0.5, 0.5), position=(0.0, 0.0, 40.0)),
              les("b1", "B", (0.5, 0.5, 0.5), position=(30.0, 0.0, 40.0)),
              les("b2", "B", (0.7, 0.5, 0.5), position=(80.0, 0.0, 40.0)))
    res = M.match_scans(a, b)
    assert (0, 0) in res.pairs and (1, 2) in res.pairs
    np.testing.assert_allclose(res.alignment.position_shift_mm, [0, 0, 40], atol=2.0)


def test_lesion_without_any_position_is_never_matched():
    a = M.ScanFeatures.of([M.LesionObs("a", "A", long_diameter_mm=20.0, type_code=3)])
    b = M.ScanFeatures.of([M.LesionObs("b", "B", long_diameter_mm=20.0, type_code=3)])
    assert M.match_scans(a, b).pairs == []


def test_assign_is_one_to_one_and_respects_the_gate():
    c = np.array([[1.0, 2.0, 50.0], [1.5, 9.0, 50.0], [50.0, 50.0, 50.0]])
    pairs = M.assign(c, 12.0)
    assert sorted(pairs) == [(0, 1), (1, 0)]  # total 3.5 beats 1.0 + 9.0
    assert M.assign(np.array([[11.9]]), 12.0) == [(0, 0)]
    assert M.assign(np.array([[12.0]]), 12.0) == []


def test_best_matching_gain_closed_forms_agree_with_hungarian():
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(3)
    for n, m in [(1, 4), (4, 1), (2, 2), (2, 5), (5, 2), (3, 3)]:
        d = -rng.random((6, n, m)) * 10
        d[d > -2] = 0.0  # some pairs beyond the gate
        fast = M._best_matching_gain(d)
        for h in range(len(d)):
            r, k = linear_sum_assignment(d[h])
            assert fast[h] == pytest.approx(d[h][r, k].sum())


def test_confidence_is_a_margin():
    c = M.confidence_matrix(np.array([[1.0, 1.0]]), 12.0)
    assert c[0, 0] == pytest.approx(0.5) and c[0, 1] == pytest.approx(0.5)
    c = M.confidence_matrix(np.array([[1.0, 6.0]]), 12.0)
    assert c[0, 0] == pytest.approx(1 / (1 + math.exp(-5.0)))
    assert M.confidence_matrix(np.array([[2.0]]), 12.0)[0, 0] > 0.9999


def test_confidence_of_one_pair_equals_the_matrix():
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (1, 3), (3, 1), (2, 2), (4, 5)]:
        c = rng.random((n, m)) * 20
        c[0, 0] = np.inf
        res = M.ScanPairResult(c, [], M.Alignment(np.zeros(3), np.zeros(3)), 12.0)
        got = [[res.confidence_of(i, j) for j in range(m)] for i in range(n)]
        np.testing.assert_allclose(got, M.confidence_matrix(c, 12.0))
        np.testing.assert_allclose(res.confidence, M.confidence_matrix(c, 12.0))


# -- tracks ------------------------------------------------------------------------------------------
def test_triangle_support_resolves_a_conflict_that_greedy_confidence_gets_wrong():
    """Scans A (0), B (1, 7), C (2, 3), D (4). One lesion 0–1–2–4 is assigned consistently in
    every scan pair but A–C, where 0 went to 3 (cheapest of all links; 3 belongs with 7).
    Cheapest-first builds {0, 1, 3} and loses five links; triangle support sees 0–3 contradicted
    by scan B (0→1 but 3→7) and keeps every other link."""
    scans = ["A", "B", "C", "C", "D", None, None, "B"]
    scans[5], scans[6] = "X", "Y"  # unused lesions in scans of their own
    links = [(1.0, 0.3, 0, 3), (1.0, 0.8, 0, 1), (1.0, 1.0, 1, 2), (1.0, 1.1, 2, 4), (1.0, 1.2, 0, 4),
             (1.0, 1.3, 1, 4), (1.0, 2.0, 3, 7)]
    tracks = [t for t in M.build_tracks(scans, links) if len(t) > 1]
    assert sorted(tracks) == [[0, 1, 2, 4], [3, 7]]
    greedy = [t for t in M.build_tracks(scans, links, use_support=False) if len(t) > 1]
    assert sorted(greedy) == [[0, 1, 3], [2, 4]]


def test_must_links_go_first():
    scans = ["A", "B", "B"]
    links = [(0.99, 0.1, 0, 1), (math.inf, 0.0, 0, 2)]
    assert sorted(M.build_tracks(scans, links)) == [[0, 2], [1]]


def _random_patient(rng, n_tracks=6, n_scans=4, shift_mm=15.0, noise_mm=2.0, p_seen=0.7):
    """Lesions of ``n_tracks`` true tracks seen in random scans, each scan shifted; returns
    lesions and the true track of each."""
    centers = rng.uniform(0.2, 0.8, size=(n_tracks, 3))
    sizes = rng.uniform(8, 40, size=n_tracks)
    types = rng.integers(1, 9, size=n_tracks)
    lesions, truth = [], []
    for s in range(n_scans):
        shift = rng.normal(0, shift_mm, 3) / SCALE
        for t in range(n_tracks):
            if rng.random() < p_seen:
                loc = centers[t] + shift + rng.normal(0, noise_mm, 3) / SCALE
                lesions.append(les(f"s{s}t{t}", f"scan{s}", loc, sizes[t] * math.exp(rng.normal(0, 0.1)),
                                   int(types[t]), order=(s,)))
                truth.append(t)
    return lesions, truth


def test_tracks_never_hold_two_lesions_of_one_scan_and_edges_follow_tracks():
    rng = np.random.default_rng(11)
    for _ in range(25):
        lesions, _truth = _random_patient(rng, n_tracks=int(rng.integers(2, 9)), n_scans=int(rng.integers(2, 6)),
                                          shift_mm=25.0, noise_mm=6.0)
        pm = M.match_patient(lesions)
        seen = [i for t in pm.tracks for i in t]
        assert sorted(seen) == list(range(len(lesions)))  # every lesion in exactly one track
        for t in pm.tracks:
            scans = [lesions[i].scan for i in t]
            assert len(scans) == len(set(scans))
            assert [lesions[i].order for i in t] == sorted(lesions[i].order for i in t)
        track_of = pm.track_of()
        expected = sum(len(t) * (len(t) - 1) // 2 for t in pm.tracks)
        assert len(pm.edges) == expected
        for e in pm.edges:
            assert track_of[e.src] == track_of[e.dst]
            assert lesions[e.src].order < lesions[e.dst].order  # earlier → later
            assert e.method in (M.METHOD_ASSIGNED, M.METHOD_TRACK)
            assert 0.0 <= e.confidence <= 1.0


def test_random_patients_are_matched_correctly():
    rng = np.random.default_rng(5)
    tp = fp = fn = 0
    for _ in range(30):
        lesions, truth = _random_patient(rng)
        pm = M.match_patient(lesions)
        pred = {frozenset((e.src, e.dst)) for e in pm.edges}
        true = {frozenset((i, j)) for i in range(len(lesions)) for j in range(i + 1, len(lesions))
                if truth[i] == truth[j]}
        tp += len(pred & true)
        fp += len(pred - true)
        fn += len(true - pred)
    assert tp / (tp + fp) > 0.97 and tp / (tp + fn) > 0.97


def test_all_scan_pairs_are_matched_not_only_consecutive_ones():
    """A lesion seen in scans 0 and 2 only is linked although scan 1 lies between."""
    lesions = [les("a", "s0", (0.5, 0.5, 0.5), order=(0,)), les("x", "s1", (0.2, 0.2, 0.2), order=(1,)),
               les("c", "s2", (0.501, 0.5, 0.5), order=(2,))]
    pm = M.match_patient(lesions)
    assert [(e.src, e.dst, e.method) for e in pm.edges] == [(0, 2, M.METHOD_ASSIGNED)]
    assert pm.scan_pairs == 3


def test_cheapest_in_ignores_one_to_one():
    a, b = shifted_pair()
    pm = M.match_patient(a + b, keep_pair_results=True)
    assert pm.cheapest_in(1, "B") == 4  # a1 → b1 (index 3 + 1)
    assert pm.matched_in(1, "B") == 4
    assert pm.cheapest_in(1, "A") is None


# -- calibration -------------------------------------------------------------------------------------
def test_calibration_recovers_a_small_noise_and_shift():
    rng = np.random.default_rng(2)
    patients = [_random_patient(rng, n_tracks=6, n_scans=3, shift_mm=2.0, noise_mm=1.0, p_seen=0.9)[0]
                for _ in range(80)]
    cal = M.calibrate(patients)
    loc = np.asarray(cal.params.location_sigma_mm)
    shift = np.asarray(cal.params.location_shift_sigma_mm)
    assert cal.pairs > 200 and cal.scan_pairs > 50
    # truth 1 mm, default (3, 3, 5) mm, floor (1, 1, 2) mm: the resolution of a RECIST centre
    assert np.all(loc < [1.6, 1.6, 2.5]) and np.all(loc >= M.MatchParams().min_sigma_mm)
    assert np.all(shift < 5.0)  # truth 2 mm, default 12 mm
    again = M.calibrate(patients)
    assert again.params == cal.params  # deterministic


def test_calibration_fits_the_embedding_scale():
    rng = np.random.default_rng(8)
    patients = []
    for _ in range(60):
        lesions, truth = _random_patient(rng, n_tracks=5, n_scans=3, shift_mm=2.0, noise_mm=1.0, p_seen=0.9)
        protos = rng.normal(size=(5, 16))
        emb = [protos[t] / np.linalg.norm(protos[t]) for t in truth]
        emb = [e + rng.normal(0, 0.02, 16) for e in emb]  # same lesion: distance ≈ 0.1
        patients.append([M.LesionObs(**{**les.__dict__, "embedding": list(e / np.linalg.norm(e))})
                         for les, e in zip(lesions, emb, strict=True)])
    cal = M.calibrate(patients)
    assert cal.params.embedding_sigma < 0.2 < M.MatchParams().embedding_sigma
    assert cal.measured["embedding_sigma"][1] > 100


def test_calibration_of_a_tiny_graph_stays_near_the_defaults():
    rng = np.random.default_rng(4)
    patients = [_random_patient(rng, n_tracks=3, n_scans=2, shift_mm=2.0, noise_mm=1.0)[0] for _ in range(2)]
    cal = M.calibrate(patients)
    d = M.MatchParams()
    for got, default in zip(cal.params.location_sigma_mm, d.location_sigma_mm, strict=True):
        assert default / 3 <= got <= default
    assert cal.params.gate_cost == d.gate_cost  # a tail quantile of a handful of costs is not trusted


def test_params_round_trip():
    p = M.MatchParams(gate_cost=10.0, location_sigma_mm=(1.0, 2.0, 3.0))
    assert M.MatchParams.from_dict(p.to_dict()) == p


def test_calibrated_gate_follows_the_spread_of_true_pair_costs():
    rng = np.random.default_rng(5)
    tight = [_random_patient(rng, n_tracks=6, n_scans=3, shift_mm=2.0, noise_mm=1.0, p_seen=0.9)[0]
             for _ in range(80)]
    cal_tight = M.calibrate(tight)
    default = M.MatchParams().gate_cost
    med, q90 = cal_tight.measured["gate_cost"][0]
    assert cal_tight.measured["gate_cost"][1] > 200 and med < q90
    assert cal_tight.params.gate_cost < 0.8 * default
    # lesions that really move (organ motion: heavy-tailed displacements) keep a looser gate
    loose = []
    for _ in range(80):
        lesions, _t = _random_patient(rng, n_tracks=6, n_scans=3, shift_mm=8.0, noise_mm=1.0, p_seen=0.9)
        loose.append([M.LesionObs(**{**x.__dict__, "location": tuple(
            np.asarray(x.location) + rng.standard_t(1.5, 3) * 3.0 / SCALE)}) for x in lesions])
    cal_loose = M.calibrate(loose)
    assert cal_loose.params.gate_cost > cal_tight.params.gate_cost + 2.0
    # a lesion that resolved and a new one 12 mm away: one lesion under the default gate, two
    # lesions under the gate calibrated on follow-ups that barely move
    a = [les("a0", "A", (0.30, 0.5, 0.5)), les("a1", "A", (0.60, 0.5, 0.5), 30.0, type_code=4)]
    b = [les("b0", "B", (0.30 + 12 / SCALE[0], 0.5, 0.5), 12.0),
         les("b1", "B", (0.60, 0.5, 0.5), 30.0, type_code=4)]
    p_tight = cal_tight.params
    assert (0, 0) in M.match_scans(feats(*a), feats(*b), p_tight.replace(gate_cost=default)).pairs
    assert M.match_scans(feats(*a), feats(*b), p_tight).pairs == [(1, 1)]


def test_patients_matched_together_match_as_one_by_one():
    """match_patients solves the scan pairs of many patients in arrays (pairs of one shape
    together): every patient's tracks, edges and alignments are those of match_patient."""
    rng = np.random.default_rng(21)
    patients = []
    for k in range(60):
        lesions, _ = _random_patient(rng, n_tracks=int(rng.integers(1, 6)), n_scans=int(rng.integers(2, 5)),
                                     shift_mm=10.0, noise_mm=3.0, p_seen=0.7)
        if k % 7 == 0 and lesions:  # a lesion without a location: that scan pair goes one by one
            lesions[0] = M.LesionObs(**{**lesions[0].__dict__, "location": None})
        patients.append(lesions)
    p = M.MatchParams(location_sigma_mm=(2.0, 2.0, 3.0), gate_cost=10.0)
    together = M.match_patients(patients, p, keep_pair_results=True)
    n_groups = 0
    for lesions, pm in zip(patients, together, strict=True):
        alone = M.match_patient(lesions, p, keep_pair_results=True)
        assert pm.tracks == alone.tracks
        assert [(e.src, e.dst, e.method) for e in pm.edges] == [(e.src, e.dst, e.method) for e in alone.edges]
        np.testing.assert_allclose([e.cost for e in pm.edges], [e.cost for e in alone.edges], rtol=1e-9)
        np.testing.assert_allclose([e.confidence for e in pm.edges], [e.confidence for e in alone.edges], rtol=1e-9)
        for key, r in alone.pair_results.items():
            other = pm.pair_results[key]
            assert other.pairs == r.pairs and other.alignment.anchors == r.alignment.anchors
            np.testing.assert_allclose(other.alignment.location_shift, r.alignment.location_shift, atol=1e-12)
            n_groups += r.cost.shape == (2, 2)
    assert n_groups > 10  # many scan pairs of one shape: the array path ran


# -- probabilities -----------------------------------------------------------------------------------
def _brute_marginals(L):
    """Pair marginals and log Z of P(M) ∝ exp(Σ L) over every partial matching, by enumeration."""
    import itertools

    n, m = L.shape
    cells = [(i, j) for i in range(n) for j in range(m) if np.isfinite(L[i, j])]
    Z, P = 0.0, np.zeros((n, m))
    for k in range(min(n, m) + 1):
        for sub in itertools.combinations(cells, k):
            if len({i for i, _ in sub}) < k or len({j for _, j in sub}) < k:
                continue
            w = math.exp(sum(L[i, j] for i, j in sub))
            Z += w
            for i, j in sub:
                P[i, j] += w
    return P / Z, math.log(Z)


def test_matching_marginals_are_exact_on_every_path():
    """Closed forms (a side of one or two), the sum over enumerated matchings, the sum over
    column subsets, pruning of negligible pairs and the batched version all agree with brute force."""
    rng = np.random.default_rng(7)
    for n, m in [(1, 1), (1, 4), (4, 1), (2, 2), (2, 5), (5, 2), (3, 3), (4, 5), (6, 6)]:
        L = rng.normal(size=(n, m)) * 3
        L[0, 0] = -np.inf
        want, lz = _brute_marginals(L) if n * m <= 20 else (None, None)
        got, glz = M.matching_marginals(L)
        if want is not None:
            np.testing.assert_allclose(got, want, atol=1e-10)
            assert glz == pytest.approx(lz)
        assert np.all(got.sum(0) <= 1 + 1e-9) and np.all(got.sum(1) <= 1 + 1e-9)
        stack = np.stack([L, L[::-1], L * 0.5])
        Pb, lb = M._batch_marginals(stack)
        for g in range(3):
            P1, l1 = M.matching_marginals(stack[g])
            np.testing.assert_allclose(Pb[g], P1, atol=1e-10)
            assert lb[g] == pytest.approx(l1)
    # beyond the enumeration: the subset sums (and the split into blocks) give the same marginals
    L = rng.normal(size=(9, 8)) * 3
    L[:, 6:] = -40.0  # negligible pairs: two lesions take no part
    got, _ = M.matching_marginals(L)
    exact = M._marginals_block(L[:, :6])[0]
    np.testing.assert_allclose(got[:, :6], exact, atol=1e-9)
    assert np.all(got[:, 6:] == 0.0)


def test_probability_is_a_margin_and_a_tie_is_even():
    one = M.matching_marginals(np.array([[0.0]]))[0][0, 0]
    assert one == pytest.approx(0.5)  # a pair at the gate: as likely as not
    P = M.matching_marginals(np.array([[8.0, 8.0]]))[0]
    assert P[0, 0] == pytest.approx(P[0, 1]) and P.sum() < 1 and P[0, 0] == pytest.approx(0.5, abs=1e-3)


def test_an_alignment_on_one_lesion_is_not_certain():
    """One lesion in scan A, two alike in scan B 2 cm apart: the alignment picks one, but the shift
    is unknown, so each keeps a substantial probability (the MAP alignment alone says ~1)."""
    a = [les("a", "A", (0.50, 0.5, 0.5))]
    b = [les("b0", "B", (0.50 + 10 / SCALE[0], 0.5, 0.5)), les("b1", "B", (0.50 - 10 / SCALE[0], 0.5, 0.5))]
    pm = M.match_patient(a + b, M.MatchParams(), keep_pair_results=True)
    res = pm.pair_results[("A", "B")]
    map_only = M.matching_marginals(M.MatchParams().gate_cost - res.cost)[0]
    assert map_only.max() > 0.95
    P = res.probability
    assert 0.3 < P[0, 0] < 0.7 and 0.3 < P[0, 1] < 0.7 and P.sum() <= 1.0
    # one b joins a's track (the more probable), the other is a POSSIBLE edge to that track
    tof = pm.track_of()
    joined = [j for j in (1, 2) if tof[j] == tof[0]]
    assert len(joined) == 1
    other = 3 - joined[0]
    assert len(pm.possible) == 1 and {pm.possible[0].src, pm.possible[0].dst} & {0, joined[0]}
    assert other in (pm.possible[0].src, pm.possible[0].dst)
    assert pm.possible[0].probability == pytest.approx(P[0, other - 1], abs=1e-6)


def test_edge_probabilities_pool_the_whole_track():
    """A lesion seen in three scans, the middle one displaced: the direct pair A–C is sure, the
    pairs through B less so; every edge gets the track's pooled probability in (0, 1]."""
    rng = np.random.default_rng(13)
    lesions, truth = _random_patient(rng, n_tracks=4, n_scans=3, shift_mm=3.0, noise_mm=1.5, p_seen=1.0)
    pm = M.match_patient(lesions, M.MatchParams(location_sigma_mm=(2.0, 2.0, 3.0)))
    assert all(0.0 < e.probability <= 1.0 for e in pm.edges)
    assert np.mean([e.probability for e in pm.edges]) > 0.95
    P = pm.probability
    assert np.allclose(P, P.T) and np.all(np.diag(P) == 0)
    pair_p, possible = M.track_probabilities(pm.tracks, P, [x.scan for x in lesions], pm.by_scan)
    assert {(min(e.src, e.dst), max(e.src, e.dst)): e.probability for e in pm.edges} == pair_p
    # two-member track: the pooled probability is the pair's own
    two = [[0, 5]] + [[i] for i in range(len(lesions)) if i not in (0, 5)]
    pp, _ = M.track_probabilities(two, P, [x.scan for x in lesions], pm.by_scan)
    if lesions[0].scan != lesions[5].scan:
        assert pp[(0, 5)] == pytest.approx(P[0, 5], abs=1e-6)


def _bookmarked_patient(second=(103.0, 101.0, 55.0), second_type=3):
    """Scan A bookmarks one 20 mm lesion twice (neighbouring slices) beside a second lesion; scan B
    has each once. ``second``: the second bookmark's centre in scan A's own mm."""
    def obs(lid, scan, loc, pos, long_mm=20.0, type_code=3):
        return M.LesionObs(lesion_id=lid, scan=scan, order=(scan,), location=loc, long_diameter_mm=long_mm,
                           type_code=type_code, scan_position_mm=pos)
    return [obs("a0", "A", (0.5, 0.5, 0.5), (100.0, 100.0, 50.0)),
            obs("a1", "A", (0.5081, 0.5027, 0.5045), second, 18.0, second_type),
            obs("a2", "A", (0.75, 0.6, 0.5), (192.5, 137.0, 50.0), 30.0),
            obs("b0", "B", (0.503, 0.501, 0.502), (101.0, 100.0, 52.0)),
            obs("b2", "B", (0.752, 0.6, 0.5), (193.0, 137.0, 50.0), 31.0)]


def test_bookmark_groups_need_centres_inside_each_other_and_one_type():
    lesions = _bookmarked_patient()
    assert M.bookmark_groups(lesions) == [[0, 1], [2], [3], [4]]
    assert M.bookmark_groups(lesions, overlap=0) == [[0], [1], [2], [3], [4]]
    assert M.bookmark_groups(lesions, cannot_link=[(1, 0)]) == [[0], [1], [2], [3], [4]]
    assert M.bookmark_groups(_bookmarked_patient(second_type=5)) == [[0], [1], [2], [3], [4]]
    # 9.5 mm apart: inside a 20 mm lesion but not inside an 18 mm one (half of 18 is 9)
    assert M.bookmark_groups(_bookmarked_patient(second=(109.5, 100.0, 50.0))) == [[0], [1], [2], [3], [4]]
    assert M.bookmark_groups(_bookmarked_patient(second=(108.5, 100.0, 50.0)))[0] == [0, 1]
    # a group is complete: c is near b and b near a, but c is not near a
    chain = [M.LesionObs(f"x{k}", "A", scan_position_mm=(8.0 * k, 0.0, 0.0), long_diameter_mm=20.0)
             for k in range(3)]
    assert M.bookmark_groups(chain) == [[0, 1], [2]]


def test_bookmarks_of_one_lesion_share_its_track():
    lesions = _bookmarked_patient()
    pm = M.match_patient(lesions, keep_pair_results=True)
    assert sorted(sorted(t) for t in pm.tracks) == [[0, 1, 3], [2, 4]]
    assert pm.bookmarks == [[0, 1]]
    edges = {(e.src, e.dst): e for e in pm.edges}
    assert set(edges) == {(0, 3), (1, 3), (2, 4)}  # no edge within scan A
    assert edges[(0, 3)].probability == edges[(1, 3)].probability > 0.9
    assert pm.cheapest_in(1, "B") == 3 and pm.cheapest_in(3, "A") in (0, 1)
    assert pm.probability[1, 3] == pm.probability[0, 3] and pm.probability[0, 1] == 0.0
    # without bookmarks (or for two lesions of different types) a track holds one lesion per scan
    for alone in (M.match_patient(lesions, M.MatchParams(bookmark_overlap=0.0)),
                  M.match_patient(_bookmarked_patient(second_type=5))):
        assert all(len({lesions[i].scan for i in t}) == len(t) for t in alone.tracks)
        assert [1] in alone.tracks


def test_cannot_link_keeps_lesions_apart_and_must_link_wins():
    a = [les("a", "A", (0.5, 0.5, 0.5))]
    b = [les("b", "B", (0.5, 0.5, 0.5))]
    assert M.match_patient(a + b).tracks == [[0, 1]]
    assert M.match_patient(a + b, cannot_link=[(0, 1)]).tracks == [[0], [1]]
    far = [les("c", "B", (0.9, 0.1, 0.1), 60.0, type_code=1)]
    pm = M.match_patient(a + far, must_link=[(0, 1)])
    assert pm.tracks == [[0, 1]] and pm.edges[0].probability == 1.0


def test_ece_and_reliability():
    assert M.expected_calibration_error([0.9] * 10, [True] * 9 + [False]) == pytest.approx(0.0)
    assert M.expected_calibration_error([1.0, 1.0], [True, False]) == pytest.approx(0.5)
    assert M.expected_calibration_error([], []) is None
    rows = M.reliability([0.05, 0.15, 0.95, 1.0], [False, True, True, True], bins=10)
    assert [(r["lo"], r["n"]) for r in rows] == [(0.0, 1), (0.1, 1), (0.9, 2)]
    s = M.calibration_summary([0.8, 0.6], [True, False])
    assert s["n"] == 2 and s["frequency"] == 0.5 and s["ece"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.6)


def test_failure_cause_says_where_a_true_pair_was_lost():
    a = [les("a", "A", (0.5, 0.5, 0.5))]
    b = [les("b", "B", (0.5, 0.5, 0.5))]
    pm = M.match_patient(a + b)
    assert M.failure_cause(pm, 0, 1) is None
    far = [les("c", "B", (0.9, 0.1, 0.1), 60.0, type_code=1)]
    pm = M.match_patient(a + b + far, must_link=[(0, 2)])  # a's track takes c, a reviewer said so
    assert M.failure_cause(pm, 0, 1) == "track"  # the scan pair links a and b, the tracks do not
    assert M.failure_cause(M.match_patient(a + far), 0, 1) == "gate"
    twin = [les("b0", "B", (0.5, 0.5, 0.5)), les("b1", "B", (0.5 + 15 / SCALE[0], 0.5, 0.5), 40.0, 5)]
    pm = M.match_patient(a + twin)
    assert M.failure_cause(pm, 0, 2) == "assignment"  # a went to b0, the other lesion of b1's scan


# -- the calibrator ----------------------------------------------------------------------------------
def test_match_calibrator_follows_the_scikit_learn_contract_and_fits_the_temperature():
    rng = np.random.default_rng(17)
    patients = [_random_patient(rng, n_tracks=5, n_scans=4, shift_mm=3.0, noise_mm=1.0, p_seen=0.8)[0]
                for _ in range(40)]
    cal = M.MatchCalibrator(max_patients=30, random_state=0)
    assert cal.fit(patients) is cal
    assert cal.params_.temperature == cal.temperature_ and cal.n_patients_ == 30
    assert set(cal.triangle_log_likelihood_) == set(M.TEMPERATURE_GRID)
    assert cal.calibration_.params == cal.params_ and "temperature" in cal.calibration_.to_dict()["measured"]
    assert min(M.TEMPERATURE_GRID) <= cal.temperature_ <= max(M.TEMPERATURE_GRID)
    again = M.MatchCalibrator(max_patients=30, random_state=0).fit(patients)
    assert again.params_ == cal.params_  # deterministic for a random_state
    # the same patients with noisier follow-ups than the noise scales admit: over-confident
    # probabilities contradict each other around triangles, so the fitted temperature is lower
    noisy = [[M.LesionObs(**{**x.__dict__, "location": tuple(np.asarray(x.location)
                                                               + rng.normal(0, 6.0, 3) / SCALE)}) for x in p]
             for p in patients]
    fixed = cal.params_.replace(temperature=1.0)
    hot = M.MatchCalibrator(fixed, max_patients=30, random_state=0, fit_scales=False).fit(patients)
    cold = M.MatchCalibrator(fixed, max_patients=30, random_state=0, fit_scales=False).fit(noisy)
    assert hot.params_.location_sigma_mm == cold.params_.location_sigma_mm == fixed.location_sigma_mm
    assert cold.temperature_ < hot.temperature_
    # fewer than three scans per patient: nothing to fit, the temperature stays 1
    two = [_random_patient(rng, n_tracks=3, n_scans=2)[0] for _ in range(5)]
    assert M.MatchCalibrator().fit(two).temperature_ == 1.0


def test_mode_posteriors_of_many_scan_pairs_equal_one_by_one():
    rng = np.random.default_rng(29)
    modes = []
    for n, m in [(1, 1), (2, 3), (3, 3), (1, 2), (3, 3), (4, 2)]:
        modes.append([(float(rng.random() * 3), rng.random((n, m)) * 15) for _ in range(int(rng.integers(1, 4)))])
    together = M.mode_posteriors(modes, 10.0, 0.8)
    for ms, P in zip(modes, together, strict=True):
        np.testing.assert_allclose(P, M.mode_posterior(ms, 10.0, 0.8)[0], atol=1e-12)


def test_batched_subset_sums_equal_the_exact_marginals_of_each_pair():
    """Stacks of scan pairs too large to enumerate are summed over column subsets: the same
    marginals and log partition functions as each pair alone, impossible pairs included."""
    rng = np.random.default_rng(3)
    for n, m in ((7, 6), (8, 5), (6, 6)):
        L = rng.normal(0.0, 4.0, (5, n, m))
        L[rng.random(L.shape) < 0.3] = -np.inf
        P, lz = M._batch_marginals(L)
        for g in range(len(L)):
            ref_P, ref_lz = M.matching_marginals(L[g])
            np.testing.assert_allclose(P[g], ref_P, atol=1e-12)
            assert abs(lz[g] - ref_lz) < 1e-9
        assert np.all(P.sum(axis=2) <= 1 + 1e-12) and np.all(P.sum(axis=1) <= 1 + 1e-12)
