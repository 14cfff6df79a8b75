"""Mining maths on volumes synthesised here with numpy (no image reader needed)."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from lesiondb.core import mining as M


def _volume(seed=0, n_slices=24, size=128, spacing=0.8, dz=2.5, body_shift_mm=(0.0, 0.0, 0.0)):
    """A noisy soft-tissue ellipse (body) in air, with a grid whose z starts at ``body_shift``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    body = ((yy - size / 2) / (0.42 * size)) ** 2 + ((xx - size / 2) / (0.46 * size)) ** 2 <= 1
    hu = np.where(body, 50.0, -1000.0)[None].repeat(n_slices, 0)
    hu = hu + rng.normal(0, 12, hu.shape)
    grid = M.Grid(slice_z_mm=np.arange(n_slices) * dz, row_mm=spacing, col_mm=spacing)
    return hu, grid


def _plant(hu, grid, center_mm, diam_mm, delta_hu, ellipse=(1.0, 1.0), angle=0.0):
    """Add an ellipsoidal lesion (long diameter ``diam_mm``) of contrast ``delta_hu``."""
    k = np.arange(hu.shape[0])[:, None, None]
    r = np.arange(hu.shape[1])[None, :, None]
    c = np.arange(hu.shape[2])[None, None, :]
    x = grid.origin_xy_mm[0] + c * grid.col_mm - center_mm[0]
    y = grid.origin_xy_mm[1] + r * grid.row_mm - center_mm[1]
    z = np.asarray(grid.slice_z_mm)[k] - center_mm[2]
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = ca * x + sa * y, -sa * x + ca * y
    a = diam_mm / 2 * ellipse[0]
    b = diam_mm / 2 * ellipse[1]
    inside = (u / a) ** 2 + (v / b) ** 2 + (z / (diam_mm / 2)) ** 2 <= 1
    hu[inside] += delta_hu
    return inside


def test_detects_planted_blob_and_measures_it():
    hu, grid = _volume()
    centre = (55.0, 48.0, 30.0)
    _plant(hu, grid, centre, 14.0, -60.0)  # hypodense, like a liver metastasis
    pred = M.Prediction(position_mm=(60.0, 44.0, 27.5), sigma_mm=5.0, method="test", expected_long_mm=12.0)
    ref = {"mean_hu": -10.0, "contrast_hu": -60.0, "embedding": None}
    best, scored = M.mine_study(hu, grid, pred, ref, min_score=0.2)
    assert best is not None, [c.terms for c in scored]
    assert M._dist(best.position_mm, centre) < 3.0
    assert best.polarity == -1
    assert 11.0 <= best.long_diameter_mm <= 17.0
    assert abs(best.mean_hu - (-10.0)) < 20


def test_no_proposal_where_there_is_no_lesion():
    hu, grid = _volume(seed=1)
    pred = M.Prediction(position_mm=(50.0, 50.0, 30.0), sigma_mm=5.0, method="test", expected_long_mm=12.0)
    ref = {"mean_hu": -10.0, "contrast_hu": -60.0, "embedding": None}
    best, scored = M.mine_study(hu, grid, pred, ref, min_score=0.2)
    assert best is None, best


def test_prefers_the_similar_blob_over_a_dissimilar_closer_one():
    hu, grid = _volume(seed=2)
    true_c = (40.0, 50.0, 30.0)
    _plant(hu, grid, true_c, 12.0, -60.0)
    _plant(hu, grid, (56.0, 50.0, 30.0), 12.0, 250.0)  # a bright (calcified) blob nearer the prediction
    pred = M.Prediction(position_mm=(52.0, 50.0, 30.0), sigma_mm=8.0, method="test", expected_long_mm=12.0)
    ref = {"mean_hu": -10.0, "contrast_hu": -60.0, "embedding": None}
    best, _ = M.mine_study(hu, grid, pred, ref, min_score=0.1)
    assert best is not None and M._dist(best.position_mm, true_c) < 3.0


def test_translation_from_matched_lesions_is_robust_to_an_outlier():
    rng = np.random.default_rng(0)
    src = rng.uniform(-100, 100, (6, 3))
    t = np.array([12.0, -7.0, 22.5])
    dst = src + t + rng.normal(0, 0.5, src.shape)
    dst[0] += [40, -30, 15]  # a mismatched pair
    est, spread = M.estimate_translation(src, dst)
    assert np.allclose(est, t, atol=1.0)
    assert spread < 2.0


def test_prediction_through_a_known_shift_then_found():
    shift = np.array([6.0, -4.0, 7.5])
    hu_a, grid_a = _volume(seed=3, n_slices=30)
    # study B: the same body moved by `shift` (origin and z shifted), lesion moved with it
    hu_b, grid_b = _volume(seed=4, n_slices=30)
    grid_b = M.Grid(slice_z_mm=np.asarray(grid_b.slice_z_mm) + shift[2], row_mm=grid_b.row_mm,
                    col_mm=grid_b.col_mm, origin_xy_mm=(shift[0], shift[1]))
    lesion_a = np.array([50.0, 45.0, 35.0])
    other_a = np.array([70.0, 70.0, 20.0])
    _plant(hu_a, grid_a, lesion_a, 12.0, 80.0)
    _plant(hu_b, grid_b, lesion_a + shift, 12.0, 80.0)
    # translation from another matched lesion (other track) seen in both studies
    t, spread = M.estimate_translation(other_a[None], (other_a + shift)[None])
    obs = [M.Observation("L1", "A", 0.0, 12.0, position_mm=tuple(lesion_a), slice_index=14,
                         center_px=(lesion_a[0] / 0.8, lesion_a[1] / 0.8))]
    obs = [M.measure_reference(hu_a, grid_a, obs[0])]
    assert obs[0].contrast_hu > 40
    pred = M.predict_position(obs, M.StudyInfo("B", 30.0, grid_b.z_range()), {"A": (t, spread, "matched-lesions")})
    assert np.allclose(pred.position_mm, lesion_a + shift, atol=1e-6)
    best, _ = M.mine_study(hu_b, grid_b, pred, min_score=0.2)
    assert best is not None and M._dist(best.position_mm, lesion_a + shift) < 3.0


def test_body_translation_recovers_z_and_inplane_shift():
    # a body whose cross-section changes along z, scanned twice with a shift
    def vol(origin, z0):
        z = np.arange(60) * 2.0 + z0
        size = 96
        yy, xx = np.mgrid[0:size, 0:size]
        hu = np.full((60, size, size), -1000.0)
        for k, zk in enumerate(z):
            a = 25 + 10 * math.sin(zk / 15.0)  # the body narrows and widens along z
            cx, cy = (40 - origin[0]) / 1.0, (45 - origin[1]) / 1.0
            hu[k][((xx - cx) / a) ** 2 + ((yy - cy) / 20) ** 2 <= 1] = 40
        return hu, M.Grid(z, 1.0, 1.0, origin)

    hu_a, ga = vol((0.0, 0.0), 0.0)
    hu_b, gb = vol((-5.0, 3.0), -10.0)  # same anatomy; the scanner grid moved
    t = M.body_translation(hu_a, ga, hu_b, gb)
    # anatomy sits at the same patient mm: translation ≈ 0 although the voxel grids differ
    assert np.allclose(t, [0, 0, 0], atol=1.5), t


def test_recist_from_mask_of_a_rotated_ellipse():
    yy, xx = np.mgrid[0:80, 0:80]
    ang = math.radians(30)
    u = (xx - 40) * math.cos(ang) + (yy - 40) * math.sin(ang)
    v = -(xx - 40) * math.sin(ang) + (yy - 40) * math.cos(ang)
    mask = (u / 15) ** 2 + (v / 7) ** 2 <= 1  # diameters 30 and 14 px
    long_px, short_px, long_mm, short_mm = M.recist_from_mask(mask, 0.5, 0.5)
    assert abs(long_mm - 15.0) < 1.0 and abs(short_mm - 7.0) < 1.0
    # the long axis lies along the ellipse's major axis
    d = np.array([long_px[2] - long_px[0], long_px[3] - long_px[1]])
    cosang = abs(d @ [math.cos(ang), math.sin(ang)]) / np.linalg.norm(d)
    assert cosang > 0.97
    # the short axis is perpendicular to it
    e = np.array([short_px[2] - short_px[0], short_px[3] - short_px[1]])
    assert abs(d @ e) / (np.linalg.norm(d) * np.linalg.norm(e)) < 0.1


def _obs(study, t, d):
    return M.Observation(f"L{study}", study, t, d, position_mm=(0.0, 0.0, 0.0))


def test_visibility_rule():
    studies = [M.StudyInfo(s, t) for s, t in [("S1", 0), ("S2", 100), ("S3", 200), ("S4", 300), ("S5", 400)]]
    # seen at S1 and S3 -> S2 (between) mined; after S3 it shrinks 20 -> 8 per 200 days -> S4 (2 mm) not
    obs = [_obs("S1", 0, 20.0), _obs("S3", 200, 8.0)]
    vis = [s.study_id for s in studies if M.should_be_visible(obs, s)]
    assert vis == ["S2"]
    # a growing new lesion: seen at S4 (6 mm) and S5 (16 mm) -> backwards S3 extrapolates < 0: not mined
    obs = [_obs("S4", 300, 6.0), _obs("S5", 400, 16.0)]
    vis = [s.study_id for s in studies if M.should_be_visible(obs, s)]
    assert vis == []
    # stable lesion seen once: every other study is searched
    obs = [_obs("S2", 100, 12.0)]
    assert [s.study_id for s in studies if M.should_be_visible(obs, s)] == ["S1", "S3", "S4", "S5"]


def test_evidence_factor_depends_on_where_the_study_lies_in_the_track():
    """Existence is known between observations (weaker evidence suffices), unknown before the
    first one ("new" lesion: stronger evidence needed); after the last, the plain threshold."""
    two = [_obs("S1", 0, 12.0), _obs("S3", 200, 13.0)]
    assert M.evidence_factor(two, 100) == M.BETWEEN_EVIDENCE < 1.0
    assert M.evidence_factor(two, 300) == 1.0  # after: the trend already judged it visible
    # before, even with a backward trend: the trend says how large, not whether it existed
    assert M.evidence_factor(two, -100) == M.NEW_LESION_EVIDENCE
    one = [_obs("S2", 100, 12.0)]
    assert M.evidence_factor(one, 0) == M.NEW_LESION_EVIDENCE > 1.0  # before the only observation
    assert M.evidence_factor(one, 200) == 1.0  # after it


def test_candidate_studies_requires_coverage_and_skips_already_annotated():
    obs = [_obs("S1", 0, 12.0)]
    studies = [M.StudyInfo("S2", 10, (-50.0, 50.0)), M.StudyInfo("S3", 20, (100.0, 200.0)),
               M.StudyInfo("S4", 30, (-50.0, 50.0), annotated_mm=((1.0, 1.0, 0.0),))]

    def predict(s):
        return M.Prediction((0.0, 0.0, 0.0), 4.0, "test", 12.0)

    got = [s.study_id for s, _ in M.candidate_studies(obs, studies, predict)]
    assert got == ["S2"]


@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_log_stack_matches_direct_convolution(sigma):
    rng = np.random.default_rng(5)
    img = rng.normal(size=(1, 40, 40))
    got = M.log_stack(img, sigma)[0]
    # naive: the 2-D LoG kernel applied at one interior pixel
    rad = int(math.ceil(3.5 * sigma))
    x = np.arange(-rad, rad + 1)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    d2 = g * (x * x - sigma ** 2) / sigma ** 4
    d2 -= d2.mean()
    kern = np.outer(d2, g) + np.outer(g, d2)
    r, c = 20, 17
    patch = img[0, r - rad:r + rad + 1, c - rad:c + rad + 1]
    want = sigma ** 2 * float((patch * kern).sum())
    assert abs(got[r, c] - want) < 1e-9


def test_visibility_allows_for_measurement_noise():
    """A stable lesion measured 9.5 then 7.6 mm (noise, not shrinkage) extrapolates under 5 mm a few
    months on, yet is still searched; a lesion going 20 → 8 mm is still taken for resolved."""
    obs = [_obs("S1", 0, 9.5), _obs("S2", 148, 7.6)]
    later = [M.StudyInfo("S3", 148 + 216), M.StudyInfo("S4", 148 + 265)]
    assert all(M.extrapolate_diameter(obs, s.time) < 5.0 for s in later)
    assert all(M.should_be_visible(obs, s) for s in later)
    obs = [_obs("S1", 0, 20.0), _obs("S2", 200, 8.0)]
    assert not M.should_be_visible(obs, M.StudyInfo("S3", 300))
    assert M.extrapolation_margin(obs, 300) < M.extrapolation_margin(obs, 500)  # grows with the gap
    assert M.extrapolation_margin([_obs("S1", 0, 9.0)], 300) == 0.0  # one observation: no trend


def test_a_lesion_annotated_small_stays_visible_at_that_size():
    """The 5 mm visibility floor never hides a lesion as large as one annotated in its own track:
    a stable 2.8 mm nodule is searched, a 3 mm one shrinking to nothing is not."""
    stable = [_obs("S1", 0, 2.8), _obs("S2", 100, 2.7), _obs("S3", 200, 2.8)]
    assert M.should_be_visible(stable, M.StudyInfo("S4", 220))
    assert M.should_be_visible(stable, M.StudyInfo("S0", -20))
    # the same track under a floor that ignores its own size would skip both
    big = [_obs("S1", 0, 6.0), _obs("S2", 100, 3.2)]  # halving in 100 days: gone by 300
    assert not M.should_be_visible(big, M.StudyInfo("S4", 300))


def test_fused_position_leans_on_the_prediction_along_z_only():
    grid = M.Grid(slice_z_mm=np.arange(30) * 5.0, row_mm=0.8, col_mm=0.8)
    pred = M.Prediction((50.0, 50.0, 70.0), 6.0, "test", 12.0)
    c = M.Candidate(16, 62.5, 62.5, (51.0, 50.0, 80.0), 6.0, 1.0, 1, long_diameter_mm=12.0)
    f = M.fuse_position(c, pred, grid)
    # z: the measurement (thick slices) and the prediction are both uncertain: in between
    assert 70.0 < f.position_mm[2] < 80.0
    # in-plane the measured centre is sharp: it hardly moves
    assert abs(f.position_mm[0] - 51.0) < 0.5 and f.position_mm[1] == pytest.approx(50.0)
    # a candidate far from the prediction is another structure: left as measured
    far = replace(c, position_mm=(80.0, 50.0, 80.0))
    assert M.fuse_position(far, pred, grid).position_mm == far.position_mm


def test_contrast_of_a_big_lesion_is_to_its_own_surroundings():
    """A 50 mm lesion (50 HU) in an organ (110 HU, 92 mm across) in soft tissue (50 HU): its contrast
    is to the organ around it (−60 HU), not to the tissue 1.6–2.4 radii out, beyond the organ."""
    hu, grid = _volume(seed=4, size=160, spacing=1.0)
    centre = (80.0, 80.0, 30.0)
    _plant(hu, grid, centre, 92.0, 60.0)  # the organ
    _plant(hu, grid, centre, 50.0, -60.0)  # the lesion inside it
    k, r, c = grid.to_voxel(centre)
    m = M.measure_blob(hu[int(round(k))], r, c, 25.0, -1, 1.0, 1.0)
    assert m is not None and -75.0 <= m["contrast_hu"] <= -45.0, m["contrast_hu"]
    assert 40.0 <= m["long_diameter_mm"] <= 56.0


def test_anatomy_seen_in_the_reference_study_is_not_the_lesion():
    """A blob that is also in the study where the lesion is annotated — away from the lesion — is
    anatomy; the lesion itself maps onto the annotated one and is kept."""
    hu_ref, grid = _volume(seed=5)
    lesion, mimic = (40.0, 50.0, 30.0), (62.0, 50.0, 30.0)
    _plant(hu_ref, grid, lesion, 10.0, -60.0)
    _plant(hu_ref, grid, mimic, 10.0, -60.0)  # e.g. a vessel seen end-on, as dark as the lesion
    hu_t, _ = _volume(seed=6)
    _plant(hu_t, grid, mimic, 10.0, -60.0)
    _plant(hu_t, grid, lesion, 10.0, -60.0)
    pred = M.Prediction(lesion, 5.0, "test", 10.0)
    ref = {"mean_hu": -10.0, "contrast_hu": -60.0, "embedding": None}
    _, scored = M.mine_study(hu_t, grid, pred, ref, search_mm=30.0, max_candidates=8)
    at_mimic = next(c for c in scored if M._dist(c.position_mm, mimic) < 3.0)
    at_lesion = next(c for c in scored if M._dist(c.position_mm, lesion) < 3.0)
    assert M.anatomy_echo(hu_ref, grid, at_mimic.position_mm, at_mimic, lesion, 5.0)
    assert not M.anatomy_echo(hu_ref, grid, at_lesion.position_mm, at_lesion, lesion, 5.0)
    # nothing like it at the mapped place in the reference study: not anatomy
    hu_empty, _ = _volume(seed=7)
    _plant(hu_empty, grid, lesion, 10.0, -60.0)
    assert not M.anatomy_echo(hu_empty, grid, at_mimic.position_mm, at_mimic, lesion, 5.0)


def test_key_slice_is_not_a_neighbour_where_the_blob_merged_with_something():
    """A lung nodule whose next slice also cuts a structure of the same HU touching it: that
    slice's region is larger, but it is not the nodule's key slice (its centre jumps away)."""
    rng = np.random.default_rng(8)
    hu = -850.0 + rng.normal(0, 12, (24, 128, 128))
    grid = M.Grid(slice_z_mm=np.arange(24) * 2.5, row_mm=0.8, col_mm=0.8)
    centre = (50.0, 50.0, 30.0)  # slice 12
    _plant(hu, grid, centre, 8.0, 900.0)
    # on slice 13 only: a soft-tissue band (a vessel running in-plane) touching the nodule's edge
    r0, c0 = int(50 / 0.8), int(50 / 0.8)
    hu[13, r0 - 4:r0 + 4, c0 + 2:c0 + 18] = 50.0 + rng.normal(0, 12, (8, 16))
    cand = M.Candidate(12, 50 / 0.8, 50 / 0.8, centre, 4.0, 1.0, 1)
    m = M.measure_candidate(hu, grid, cand, neighbours=True)
    assert m is not None and m.slice_index == 12
    assert math.hypot(m.position_mm[0] - 50.0, m.position_mm[1] - 50.0) < 1.5
    assert m.long_diameter_mm < 11.0


def test_pattern_term_prefers_the_lesion_in_its_own_surroundings_over_a_look_alike():
    """Two blobs of the same size and HU; only one sits, as the track's lesion does in its own
    study, beside a bright structure (a vessel). Position alone prefers the look-alike (nearer the
    prediction); the lesion's own patch (:func:`pattern_template`) picks the lesion."""
    def scene(seed, with_mimic):
        hu, grid = _volume(seed=seed)
        _plant(hu, grid, lesion, 10.0, -60.0)
        r, c = int(round(50.0 / 0.8)), int(round(40.0 / 0.8))
        hu[:, r - 14:r - 9, c - 6:c + 7] += 200.0  # an enhancing vessel just above the lesion
        if with_mimic:
            _plant(hu, grid, mimic, 10.0, -60.0)
        return hu, grid

    lesion, mimic = (40.0, 50.0, 30.0), (57.0, 52.0, 30.0)
    hu_ref, grid = scene(11, with_mimic=False)
    hu_t, _ = scene(12, with_mimic=True)
    k, r, c = grid.to_voxel(lesion)
    obs = M.Observation("L1", "S1", 0.0, 10.0, slice_index=int(round(k)), center_px=(c, r))
    tpl = M.pattern_template(hu_ref, grid, obs, 10.0)
    assert tpl is not None and tpl[0].shape == (M.PATTERN_SAMPLES, M.PATTERN_SAMPLES)
    assert tpl[2][0] < -10.0 < tpl[2][1]  # the window is centred on the lesion's own HU
    pred = M.Prediction((50.0, 51.0, 30.0), 6.0, "test", 10.0)
    ref = {"mean_hu": -10.0, "contrast_hu": -60.0, "embedding": None}
    _, plain = M.mine_study(hu_t, grid, pred, ref, min_score=0.0)
    assert M._dist(plain[0].position_mm, mimic) < 3.0  # without the pattern: the look-alike
    _, scored = M.mine_study(hu_t, grid, pred, ref, min_score=0.0, templates=[tpl])
    at_lesion = next(c for c in scored if M._dist(c.position_mm, lesion) < 3.0)
    at_mimic = next(c for c in scored if M._dist(c.position_mm, mimic) < 3.0)
    assert at_lesion.pattern_ncc > 0.8 and at_mimic.pattern_ncc < at_lesion.pattern_ncc - 0.3
    assert "pattern" in at_lesion.terms
    assert M._dist(scored[0].position_mm, lesion) < 3.0


def test_sample_patch_is_in_mm_whatever_the_pixel_size():
    """The same scene at two pixel sizes gives (nearly) the same patch: studies compare in mm."""
    out = []
    for px in (0.8, 1.2):
        n = int(round(100 / px))
        yy, xx = np.mgrid[0:n, 0:n] * px
        hu = np.where((yy - 50) ** 2 + (xx - 40) ** 2 <= 36, 100.0, -50.0) + 2.0 * xx
        grid = M.Grid(np.zeros(1), px, px)
        out.append(M.sample_patch(hu[None], grid, 0, 50 / px, 40 / px, 12.0))
    assert M._ncc(out[0], out[1]) > 0.95
    assert np.all(out[0] <= M.PATTERN_CLIP_HU[1]) and np.all(out[0] >= M.PATTERN_CLIP_HU[0])


def test_template_match_finds_the_lesion_where_its_region_would_leak():
    """A hypodense lesion touching a band of its own HU (its region leaks into the band): the
    lesion's patch from the reference study still matches at the lesion's centre."""
    def scene(seed, centre):
        hu, grid = _volume(seed=seed)
        _plant(hu, grid, centre, 10.0, -60.0)
        r = int(round(centre[1] / 0.8))
        c = int(round(centre[0] / 0.8))
        hu[:, r - 3:r + 3, c + 5:c + 30] -= 60.0  # a duct of the lesion's HU running off it
        return hu, grid

    ref_c, tgt_c = (40.0, 50.0, 30.0), (44.0, 47.0, 30.0)
    hu_ref, grid = scene(21, ref_c)
    hu_t, _ = scene(22, tgt_c)
    k, r, c = grid.to_voxel(ref_c)
    tpl = M.pattern_template(hu_ref, grid, M.Observation("L", "S", 0.0, 10.0, slice_index=int(round(k)),
                                                          center_px=(c, r)), 10.0)
    ((ncc, kk, rr, cc),) = M.template_match(hu_t, grid, (40.0, 50.0, 30.0), [tpl], 15.0, 5.0)
    found = grid.to_mm(kk, rr, cc)
    assert ncc > 0.7
    assert math.hypot(found[0] - tgt_c[0], found[1] - tgt_c[1]) < 1.5 and abs(found[2] - tgt_c[2]) <= 2.5


def _choice_sets(w_true, n_sets, n_cands, rng):
    sets = []
    for _ in range(n_sets):
        terms = [{k: float(rng.exponential(1.0)) for k in w_true} | {"embedding": 0.0} for _ in range(n_cands)]
        u = np.array([-0.5 * sum(w_true[k] * t[k] for k in w_true) for t in terms])
        p = np.exp(u - u.max())
        right = np.zeros(n_cands, bool)
        right[rng.choice(n_cands, p=p / p.sum())] = True
        sets.append((terms, list(right)))
    return sets


def test_fit_rank_weights_recovers_the_weights_that_chose_the_candidates():
    """Choice sets drawn from a known conditional logit give back its weights; a term that never
    varies (embedding here) keeps weight 1; too few sets give None (rank by score)."""
    rng = np.random.default_rng(5)
    w_true = {"position": 2.0, "size": 0.25, "hu": 1.0, "contrast": 0.5, "pattern": 4.0}
    w = M.fit_rank_weights(_choice_sets(w_true, 3000, 6, rng), prior=0.01)
    for k, v in w_true.items():
        assert abs(np.log(w[k] / v)) < 0.25, (k, w[k], v)
    assert w["embedding"] == 1.0 and w["anatomy"] == 1.0
    assert M.fit_rank_weights(_choice_sets(w_true, 10, 6, rng)) is None
    # sets without a right candidate or with one candidate tell nothing
    useless = [([{"position": 1.0}, {"position": 2.0}], [False, False]), ([{"position": 1.0}], [True])] * 30
    assert M.fit_rank_weights(useless) is None


def test_rank_value_orders_by_score_or_by_weighted_terms():
    a = M.Candidate(0, 0, 0, (0, 0, 0), 3, 0, 1, score=0.30, terms={"position": 0.4, "hu": 2.0})
    b = M.Candidate(0, 0, 0, (0, 0, 0), 3, 0, 1, score=0.25, terms={"position": 2.4, "hu": 0.4})
    assert sorted([b, a], key=M.rank_value) == [a, b]  # by score
    w = {"position": 1.0, "hu": 0.1}  # hu barely counts: b's larger position term decides
    assert sorted([b, a], key=lambda c: M.rank_value(c, w)) == [a, b]
    w = {"position": 0.1, "hu": 1.0}
    assert sorted([a, b], key=lambda c: M.rank_value(c, w)) == [b, a]


def test_mine_study_ranks_by_the_weights_and_decides_on_the_first_ranked_score():
    """Two hypodense blobs: one at the prediction but under half the expected size, one of the expected
    size 12 mm away. By score the far one wins; with size barely weighted the near one ranks first,
    and a threshold between their scores then proposes nothing (the decision is the first-ranked
    candidate's own score, not the best score)."""
    hu, grid = _volume(seed=3)
    near, far = (50.0, 50.0, 30.0), (62.0, 50.0, 30.0)
    _plant(hu, grid, near, 6.0, -60.0)
    _plant(hu, grid, far, 14.0, -60.0)
    pred = M.Prediction(position_mm=near, sigma_mm=10.0, method="test", expected_long_mm=14.0)
    ref = {"mean_hu": -10.0, "contrast_hu": -60.0, "embedding": None}
    _, by_score = M.mine_study(hu, grid, pred, ref, min_score=0.0)
    assert M._dist(by_score[0].position_mm, far) < 3.0
    w = {"position": 1.0, "size": 0.05, "hu": 0.05, "contrast": 0.05}
    best, ranked = M.mine_study(hu, grid, pred, ref, min_score=0.0, rank_weights=w)
    assert M._dist(ranked[0].position_mm, near) < 3.0 and best is ranked[0]
    s_near = ranked[0].score
    s_far = max(c.score for c in ranked if M._dist(c.position_mm, far) < 3.0)
    assert s_near < s_far
    best, _ = M.mine_study(hu, grid, pred, ref, min_score=(s_near + s_far) / 2, rank_weights=w)
    assert best is None
