"""The analytic torso phantom: anatomy HU, soft-edged shapes, lesion placement, noise."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lesiondb.synth import phantom
from lesiondb.synth.phantom import Anatomy, LesionShape, SliceGeometry, Transform, add_noise, render_volume


def _anatomy(seed: int = 3) -> Anatomy:
    return Anatomy.random(np.random.default_rng(seed))


def _geometry(an: Anatomy, t_levels, size: int = 256, spacing: float = 1.6) -> SliceGeometry:
    zs = [float(an.z_of_t(t)) for t in t_levels]
    step = zs[0] - zs[1] if len(zs) > 1 else 5.0
    half = 0.5 * (size - 1) * spacing
    _, cy, _, _, _, _ = an.section1(float(np.mean(t_levels)))
    return SliceGeometry(size, size, spacing, spacing, -half, cy - half, zs[0], step, len(zs))


def _px(an: Anatomy, g: SliceGeometry, u: float, v: float, t: float) -> tuple[int, int]:
    x, y, _ = an.to_mm(u, v, t)
    return int(round((x - g.x0_mm) / g.spacing_x_mm)), int(round((y - g.y0_mm) / g.spacing_y_mm))


def test_organs_have_their_tissue_hu_at_their_centres():
    an = _anatomy()
    contrast = 0.8
    for organ, tissue in [("liver", "liver"), ("lung_r", "lung"), ("lung_l", "lung"),
                          ("kidney_r", "kidney"), ("spleen", "spleen")]:
        uc, vc, _, _, tc, _, _, _ = an.organs[organ]
        u = uc + (0.08 if organ.startswith("kidney") else 0.0) * (-1 if uc < 0 else 1)  # lateral of the sinus
        if tissue == "lung":
            tc = 0.47  # the widest level is the base, where the liver dome rises into the right side
        g = _geometry(an, [tc])
        vol = render_volume(an, g, Transform(), contrast)
        col, row = _px(an, g, u, vc, tc)
        assert vol[0, row, col] == pytest.approx(an.hu(tissue, contrast), abs=1.0), organ
    # Air outside the body, fat just inside its outline.
    g = _geometry(an, [0.62])
    vol = render_volume(an, g, Transform(), contrast)
    assert vol[0, 0, 0] == -1000.0
    _, _, a_in, b_in, a_out, b_out = an.section1(0.62)
    u_fat = (a_in + 0.5 * (a_out - a_in)) / a_in
    col, row = _px(an, g, u_fat, 0.0, 0.62)
    assert vol[0, row, col] == pytest.approx(an.hu("fat", contrast), abs=2.0)


def test_body_outline_matches_section_geometry():
    """The rendered body's half-width equals the analytic outer semi-axis (soft edge at α=0.5)."""
    an = _anatomy(5)
    t = 0.66
    g = _geometry(an, [t], spacing=1.5)
    vol = render_volume(an, g, Transform(), 0.7)
    _, cy, _, _, a_out, b_out = an.section1(t)
    row = int(round((cy - g.y0_mm) / g.spacing_y_mm))
    body = np.flatnonzero(vol[0, row] > -550.0)
    width_mm = (body[-1] - body[0] + 1) * g.spacing_x_mm
    assert width_mm == pytest.approx(2 * a_out, abs=2 * g.spacing_x_mm)


def test_lung_top_is_above_liver_and_pelvis_below():
    """Anatomy along z: lungs in the chest, liver below the lung apex, bladder in the pelvis."""
    an = _anatomy(1)
    lung = an.organs["lung_r"]
    liver = an.organs["liver"]
    bladder = an.organs["bladder"]
    assert lung[4] - lung[5] < liver[4] - liver[5] < bladder[4] - bladder[5]


def test_lesion_soft_edge_extent_equals_semi_axis():
    g = SliceGeometry(128, 128, 1.0, 1.0, 0.0, 0.0, 0.0, 2.0, 5)
    vol = np.zeros((5, 128, 128), np.float32)
    les = LesionShape((64.3, 60.7, -4.0), (20.0, 9.0, 3.0), math.radians(30), ((1.0, 100.0),))
    phantom._paint_lesion(vol, g, les)
    key = vol[2]  # the slice through the centre (z = -4)
    ys, xs = np.nonzero(key >= 50.0)  # α ≥ 0.5
    d = np.array([math.cos(math.radians(30)), math.sin(math.radians(30))])
    proj = (xs - 64.3) * d[0] + (ys - 60.7) * d[1]
    assert proj.max() - proj.min() == pytest.approx(40.0, abs=2.0)
    perp = -(xs - 64.3) * d[1] + (ys - 60.7) * d[0]
    assert perp.max() - perp.min() == pytest.approx(18.0, abs=2.0)
    # Off-centre slices are smaller (ellipsoid), and beyond c the lesion is absent.
    assert (vol[1] >= 50).sum() < (vol[2] >= 50).sum()
    assert (vol[0] > 1).sum() == 0 and (vol[4] > 1).sum() == 0


def test_large_ellipse_fast_path_matches_direct_blend(monkeypatch):
    an = _anatomy(8)
    g = _geometry(an, np.linspace(0.45, 0.7, 12))
    fast = render_volume(an, g, Transform(1.01, 2.0, -3.0, 5.0), 0.9)
    monkeypatch.setattr(phantom, "_BIG_PX", 1e9)
    slow = render_volume(an, g, Transform(1.01, 2.0, -3.0, 5.0), 0.9)
    assert np.abs(fast - slow).max() < 0.01


def test_study_transform_moves_the_anatomy():
    an = _anatomy(2)
    g = _geometry(an, np.linspace(0.55, 0.65, 6))
    a = render_volume(an, g, Transform(), 0.8)
    b = render_volume(an, g, Transform(1.0, 6.0, 0.0, 0.0), 0.8)  # 6 mm to the patient's left
    shift = 6.0 / g.spacing_x_mm
    # The body's left edge on the middle row moves by the shift.
    row = g.rows // 2
    ea = np.flatnonzero(a[3, row] > -550)[-1]
    eb = np.flatnonzero(b[3, row] > -550)[-1]
    assert eb - ea == pytest.approx(shift, abs=1.0)


@pytest.mark.parametrize("type_code,organ", [(4, "liver"), (5, None), (6, None)])
def test_place_lesion_lands_in_its_organ(type_code, organ):
    an = _anatomy(4)
    rng = np.random.default_rng(0)
    for _ in range(40):
        target = tuple(rng.uniform(0, 1, 3))
        u, v, t = an.place_lesion(type_code, target, 5.0, rng)
        name = organ or ({5: "lung", 6: "kidney"}[type_code] + ("_r" if u < 0 else "_l"))
        assert an.inside(name, u, v, t), (type_code, target, (u, v, t))


def test_place_bone_and_wall_lesions():
    an = _anatomy(6)
    rng = np.random.default_rng(1)
    for _ in range(30):
        u, v, t = an.place_lesion(1, (0.5, 0.65, rng.uniform(0.3, 0.7)), 6.0, rng)
        # Near the vertebral body (the nearest bone for a central, posterior target).
        _, _, a_in, b_in, _, _ = an.section1(t)
        vb_v = float(an.spine_v(t))
        assert math.hypot(u * a_in, (v - vb_v) * b_in) < an.spine_radius_mm
    for _ in range(30):
        u, v, t = an.place_lesion(7, tuple(rng.uniform(0, 1, 3)), 6.0, rng)
        _, _, a_in, _, a_out, _ = an.section1(t)
        # In the body wall: between the cavity and the skin.
        assert 1.0 - (an.wall_mm + 1) / a_in < math.hypot(u, v) < 1.0 + (a_out - a_in + 1) / a_in


def test_noise_has_requested_sigma_and_is_deterministic():
    vol = np.zeros((8, 128, 128), np.float32)
    add_noise(vol, 15.0, np.random.default_rng(3))
    assert vol.std() == pytest.approx(15.0, rel=0.1)
    again = np.zeros_like(vol)
    add_noise(again, 15.0, np.random.default_rng(3))
    assert np.array_equal(vol, again)
    # Neighbouring pixels are correlated (smoothed noise), distant ones are not.
    a, b = vol[:, :, :-1].ravel(), vol[:, :, 1:].ravel()
    assert 0.3 < np.corrcoef(a, b)[0, 1] < 0.95
