"""An analytic CT torso phantom and lesion renderer (numpy only).

Frames and units
----------------
* **Normalised anatomy** ``(u, v, t)``: ``t`` is the position along the body, head (0) → feet (1),
  on DeepLesion's normalised-z scale (lungs ≈ 0.35–0.6, liver ≈ 0.55–0.68, pelvis ≈ 0.72–0.9);
  ``u`` runs from the patient's right (−1) to left (+1) and ``v`` from anterior (−1) to posterior
  (+1), both relative to the *inner* body wall (muscle boundary, fat excluded) at that level.
* **Anatomical mm** ``(x, y, z)``: DICOM LPS orientation (+x patient left, +y posterior, +z head),
  ``z = H (t_ref − t)`` with ``H`` the patient's length scale; the back lies on the table plane.
* **Scan mm**: per study, anatomical mm under a similarity transform (scale ``s``, shift ``d``) —
  table position and breathing differ between a patient's studies, so follow-ups do not align.

Everything is an ellipse or ellipsoid with a soft (≈1 px) edge, painted in a fixed order into
a float32 HU volume; each shape is evaluated only inside its bounding sub-box, over all slices at
once, so a 256×256×40 study renders in tens of milliseconds.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Posterior body surface (table top) in anatomical y, mm.
TABLE_Y_MM = 150.0
#: Normalised z of the anatomical origin (z = 0 mm).
T_REF = 0.6

# Inner (muscle-boundary) half-width A and half-depth B of the body, mm, along t (before the
# patient's scale): neck, shoulders, thorax, abdomen, pelvis, upper thighs.
_KNOT_T = np.array([0.00, 0.20, 0.28, 0.33, 0.38, 0.46, 0.54, 0.60, 0.68, 0.76, 0.84, 0.92, 1.00])
_KNOT_A = np.array([68.0, 60.0, 58.0, 122.0, 140.0, 146.0, 142.0, 136.0, 132.0, 140.0, 150.0, 146.0, 140.0])
_KNOT_B = np.array([78.0, 60.0, 58.0, 86.0, 96.0, 100.0, 98.0, 95.0, 92.0, 90.0, 88.0, 85.0, 80.0])
#: Body cavity (inside the muscle wall) exists between these levels; above is the neck.
CAVITY_T = (0.33, 0.97)
THORAX_BOTTOM_T = 0.555

# HU of each tissue: (unenhanced HU, extra HU at full portal-venous contrast).
TISSUE_HU: dict[str, tuple[float, float]] = {
    "air": (-1000.0, 0.0),
    "fat": (-100.0, 0.0),
    "visceral_fat": (-92.0, 0.0),
    "muscle": (45.0, 12.0),
    "lung": (-860.0, 0.0),
    "blood": (40.0, 140.0),
    "heart": (40.0, 110.0),
    "liver": (55.0, 55.0),
    "spleen": (50.0, 70.0),
    "kidney": (35.0, 150.0),
    "renal_sinus": (-60.0, 0.0),
    "bowel": (20.0, 30.0),
    "stomach": (15.0, 0.0),
    "bladder": (8.0, 0.0),
    "soft": (40.0, 15.0),
    "cortical": (800.0, 0.0),
    "trabecular": (240.0, 0.0),
    "disc": (80.0, 0.0),
    "csf": (15.0, 0.0),
    "posterior_bone": (450.0, 0.0),
    "rib": (550.0, 0.0),
}

# Ellipsoids in normalised anatomy: (u_c, v_c, semi_u, semi_v, t_c, semi_t_up, semi_t_down, tissue).
ORGANS: dict[str, tuple[float, float, float, float, float, float, float, str]] = {
    "lung_r": (-0.52, 0.05, 0.36, 0.80, 0.545, 0.20, 0.05, "lung"),
    "lung_l": (0.54, 0.08, 0.33, 0.78, 0.545, 0.20, 0.05, "lung"),
    "heart": (0.12, -0.25, 0.36, 0.42, 0.52, 0.05, 0.035, "heart"),
    "liver": (-0.42, -0.02, 0.50, 0.80, 0.585, 0.05, 0.095, "liver"),
    "spleen": (0.60, 0.35, 0.22, 0.35, 0.59, 0.04, 0.04, "spleen"),
    "stomach": (0.33, -0.30, 0.25, 0.30, 0.585, 0.035, 0.04, "stomach"),
    "kidney_r": (-0.45, 0.38, 0.17, 0.25, 0.66, 0.055, 0.055, "kidney"),
    "kidney_l": (0.45, 0.38, 0.17, 0.25, 0.655, 0.055, 0.055, "kidney"),
    "psoas_r": (-0.22, 0.52, 0.12, 0.14, 0.765, 0.09, 0.09, "muscle"),
    "psoas_l": (0.22, 0.52, 0.12, 0.14, 0.765, 0.09, 0.09, "muscle"),
    "bladder": (0.0, -0.45, 0.30, 0.35, 0.86, 0.05, 0.05, "bladder"),
}
# Renal sinus fat inside each kidney, medial.
SINUS_SHIFT_U = 0.07
# Axial cylinders: (u_c, v_c, radius_mm, t_top, t_bottom, tissue).
VESSELS: dict[str, tuple[float, float, float, float, float, str]] = {
    "trachea": (0.0, 0.0, 9.0, 0.15, 0.43, "air"),
    "esophagus": (0.05, 0.32, 6.0, 0.20, 0.56, "soft"),
    "asc_aorta": (0.0, -0.20, 14.0, 0.40, 0.49, "blood"),
    "pulm_trunk": (0.17, -0.28, 13.0, 0.44, 0.49, "blood"),
    "svc": (-0.16, -0.15, 10.0, 0.38, 0.48, "blood"),
    "desc_aorta": (0.11, 0.40, 11.0, 0.40, 0.76, "blood"),
    "ivc": (-0.12, 0.33, 11.0, 0.55, 0.78, "blood"),
    "rectum": (0.0, 0.58, 15.0, 0.80, 0.95, "bowel"),
}

#: Lesion types' plausible regions (ellipsoids in normalised anatomy, or a named organ).
#: Each entry: (u_c, v_c, semi_u, semi_v, t_c, semi_t_up, semi_t_down).
REGIONS: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "abdomen": (0.08, 0.05, 0.55, 0.60, 0.645, 0.07, 0.085),
    "mediastinum": (0.0, -0.12, 0.20, 0.45, 0.455, 0.10, 0.10),
    "pelvis": (0.0, 0.0, 0.50, 0.55, 0.80, 0.075, 0.075),
}
#: Organs a lesion of a region must not sit in (they are painted over the region).
AVOID: dict[str, tuple[str, ...]] = {
    "liver": ("kidney_r", "stomach"),
    "lung_r": ("liver", "heart", "wall"),
    "lung_l": ("heart", "spleen", "stomach", "wall"),
    "abdomen": ("liver", "kidney_r", "kidney_l", "spleen", "stomach", "wall", "ivc", "desc_aorta"),
    "mediastinum": ("heart", "lung_r", "lung_l", "asc_aorta", "pulm_trunk", "svc", "desc_aorta",
                    "trachea", "esophagus"),
    "pelvis": ("bladder", "wall"),
}
#: Largest long diameter (mm) rendered per type (DeepLesion's extremes do not fit the organs).
MAX_LONG_MM = {1: 40.0, 2: 100.0, 3: 60.0, 4: 100.0, 5: 60.0, 6: 60.0, 7: 80.0, 8: 100.0}
MIN_LONG_MM = 3.0
#: Ellipses with both semi-axes at least this many pixels get their interior filled directly.
_BIG_PX = 12.0


def _interp(t: np.ndarray | float, knots: np.ndarray) -> np.ndarray:
    return np.interp(t, _KNOT_T, knots)


_KT = [float(v) for v in _KNOT_T]
KNOTS_T = tuple(_KT)
_KA = [float(v) for v in _KNOT_A]
_KB = [float(v) for v in _KNOT_B]


def _interp1(t: float, ys: list[float]) -> float:
    """Scalar np.interp on the body knots (planning calls this a lot)."""
    if t <= _KT[0]:
        return ys[0]
    if t >= _KT[-1]:
        return ys[-1]
    i = bisect.bisect_right(_KT, t) - 1
    f = (t - _KT[i]) / (_KT[i + 1] - _KT[i])
    return ys[i] + f * (ys[i + 1] - ys[i])


def clamp(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else v


@dataclass
class Anatomy:
    """One patient's torso: size, fat, organ placement and tissue HU (anatomical frame)."""

    height_mm: float
    width_scale: float
    depth_scale: float
    fat_mm: float
    wall_mm: float
    spine_radius_mm: float
    disc_period_mm: float
    rib_phase_mm: float
    organs: dict[str, tuple[float, ...]] = field(default_factory=dict)
    hu_offset: dict[str, float] = field(default_factory=dict)
    texture_seed: int = 0
    _textures: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    # ----------------------------------------------------------------------------- creation
    @classmethod
    def random(cls, rng: np.random.Generator) -> Anatomy:
        organs: dict[str, tuple[float, ...]] = {}
        jit = rng.normal(0.0, 1.0, (len(ORGANS), 4)).tolist()
        for (name, (uc, vc, su, sv, tc, stu, std, tissue)), (j0, j1, j2, j3) in zip(ORGANS.items(), jit, strict=True):
            k = clamp(1.0 + 0.06 * j0, 0.85, 1.15)
            organs[name] = (uc + 0.025 * j1, vc + 0.025 * j2, su * k, sv * k, tc + 0.006 * j3,
                            stu * k, std * k, tissue)
        hz = rng.normal(0.0, 1.0, 6).tolist()
        hu_offset = {"lung": 25 * hz[0], "liver": 7 * hz[1], "fat": 8 * hz[2], "muscle": 5 * hz[3],
                     "spleen": 6 * hz[4], "kidney": 8 * hz[5]}
        size = clamp(rng.normal(1.0, 0.07), 0.86, 1.15)
        aspect = clamp(rng.normal(1.0, 0.05), 0.9, 1.1)
        fat = float(rng.uniform(5.0, 35.0))
        return cls(
            height_mm=clamp(rng.normal(1000.0, 45.0), 880.0, 1120.0),
            width_scale=size * aspect,
            depth_scale=size / aspect * (1.0 + 0.004 * (fat - 20.0)),
            fat_mm=fat,
            wall_mm=float(rng.uniform(9.0, 15.0)),
            spine_radius_mm=float(rng.uniform(15.0, 21.0)),
            disc_period_mm=float(rng.uniform(26.0, 32.0)),
            rib_phase_mm=float(rng.uniform(0.0, 24.0)),
            organs=organs, hu_offset=hu_offset, texture_seed=int(rng.integers(0, 2**62)),
        )

    def textures(self) -> tuple[np.ndarray, np.ndarray]:
        """Bowel loops ``(u, v, t, rx, ry, rz mm, has_air)`` and lung vessels ``(u, v, t0, t1,
        r mm)``: only rendering needs them, so they come from their own seed, on demand."""
        if self._textures is None:
            rng = np.random.default_rng(self.texture_seed)
            n_bowel = int(rng.integers(22, 36))
            bowel = np.column_stack([
                rng.uniform(-0.55, 0.65, n_bowel), rng.uniform(-0.75, 0.35, n_bowel),
                rng.uniform(0.60, 0.86, n_bowel), rng.uniform(9, 19, n_bowel), rng.uniform(8, 17, n_bowel),
                rng.uniform(12, 30, n_bowel), (rng.random(n_bowel) < 0.15).astype(float)])
            # Lung vessels: short axial segments inside the lungs (dots on axial slices).
            n_ves = int(rng.integers(30, 46))
            ves_side = np.where(rng.random(n_ves) < 0.5, -1.0, 1.0)
            ang = rng.uniform(0, 2 * np.pi, n_ves)
            rad = np.sqrt(rng.uniform(0.05, 0.7, n_ves))
            t_mid = rng.uniform(0.40, 0.56, n_ves)
            vessels = np.column_stack([
                ves_side * 0.48 + 0.38 * rad * np.cos(ang), 0.06 + 0.72 * rad * np.sin(ang),
                t_mid - rng.uniform(0.01, 0.04, n_ves), t_mid + rng.uniform(0.01, 0.04, n_ves),
                rng.uniform(1.2, 3.2, n_ves) * (1.3 - rad)])
            self._textures = (bowel, vessels)
        return self._textures

    # ------------------------------------------------------------------------------ geometry
    def z_of_t(self, t: Any) -> Any:
        if isinstance(t, float):
            return self.height_mm * (T_REF - t)
        return self.height_mm * (T_REF - np.asarray(t, dtype=float))

    def t_of_z(self, z: Any) -> Any:
        if isinstance(z, float):
            return T_REF - z / self.height_mm
        return T_REF - np.asarray(z, dtype=float) / self.height_mm

    def fat_at(self, t: Any) -> np.ndarray:
        return self.fat_mm * np.interp(t, [0.0, 0.28, 0.34, 1.0], [0.4, 0.4, 1.0, 1.0])

    def section(self, t: Any) -> tuple[Any, ...]:
        """Body at level(s) ``t``: centre x, centre y, inner A, inner B, outer A, outer B (mm)."""
        if isinstance(t, (float, int)):
            return self.section1(float(t))
        t = np.asarray(t, dtype=float)
        a_in = _interp(t, _KNOT_A) * self.width_scale
        b_in = _interp(t, _KNOT_B) * self.depth_scale
        fat = self.fat_at(t)
        a_out, b_out = a_in + fat, b_in + 1.15 * fat
        cy = TABLE_Y_MM - b_out
        return np.zeros_like(t), cy, a_in, b_in, a_out, b_out

    def section1(self, t: float) -> tuple[float, ...]:
        """:meth:`section` for one level, in plain floats."""
        a_in = _interp1(t, _KA) * self.width_scale
        b_in = _interp1(t, _KB) * self.depth_scale
        fat = self.fat_mm * (0.4 if t <= 0.28 else 1.0 if t >= 0.34 else 0.4 + 0.6 * (t - 0.28) / 0.06)
        a_out, b_out = a_in + fat, b_in + 1.15 * fat
        return 0.0, TABLE_Y_MM - b_out, a_in, b_in, a_out, b_out

    def to_mm(self, u: float, v: float, t: float) -> tuple[float, float, float]:
        cx, cy, a_in, b_in, _, _ = self.section(t)
        return float(cx + u * a_in), float(cy + v * b_in), float(self.z_of_t(t))

    def max_half_extent_mm(self) -> tuple[float, float]:
        """Largest outer half-width and half-depth over the body (piecewise linear in t, so the
        maxima lie on the knots)."""
        secs = [self.section1(tk) for tk in (*_KT, 0.28, 0.34)]
        return max(s[4] for s in secs), max(s[5] for s in secs)

    def hu(self, tissue: str, contrast: float) -> float:
        base, enh = TISSUE_HU[tissue]
        return base + contrast * enh + self.hu_offset.get(tissue, 0.0)

    def organ_semi_mm(self, name: str, t: float) -> tuple[float, float, float]:
        """Semi-axes in mm of an organ's cross-section at its centre level (u, v, and t)."""
        uc, vc, su, sv, tc, stu, std, _ = self.organs[name]
        _, _, a_in, b_in, _, _ = self.section(tc)
        return float(su * a_in), float(sv * b_in), float(min(stu, std) * self.height_mm)

    # ------------------------------------------------------------------------- lesion regions
    def place_lesion(self, type_code: int, target: tuple[float, float, float], radius_mm: float,
                     rng: np.random.Generator) -> tuple[float, float, float]:
        """A plausible lesion centre ``(u, v, t)`` for ``type_code`` near a normalised DeepLesion
        location ``target`` (x, y, z in [0, 1], relative to the *outer* body), keeping a lesion of
        ``radius_mm`` inside its organ where the organ is big enough."""
        lx, ly, lz = (min(1.0, max(0.0, float(v))) for v in target)
        t = lz
        _, _, a_in, b_in, a_out, b_out = self.section(t)
        u = (2 * lx - 1) * float(a_out / a_in)
        v = (2 * ly - 1) * float(b_out / b_in)
        if type_code == 4:
            return self._project_organ("liver", u, v, t, radius_mm, rng, avoid=AVOID["liver"])
        if type_code == 5:
            lung = "lung_r" if u < 0 else "lung_l"
            return self._project_organ(lung, u, v, t, radius_mm, rng, avoid=AVOID[lung])
        if type_code == 6:
            return self._project_organ("kidney_r" if u < 0 else "kidney_l", u, v, t, radius_mm, rng,
                                       min_r=0.35)
        if type_code in (2, 3, 8):
            name = {2: "abdomen", 3: "mediastinum", 8: "pelvis"}[type_code]
            return self._project(REGIONS[name], u, v, t, radius_mm, rng, avoid=AVOID[name])
        if type_code == 1:
            return self._place_bone(u, v, t, radius_mm, rng)
        return self._place_wall(u, v, t, radius_mm, rng)  # 7 soft tissue (and anything else)

    def inside(self, name: str, u: float, v: float, t: float, margin_mm: float = 0.0) -> bool:
        """Whether ``(u, v, t)`` lies in organ ``name`` grown by ``margin_mm``; ``"wall"``: in
        the body wall (muscle, ribs) or within ``margin_mm`` + 5 mm of it."""
        if name == "wall":
            _, _, a_in, b_in, _, _ = self.section1(t)
            d = self.wall_mm + margin_mm + 5.0
            return (u * a_in / max(a_in - d, 1.0)) ** 2 + (v * b_in / max(b_in - d, 1.0)) ** 2 >= 1.0
        if name in VESSELS:
            uc, vc, r_mm, t0, t1, _ = VESSELS[name]
            if not (t0 <= t <= t1):
                return False
            _, _, a_in, b_in, _, _ = self.section1(t)
            return math.hypot((u - uc) * a_in, (v - vc) * b_in) < r_mm + margin_mm
        uc, vc, su, sv, tc, stu, std, _ = self.organs[name]
        d = (t - tc) / (stu if t < tc else std)
        if d * d >= 1.0:
            # Beyond the organ's ends: within the margin only if close along z.
            st_mm = (stu if t < tc else std) * self.height_mm
            return abs(t - tc) * self.height_mm < st_mm + margin_mm and margin_mm > 0 and \
                ((u - uc) / su) ** 2 + ((v - vc) / sv) ** 2 < 0.25
        f = math.sqrt(1.0 - d * d)
        _, _, a_in, b_in, _, _ = self.section1(t)
        ru = su * f * a_in + margin_mm
        rv = sv * f * b_in + margin_mm
        return ((u - uc) * a_in / ru) ** 2 + ((v - vc) * b_in / rv) ** 2 < 1.0

    def _project_organ(self, name: str, u: float, v: float, t: float, radius_mm: float,
                       rng: np.random.Generator, min_r: float = 0.15,
                       avoid: tuple[str, ...] = ()) -> tuple[float, float, float]:
        uc, vc, su, sv, tc, stu, std, _ = self.organs[name]
        return self._project((uc, vc, su, sv, tc, stu, std), u, v, t, radius_mm, rng, min_r, avoid)

    def _project(self, spec: tuple[float, ...], u: float, v: float, t: float, radius_mm: float,
                 rng: np.random.Generator, min_r: float = 0.15,
                 avoid: tuple[str, ...] = ()) -> tuple[float, float, float]:
        """Move ``(u, v, t)`` into the region ellipsoid ``spec`` (with a margin for the lesion's
        radius), then, if it falls into an organ of ``avoid``, try random points of the region
        nearer its centre."""
        uc, vc, su, sv, tc, stu, std = spec[:7]
        st = stu if t < tc else std
        _, _, a_in, b_in, _, _ = self.section1(tc)
        semi_mm = min(su * a_in, sv * b_in, st * self.height_mm)
        r_max = clamp(1.0 - radius_mm / max(semi_mm, 1e-3), min_r, 0.85)
        q0, q1, q2 = (u - uc) / su, (v - vc) / sv, (t - tc) / st
        r = math.sqrt(q0 * q0 + q1 * q1 + q2 * q2)
        if r > r_max:
            k = r_max * rng.uniform(0.75, 1.0) / r
            q0, q1, q2 = q0 * k, q1 * k, q2 * k
        best, best_hits = None, 1 << 30
        for attempt in range(24):
            t_new = tc + q2 * (stu if q2 < 0 else std)
            u_new, v_new = uc + q0 * su, vc + q1 * sv
            margin = 0.5 * radius_mm
            hits = sum(self.inside(o, u_new, v_new, t_new, margin) for o in avoid)
            if hits == 0:
                return float(u_new), float(v_new), float(t_new)
            if hits < best_hits:
                best, best_hits = (float(u_new), float(v_new), float(t_new)), hits
            # A random point of the region, shrinking towards its centre as attempts fail.
            d = rng.normal(0.0, 1.0, 3)
            d /= max(float(np.linalg.norm(d)), 1e-9)
            rad = r_max * rng.uniform(0.0, 1.0) ** (1 / 3) * (1.0 - attempt / 30)
            q0, q1, q2 = (float(x) * rad for x in d)
        return best  # type: ignore[return-value]

    def _place_bone(self, u: float, v: float, t: float, radius_mm: float,
                    rng: np.random.Generator) -> tuple[float, float, float]:
        _, _, a_in, b_in, _, _ = self.section(t)
        vb_v = self.spine_v(t)
        cands = [("spine", 0.0, vb_v, clamp(t, 0.30, 0.75))]
        if 0.70 < t < 0.86 or abs(u) > 0.35:
            for s in (-1, 1):
                cands.append(("ilium", s * 0.58, 0.30, clamp(t, 0.735, 0.83)))
        if t > 0.84:
            for s in (-1, 1):
                cands.append(("femur", s * 0.60, 0.0, clamp(t, 0.875, 0.915)))
        if t < 0.6 and abs(u) > 0.3:
            ang = math.atan2(v, u)
            rho = 1.0 - 0.5 * self.wall_mm / float(a_in)
            cands.append(("rib", rho * math.cos(ang), rho * math.sin(ang), clamp(t, 0.37, 0.58)))
        best = min(cands, key=lambda c: (c[1] - u) ** 2 + (c[2] - v) ** 2 + (4 * (c[3] - t)) ** 2)
        _, bu, bv, bt = best
        jit = 0.3 * self.spine_radius_mm / float(a_in)
        return bu + rng.uniform(-jit, jit), bv + rng.uniform(-jit, jit), bt

    def _place_wall(self, u: float, v: float, t: float, radius_mm: float,
                    rng: np.random.Generator) -> tuple[float, float, float]:
        t = clamp(t, 0.15, 0.96)
        _, _, a_in, b_in, a_out, b_out = self.section(t)
        ang = math.atan2(v, u) if (u or v) else rng.uniform(-math.pi, math.pi)
        if rng.random() < 0.6:  # subcutaneous fat (most soft-tissue lesions are seen there)
            depth = float(self.fat_at(t)) * 0.5
        else:  # inside the muscle wall
            depth = -0.5 * self.wall_mm
        rho_u = 1.0 + depth / float(a_in)
        rho_v = 1.0 + depth / float(b_in)
        return rho_u * math.cos(ang), rho_v * math.sin(ang), t

    def spine_v(self, t: Any) -> Any:
        return np.where(np.asarray(t) < THORAX_BOTTOM_T, 0.60, 0.52)


# ------------------------------------------------------------------------------ rendering
@dataclass(frozen=True)
class SliceGeometry:
    """Axial series geometry: slice k centre is at z_first − k·interval; pixel (col, row) at
    (x0 + col·sx, y0 + row·sy)."""

    rows: int
    cols: int
    spacing_x_mm: float
    spacing_y_mm: float
    x0_mm: float
    y0_mm: float
    z_first_mm: float
    interval_mm: float
    n_slices: int

    def z_mm(self) -> np.ndarray:
        return self.z_first_mm - np.arange(self.n_slices) * self.interval_mm


@dataclass(frozen=True)
class Transform:
    """Anatomical mm → scan mm: ``p_scan = scale · p_anat + (dx, dy, dz)``."""

    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    dz: float = 0.0

    def apply(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        return self.scale * x + self.dx, self.scale * y + self.dy, self.scale * z + self.dz

    def z_to_anat(self, z_scan: Any) -> Any:
        if isinstance(z_scan, float):
            return (z_scan - self.dz) / self.scale
        return (np.asarray(z_scan) - self.dz) / self.scale


@dataclass(frozen=True)
class LesionShape:
    """One lesion instance in scan mm: ellipsoid centre, semi-axes, in-plane angle, HU layers."""

    center_mm: tuple[float, float, float]
    semi_mm: tuple[float, float, float]  # in-plane long, in-plane short, along z
    angle_rad: float  # long axis angle from +x (towards +y)
    layers: tuple[tuple[float, float], ...]  # (relative scale, HU), outermost first


class _Painter:
    """Paints soft-edged ellipse stacks into a (slices, rows, cols) float32 volume."""

    def __init__(self, vol: np.ndarray, geom: SliceGeometry, edge_px: float = 1.0):
        self.vol = vol
        self.g = geom
        self.edge = edge_px
        self.cols = np.arange(geom.cols, dtype=np.float32)
        self.rows = np.arange(geom.rows, dtype=np.float32)

    def ellipses(self, k0: int, cx: np.ndarray, cy: np.ndarray, ax: np.ndarray, ay: np.ndarray,
                 hu: Any, angle: float = 0.0, weight: np.ndarray | None = None) -> None:
        """Slices k0 … k0+len(cx)−1; centres/semi-axes in pixels per slice; HU scalar or per slice."""
        n = len(cx)
        if n == 0:
            return
        ok = (ax > 0.05) & (ay > 0.05)
        if weight is not None:
            ok &= weight > 0
        if not ok.any():
            return
        first, last = int(np.argmax(ok)), int(n - 1 - np.argmax(ok[::-1]))
        sl = slice(first, last + 1)
        cx, cy, ax, ay = cx[sl], cy[sl], np.maximum(ax[sl], 0.05), np.maximum(ay[sl], 0.05)
        w = ok[sl].astype(np.float32) if weight is None else (weight[sl] * ok[sl]).astype(np.float32)
        k0 = k0 + first
        ext = np.maximum(ax, ay) if angle else None
        ex, ey = (ext, ext) if angle else (ax, ay)
        c0 = max(0, int(math.floor(float(np.min(cx - ex)))) - 2)
        c1 = min(self.g.cols, int(math.ceil(float(np.max(cx + ex)))) + 3)
        r0 = max(0, int(math.floor(float(np.min(cy - ey)))) - 2)
        r1 = min(self.g.rows, int(math.ceil(float(np.max(cy + ey)))) + 3)
        if c0 >= c1 or r0 >= r1:
            return
        m = len(cx)
        sub = self.vol[k0:k0 + m, r0:r1, c0:c1]
        cx32 = cx.astype(np.float32)[:, None, None]
        cy32 = cy.astype(np.float32)[:, None, None]
        ax32 = ax.astype(np.float32)[:, None, None]
        ay32 = ay.astype(np.float32)[:, None, None]
        hu_arr = np.asarray(hu, dtype=np.float32)
        if hu_arr.ndim:
            hu_arr = hu_arr[sl][:, None, None]
        w32 = None if bool(np.all(w == 1.0)) else w[:, None, None]
        big = not angle and w32 is None and float(min(ax.min(), ay.min())) >= _BIG_PX
        if not big:
            self._blend(sub, r0, c0, r0, r1, c0, c1, cx32, cy32, ax32, ay32, hu_arr, angle, w32)
            return
        # Large ellipse: fill the interior (α = 1) directly, blend only the edge band. Rows are
        # grouped in bands; each band's interior column range holds for all its rows and slices.
        rows = np.arange(r0, r1, dtype=float)
        dyn = (np.abs(rows[None, :] - cy[:, None]) + 1.5) / ay[:, None]
        half = ax[:, None] * np.sqrt(np.clip(1.0 - dyn * dyn, 0.0, None)) - 1.5
        lo = np.ceil(np.max(cx[:, None] - half, axis=0)).astype(int)
        hi = np.floor(np.min(cx[:, None] + half, axis=0)).astype(int)
        lo = np.where(np.min(half, axis=0) > 0, lo, c1)
        edges = np.linspace(r0, r1, 17).astype(int)
        for ra, rb in zip(edges[:-1], edges[1:], strict=True):
            if rb <= ra:
                continue
            a = max(c0, int(lo[ra - r0:rb - r0].max()))
            b = min(c1 - 1, int(hi[ra - r0:rb - r0].min()))
            if b < a:
                self._blend(sub, r0, c0, ra, rb, c0, c1, cx32, cy32, ax32, ay32, hu_arr, 0.0, None)
                continue
            sub[:, ra - r0:rb - r0, a - c0:b + 1 - c0] = hu_arr
            if a > c0:
                self._blend(sub, r0, c0, ra, rb, c0, a, cx32, cy32, ax32, ay32, hu_arr, 0.0, None)
            if b + 1 < c1:
                self._blend(sub, r0, c0, ra, rb, b + 1, c1, cx32, cy32, ax32, ay32, hu_arr, 0.0, None)

    def _blend(self, sub, r0, c0, ra, rb, ca, cb, cx32, cy32, ax32, ay32, hu_arr, angle, w32) -> None:
        """Soft-edged composite of the ellipse over rows ra…rb−1, cols ca…cb−1 (absolute)."""
        block = sub[:, ra - r0:rb - r0, ca - c0:cb - c0]
        dx = self.cols[None, None, ca:cb] - cx32
        dy = self.rows[None, ra:rb, None] - cy32
        if angle:
            c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
            dx, dy = c * dx + s * dy, -s * dx + c * dy
        # α = (1 − r)·k + ½ with 1 − r ≈ (1 − r²)/2 inside the ~1 px edge band (no square
        # root), i.e. α = (k/2 + ½) − (k/2)(dx/ax)² − (k/2)(dy/ay)²: the squares are computed on
        # the small per-row / per-column arrays, so the full block needs one add and one subtract.
        k = np.minimum(ax32, ay32) * np.float32(0.5 / self.edge)
        alpha = (k * (dx / ax32) ** 2) + (k * (dy / ay32) ** 2)
        np.subtract(k + np.float32(0.5), alpha, out=alpha)
        np.clip(alpha, 0.0, 1.0, out=alpha)
        if w32 is not None:
            alpha *= w32
        tmp = np.subtract(hu_arr, block, dtype=np.float32)
        tmp *= alpha
        block += tmp


def _ellipsoid_profile(t: np.ndarray, tc: float, st_up: float, st_down: float) -> np.ndarray:
    d = np.where(t < tc, (t - tc) / st_up, (t - tc) / st_down)
    return np.sqrt(np.clip(1.0 - d * d, 0.0, None))


def render_volume(anatomy: Anatomy, geom: SliceGeometry, transform: Transform, contrast: float,
                  lesions: list[LesionShape] = (), noise_hu: float = 0.0,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """The HU volume (slices head first, rows, cols) of one study: anatomy, lesions, noise."""
    g, tr, an = geom, transform, anatomy
    vol = np.full((g.n_slices, g.rows, g.cols), -1000.0, dtype=np.float32)
    p = _Painter(vol, g)
    t = np.asarray(an.t_of_z(tr.z_to_anat(g.z_mm())), dtype=float)
    cx_b, cy_b, a_in, b_in, a_out, b_out = an.section(t)
    s = tr.scale

    def px(x_anat: np.ndarray, y_anat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ((s * x_anat + tr.dx - g.x0_mm) / g.spacing_x_mm,
                (s * y_anat + tr.dy - g.y0_mm) / g.spacing_y_mm)

    sx, sy = s / g.spacing_x_mm, s / g.spacing_y_mm
    hu = lambda name: an.hu(name, contrast)  # noqa: E731

    def uv(u: Any, v: Any) -> tuple[np.ndarray, np.ndarray]:
        return px(cx_b + np.asarray(u) * a_in, cy_b + np.asarray(v) * b_in)

    # Body: fat, muscle wall, cavity.
    ccol, crow = px(cx_b, cy_b)
    p.ellipses(0, ccol, crow, a_out * sx, b_out * sy, hu("fat"))
    p.ellipses(0, ccol, crow, a_in * sx, b_in * sy, hu("muscle"))
    in_cavity = (t >= CAVITY_T[0]) & (t <= CAVITY_T[1])
    ramp = np.clip((t - CAVITY_T[0]) / 0.03, 0, 1) * np.clip((CAVITY_T[1] - t) / 0.02, 0, 1)
    p.ellipses(0, ccol, crow, np.maximum(a_in - an.wall_mm, 1) * sx * ramp,
               np.maximum(b_in - an.wall_mm, 1) * sy * ramp, hu("visceral_fat"),
               weight=in_cavity.astype(float))

    # Bowel loops (abdomen/pelvis), painted before the solid organs so these cover them.
    bowel, lung_vessels = an.textures()
    for bu, bv, bt, brx, bry, brz, air in bowel:
        f = np.sqrt(np.clip(1 - ((an.z_of_t(t) - an.z_of_t(bt)) / brz) ** 2, 0, None))
        bc, br = uv(bu, bv)
        p.ellipses(0, bc, br, brx * f * sx, bry * f * sy, hu("bowel"))  # enhancing wall
        p.ellipses(0, bc, br, (brx * f - 3.0) * sx, (bry * f - 3.0) * sy, -950.0 if air else hu("stomach"))

    def organ(name: str, tissue: str | None = None, du: float = 0.0, scale: float = 1.0) -> None:
        uc, vc, su, sv, tc, stu, std, tis = an.organs[name]
        f = _ellipsoid_profile(t, tc, stu * scale, std * scale) * scale
        oc, orow = uv(uc + du, vc)
        p.ellipses(0, oc, orow, su * f * a_in * sx, sv * f * b_in * sy, hu(tissue or tis))

    for name in ("lung_r", "lung_l", "heart", "liver", "spleen", "stomach", "kidney_r", "kidney_l"):
        organ(name)
    for vu, vv, vt0, vt1, vr in lung_vessels:
        luc, lvc, lsu, lsv, ltc, lstu, lstd, _ = an.organs["lung_r" if vu < 0 else "lung_l"]
        inside = math.hypot((vu - luc) / lsu, (vv - lvc) / lsv) < 0.85 * _ellipsoid_profile(t, ltc, lstu, lstd)
        w = ((t >= vt0) & (t <= vt1) & inside).astype(float)
        if w.any():
            vcol, vrow = uv(vu, vv)
            p.ellipses(0, vcol, vrow, np.full_like(t, vr * sx), np.full_like(t, vr * sy), hu("blood"),
                       weight=w)
    organ("kidney_r", "renal_sinus", du=SINUS_SHIFT_U, scale=0.4)
    organ("kidney_l", "renal_sinus", du=-SINUS_SHIFT_U, scale=0.4)
    for name in ("psoas_r", "psoas_l", "bladder"):
        organ(name)

    for uc, vc, r_mm, t0, t1, tis in VESSELS.values():
        w = ((t >= t0) & (t <= t1)).astype(float)
        vcol, vrow = uv(uc, vc)
        p.ellipses(0, vcol, vrow, np.full_like(t, r_mm * sx), np.full_like(t, r_mm * sy), hu(tis), weight=w)

    _paint_bones(p, an, t, uv, sx, sy, hu, cx_b, cy_b, a_in, b_in, px)

    for les in lesions:
        _paint_lesion(vol, g, les)

    if noise_hu > 0:
        add_noise(vol, noise_hu, rng if rng is not None else np.random.default_rng(0))
    return vol


def _paint_bones(p: _Painter, an: Anatomy, t: np.ndarray, uv, sx: float, sy: float, hu,
                 cx_b, cy_b, a_in, b_in, px) -> None:
    z = an.z_of_t(t)
    r = an.spine_radius_mm
    # Vertebral bodies: cortical shell, trabecular core; discs every disc_period_mm.
    spine_w = ((t >= 0.0) & (t <= 0.76)).astype(float)
    disc = (np.mod(z, an.disc_period_mm) < 7.0)
    vb_v = an.spine_v(t)
    vcol, vrow = px(cx_b, cy_b + vb_v * b_in)
    shell = np.where(disc, hu("disc"), hu("cortical"))
    core = np.where(disc, hu("disc"), hu("trabecular"))
    full = np.full_like(t, 1.0)
    p.ellipses(0, vcol, vrow, full * r * sx, full * r * 0.9 * sy, shell, weight=spine_w)
    p.ellipses(0, vcol, vrow, full * (r - 2.5) * sx, full * (r * 0.9 - 2.5) * sy, core, weight=spine_w)
    # Spinal canal and posterior elements behind the vertebral body.
    canal_y = cy_b + vb_v * b_in + 0.9 * r + 9.0
    pcol, prow = px(cx_b, canal_y + 9.0)
    p.ellipses(0, pcol, prow, full * 20 * sx, full * 10 * sy, hu("posterior_bone"), weight=spine_w)
    ccol, crow = px(cx_b, canal_y)
    p.ellipses(0, ccol, crow, full * 8 * sx, full * 8 * sy, hu("csf"), weight=spine_w)
    # Ribs: small circles on the mid-wall ellipse, present in bands that descend anteriorly.
    rib_w = ((t >= 0.35) & (t <= 0.60)).astype(float)
    for ang_deg in list(range(-70, 71, 17)) + list(range(110, 251, 17)):
        ang = math.radians(ang_deg)
        post = abs(math.sin(ang) - 1.0) * 20.0  # mm, ribs slope down towards the front
        band = (np.mod(z + post + an.rib_phase_mm, 24.0) < 10.0).astype(float) * rib_w
        if not band.any():
            continue
        rho_u = 1.0 - 0.5 * an.wall_mm / a_in
        rho_v = 1.0 - 0.5 * an.wall_mm / b_in
        rc, rr = uv(rho_u * math.cos(ang), rho_v * math.sin(ang))
        p.ellipses(0, rc, rr, full * 5.0 * sx, full * 5.0 * sy, hu("rib"), weight=band)
    # Sternum.
    st_w = ((t >= 0.38) & (t <= 0.55)).astype(float)
    sc, sr = px(cx_b, cy_b - (b_in - 0.5 * an.wall_mm))
    p.ellipses(0, sc, sr, full * 14 * sx, full * 6 * sy, hu("posterior_bone"), weight=st_w)
    # Pelvis: iliac wings, sacrum, femoral heads, pubic bones.
    for side in (-1, 1):
        f = _ellipsoid_profile(t, 0.785, 0.05, 0.05)
        ic, ir = uv(side * 0.58, 0.30)
        p.ellipses(0, ic, ir, 12 * f * sx, 50 * f * sy, hu("cortical") * 0.6, angle=side * 0.6)
        p.ellipses(0, ic, ir, 7 * f * sx, 44 * f * sy, hu("trabecular"), angle=side * 0.6)
        f = _ellipsoid_profile(t, 0.895, 0.03, 0.03)
        fc, fr = uv(side * 0.60, 0.0)
        p.ellipses(0, fc, fr, 22 * f * sx, 22 * f * sy, hu("cortical"))
        p.ellipses(0, fc, fr, 19 * f * sx, 19 * f * sy, hu("trabecular"))
        f = _ellipsoid_profile(t, 0.905, 0.02, 0.02)
        pc, pr = uv(side * 0.15, -0.85)
        p.ellipses(0, pc, pr, 12 * f * sx, 10 * f * sy, hu("posterior_bone"))
    f = _ellipsoid_profile(t, 0.80, 0.045, 0.05)
    sc, sr = uv(0.0, 0.68)
    p.ellipses(0, sc, sr, 40 * f * sx, 15 * f * sy, hu("posterior_bone") * 0.8)


def lesion_bbox_slices(geom: SliceGeometry, les: LesionShape) -> tuple[int, int]:
    z = les.center_mm[2]
    c = les.semi_mm[2]
    k0 = int(math.ceil((geom.z_first_mm - (z + c)) / geom.interval_mm - 1e-9))
    k1 = int(math.floor((geom.z_first_mm - (z - c)) / geom.interval_mm + 1e-9))
    return max(0, k0), min(geom.n_slices - 1, k1)


def _paint_lesion(vol: np.ndarray, g: SliceGeometry, les: LesionShape, edge_px: float = 1.0) -> None:
    """Paint one ellipsoid lesion (all its layers) inside its own bounding sub-box."""
    k0, k1 = lesion_bbox_slices(g, les)
    if k1 < k0:
        return
    xc, yc, zc = les.center_mm
    a, b, c = les.semi_mm
    ccol = (xc - g.x0_mm) / g.spacing_x_mm
    crow = (yc - g.y0_mm) / g.spacing_y_mm
    ext = max(a, b) / min(g.spacing_x_mm, g.spacing_y_mm) + 2.0
    c0, c1 = max(0, int(math.floor(ccol - ext))), min(g.cols, int(math.ceil(ccol + ext)) + 1)
    r0, r1 = max(0, int(math.floor(crow - ext))), min(g.rows, int(math.ceil(crow + ext)) + 1)
    if c0 >= c1 or r0 >= r1:
        return
    sub = vol[k0:k1 + 1, r0:r1, c0:c1]
    xs = (g.x0_mm + np.arange(c0, c1) * g.spacing_x_mm - xc).astype(np.float32)[None, None, :]
    ys = (g.y0_mm + np.arange(r0, r1) * g.spacing_y_mm - yc).astype(np.float32)[None, :, None]
    zs = (g.z_first_mm - np.arange(k0, k1 + 1) * g.interval_mm - zc).astype(np.float32)[:, None, None]
    ca, sa = np.float32(math.cos(les.angle_rad)), np.float32(math.sin(les.angle_rad))
    xr = (ca * xs + sa * ys) / np.float32(a)
    yr = (-sa * xs + ca * ys) / np.float32(b)
    rr = np.sqrt(xr * xr + yr * yr + (zs / np.float32(c)) ** 2)
    # Edge sharpness in radius units: 1 px along the in-plane axes.
    sharp = np.float32(math.sqrt(a * b) / (g.spacing_x_mm * edge_px))
    for scale, hu in les.layers:
        alpha = (np.float32(scale) - rr) * sharp + 0.5
        np.clip(alpha, 0.0, 1.0, out=alpha)
        sub += alpha * (np.float32(hu) - sub)


# ------------------------------------------------------------------------------------ noise
_NOISE_BANKS: dict[tuple[int, int], np.ndarray] = {}
_BANK_SIZE = 6


def _noise_bank(rows: int, cols: int) -> np.ndarray:
    """Unit-variance, slightly correlated (3×3 binomial-smoothed) Gaussian noise fields, twice the
    image size; a fixed seed, so every process builds the same bank."""
    key = (rows, cols)
    bank = _NOISE_BANKS.get(key)
    if bank is None:
        rng = np.random.default_rng(20180618)
        raw = rng.standard_normal((_BANK_SIZE, 2 * rows + 2, 2 * cols + 2), dtype=np.float32)
        sm = raw[:, :-2] + 2 * raw[:, 1:-1] + raw[:, 2:]
        sm = sm[:, :, :-2] + 2 * sm[:, :, 1:-1] + sm[:, :, 2:]
        sm /= sm.std()
        bank = _NOISE_BANKS[key] = np.ascontiguousarray(sm)
    return bank


def add_noise(vol: np.ndarray, sigma_hu: float, rng: np.random.Generator) -> None:
    """Add correlated Gaussian noise of standard deviation ``sigma_hu``: per slice, a random crop
    of a random bank field, with a random sign, scaled."""
    n, rows, cols = vol.shape
    bank = _noise_bank(rows, cols)
    i = rng.integers(0, _BANK_SIZE, size=n)
    off = rng.integers(0, [rows + 1, cols + 1], size=(n, 2))
    sign = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=n)
    tmp = np.empty((rows, cols), np.float32)
    for s in range(n):
        r0, c0 = off[s]
        np.multiply(bank[i[s], r0:r0 + rows, c0:c0 + cols], np.float32(sign[s] * sigma_hu), out=tmp)
        vol[s] += tmp
