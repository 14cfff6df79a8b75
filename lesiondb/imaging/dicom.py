"""DICOM CT series → :class:`Volume` in HU with its patient geometry (pydicom).

A series folder is read once: files are grouped by SeriesInstanceUID, every file is checked (CT
image, grey, has pixels, has geometry), slices are sorted along the slice normal **head first**
(the most superior slice is index 0, as the cohort contract's ``key_slice_index`` counts), pixels
are rescaled to HU, and spacing comes from the headers (a header outside the CT limits of
:mod:`lesiondb.imaging.limits`, or a file too large for one slice, is refused before any pixel is
decoded): PixelSpacing in-plane, the slice interval
from the positions. Inconsistent size, pixel spacing, orientation or slice spacing raise
:class:`ImageError` naming the file. With ``allow_gaps=True`` a series that lost a few slices
(a deleted or unreadable file) still loads: the index grid is kept from the positions and the lost
slices are listed in ``Volume.missing_slices`` / ``Volume.bad_slices`` so a caller can reject only
what touches them.

Coordinates: patient coordinates are DICOM LPS millimetres. A voxel is ``(col, row, slice)``,
0-based; ``voxel_to_patient`` / ``patient_to_voxel`` convert between them.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError
from .limits import DICOM_BITS_ALLOCATED, MAX_DICOM_FILE_BYTES, check_slice_size

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
CODECS_FIX = "pip install lesiondb[dicom-codecs]"
#: Files never read as slices.
_SKIP_NAMES = {"DICOMDIR", "PROVENANCE.md", "README", "README.md", "LICENSE"}
#: Relative tolerance on pixel spacing and absolute tolerance on direction cosines.
SPACING_RTOL = 1e-3
ORIENTATION_ATOL = 1e-3
#: A slice may sit this far (fraction of the interval, or at least 0.02 mm) off the regular grid.
GRID_TOL = 0.1
#: With ``allow_gaps``, at most this many consecutive slices may be lost before the series is
#: called inconsistent (a larger gap is a different acquisition, not a lost file).
MAX_GAP_SLICES = 3


@dataclass(frozen=True)
class SliceHeader:
    """What one CT file says about itself (pixels not decoded)."""

    path: Path
    series_uid: str
    study_uid: str | None
    sop_uid: str | None
    patient_id: str | None
    study_date: str | None  # ISO
    rows: int
    cols: int
    spacing_xy_mm: tuple[float, float]  # (between columns, between rows)
    orientation: tuple[float, ...]  # ImageOrientationPatient: row cosine, column cosine
    position_mm: tuple[float, float, float]  # ImagePositionPatient
    slope: float
    intercept: float
    instance_number: int | None
    slice_thickness_mm: float | None
    transfer_syntax: str
    patient_sex: str | None = None
    patient_age_years: int | None = None


@dataclass
class Volume:
    """A CT series in HU, slices sorted head first, with its geometry.

    ``hu`` is int16 when every slice's rescale is integral (the usual CT case), else float32;
    shape ``(slices, rows, cols)``. Lost slices (``allow_gaps``) hold -1024 HU and are listed in
    ``missing_slices`` (no file) or ``bad_slices`` (file present, pixels unreadable: index → reason).
    """

    hu: np.ndarray
    spacing_xy_mm: tuple[float, float]
    slice_interval_mm: float | None  # None for a single slice without SliceThickness
    slice_positions_mm: np.ndarray  # (slices,) position along the slice normal
    positions_mm: np.ndarray  # (slices, 3) ImagePositionPatient (lost slices: on the grid)
    orientation: np.ndarray  # (6,) row direction cosine, column direction cosine
    series_uid: str
    study_uid: str | None = None
    patient_id: str | None = None
    study_date: str | None = None
    sop_uids: list[str | None] = field(default_factory=list)
    files: list[Path | None] = field(default_factory=list)
    slice_thickness_mm: float | None = None
    patient_sex: str | None = None
    patient_age_years: int | None = None
    missing_slices: tuple[int, ...] = ()
    bad_slices: dict[int, str] = field(default_factory=dict)
    skipped_files: dict[str, str] = field(default_factory=dict)  # unreadable / not CT: path → reason
    other_series: dict[str, int] = field(default_factory=dict)  # series UID → files, in the same input

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])

    @property
    def slice_step_mm(self) -> np.ndarray:
        """Vector from one slice's origin to the next (head → feet order)."""
        n = self.n_slices
        if n > 1:
            return (self.positions_mm[-1] - self.positions_mm[0]) / (n - 1)
        step = self.slice_interval_mm or 1.0
        return -_head_first_sign(self.normal) * self.normal * step

    @property
    def affine(self) -> np.ndarray:
        """4×4 matrix taking ``(col, row, slice, 1)`` to patient LPS mm."""
        dx, dy = self.spacing_xy_mm
        a = np.eye(4)
        a[:3, 0] = np.asarray(self.orientation[:3]) * dx
        a[:3, 1] = np.asarray(self.orientation[3:]) * dy
        a[:3, 2] = self.slice_step_mm
        a[:3, 3] = self.positions_mm[0]
        return a

    def is_usable(self, slice_index: int) -> bool:
        return 0 <= slice_index < self.n_slices and slice_index not in self.missing_slices \
            and slice_index not in self.bad_slices

    def slice_problem(self, slice_index: int) -> str | None:
        """Why ``slice_index`` cannot be used, or None."""
        if not 0 <= slice_index < self.n_slices:
            return f"slice {slice_index} is outside the series (0..{self.n_slices - 1})"
        if slice_index in self.bad_slices:
            return f"slice {slice_index}: {self.bad_slices[slice_index]}"
        if slice_index in self.missing_slices:
            why = f"slice {slice_index} is missing from the series (no file at that position"
            if self.skipped_files:
                why += "; unreadable files in the folder: " + "; ".join(
                    f"{Path(p).name}: {r}" for p, r in sorted(self.skipped_files.items()))
            return why + ")"
        return None

    def voxel_to_patient(self, col: Any, row: Any, slice_index: Any) -> np.ndarray:
        return voxel_to_patient(self, col, row, slice_index)

    def patient_to_voxel(self, xyz: Any) -> np.ndarray:
        return patient_to_voxel(self, xyz)


def voxel_to_patient(volume: Volume, col: Any, row: Any, slice_index: Any) -> np.ndarray:
    """Patient LPS mm of voxel ``(col, row, slice)`` (fractional and array inputs allowed).

    The slice origin is interpolated between the slices' own ImagePositionPatient, so an integer
    slice index gives exactly that slice's position.
    """
    col, row, s = (np.asarray(v, dtype=float) for v in (col, row, slice_index))
    idx = np.arange(volume.n_slices, dtype=float)
    if volume.n_slices > 1:
        origin = np.stack([np.interp(s, idx, volume.positions_mm[:, k], left=np.nan, right=np.nan)
                           for k in range(3)], axis=-1)
        # Outside the series: extrapolate along the regular step.
        out = np.isnan(origin[..., 0])
        if np.any(out):
            extra = volume.positions_mm[0] + np.multiply.outer(s, volume.slice_step_mm)
            origin = np.where(out[..., None], extra, origin)
    else:
        origin = volume.positions_mm[0] + np.multiply.outer(s, volume.slice_step_mm)
    dx, dy = volume.spacing_xy_mm
    rdir = np.asarray(volume.orientation[:3], dtype=float)
    cdir = np.asarray(volume.orientation[3:], dtype=float)
    return origin + np.multiply.outer(col * dx, rdir) + np.multiply.outer(row * dy, cdir)


def patient_to_voxel(volume: Volume, xyz: Any) -> np.ndarray:
    """``(col, row, slice)`` (fractional) of patient LPS mm point(s) ``xyz`` (shape (..., 3))."""
    xyz = np.asarray(xyz, dtype=float)
    inv = np.linalg.inv(volume.affine)
    hom = np.concatenate([xyz, np.ones(xyz.shape[:-1] + (1,))], axis=-1)
    return (hom @ inv.T)[..., :3]


# -- reading ---------------------------------------------------------------------------------------


def _pydicom():
    # pydicom takes 0.6 s to import: commands that read no DICOM (match, stats) do without it
    import pydicom

    return pydicom


def _iso_date(value: Any) -> str | None:
    s = str(value or "").strip()
    if len(s) == 8 and s.isdigit():
        return f"{s[:4]}-{s[4:6]}-{s[6:]}"
    if len(s) == 10 and s[4] == "-" and s[7] == "-":
        return s
    return None


def _age_years(value: Any) -> int | None:
    s = str(value or "").strip().upper()
    if len(s) == 4 and s[:3].isdigit():
        n, unit = int(s[:3]), s[3]
        return {"Y": n, "M": n // 12, "W": n // 52, "D": n // 365}.get(unit)
    return None


def _floats(ds: Any, keyword: str, n: int, path: Path) -> tuple[float, ...]:
    value = ds.get(keyword)
    if value is None:
        raise ImageError(f"no {keyword}: cannot place the slice in patient space", str(path))
    try:
        out = tuple(float(v) for v in (value if isinstance(value, Sequence) and not isinstance(value, str)
                                       else [value]))
    except (TypeError, ValueError):
        raise ImageError(f"{keyword} {value!r} is not {n} numbers", str(path)) from None
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ImageError(f"{keyword} {value!r} is not {n} finite numbers", str(path))
    return out


def _check_ct(ds: Any, path: Path, check_pixels: bool = True) -> None:
    """Reject what is not a single-frame grey CT image, with the reason."""
    sop = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "")
    if sop.startswith(SECONDARY_CAPTURE_PREFIX):
        spp = ds.get("SamplesPerPixel")
        photo = ds.get("PhotometricInterpretation")
        raise ImageError(
            f"secondary capture image (SOP class {sop}; {spp} sample(s) per pixel, {photo}): a screen "
            "capture, not CT data in HU; export the original CT series instead", str(path))
    if modality and modality != "CT":
        raise ImageError(f"modality {modality} is not CT", str(path))
    if sop == ENHANCED_CT_IMAGE_STORAGE or int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ImageError("multi-frame (Enhanced CT) images are not supported; export the series as "
                         "single-frame CT Image Storage", str(path))
    if sop and sop != CT_IMAGE_STORAGE:
        raise ImageError(f"SOP class {sop} is not CT Image Storage ({CT_IMAGE_STORAGE})", str(path))
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photo = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2")
    if spp != 1 or not photo.startswith("MONOCHROME"):
        raise ImageError(f"colour image ({spp} samples per pixel, {photo}): not CT data in HU", str(path))
    if check_pixels and "PixelData" not in ds:
        raise ImageError("no pixel data (the file may be truncated, or holds only a header)", str(path))


def read_header(path: str | Path, ds: Any = None, check_pixels: bool = True) -> SliceHeader:
    """The checked header of one CT file; :class:`ImageError` with the reason if it is not one.

    ``check_pixels=False`` accepts a header read with ``stop_before_pixels``.
    """
    path = Path(path)
    if ds is None:
        ds = _dcmread(path, stop_before_pixels=not check_pixels)
    with _quiet(path):
        return _header(ds, path, check_pixels)


def _header(ds: Any, path: Path, check_pixels: bool) -> SliceHeader:
    _check_ct(ds, path, check_pixels)
    series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if not series_uid:
        raise ImageError("no SeriesInstanceUID", str(path))
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows <= 0 or cols <= 0:
        raise ImageError(f"bad image size {rows}×{cols}", str(path))
    check_slice_size(rows, cols, str(path))
    bits = ds.get("BitsAllocated")
    if bits is not None and int(bits) not in DICOM_BITS_ALLOCATED:
        raise ImageError(f"BitsAllocated {int(bits)} is not a CT image's "
                         f"({', '.join(map(str, DICOM_BITS_ALLOCATED))})", str(path))
    dy, dx = _floats(ds, "PixelSpacing", 2, path)  # DICOM order: between rows, between columns
    if dx <= 0 or dy <= 0:
        raise ImageError(f"PixelSpacing {dy}, {dx} must be positive", str(path))
    iop = _floats(ds, "ImageOrientationPatient", 6, path)
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    if abs(np.linalg.norm(r) - 1) > 1e-2 or abs(np.linalg.norm(c) - 1) > 1e-2 or abs(r @ c) > 1e-2:
        raise ImageError(f"ImageOrientationPatient {iop} is not two orthogonal unit vectors", str(path))
    ipp = _floats(ds, "ImagePositionPatient", 3, path)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    inst = ds.get("InstanceNumber")
    thick = ds.get("SliceThickness")
    try:
        thick_mm = float(thick) if thick not in (None, "") else None
    except (TypeError, ValueError):
        thick_mm = None
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
    sex = str(ds.get("PatientSex", "") or "").strip().upper() or None
    return SliceHeader(
        path=path, series_uid=series_uid,
        study_uid=str(ds.get("StudyInstanceUID", "") or "").strip() or None,
        sop_uid=str(ds.get("SOPInstanceUID", "") or "").strip() or None,
        patient_id=str(ds.get("PatientID", "") or "").strip() or None,
        study_date=_iso_date(ds.get("StudyDate")),
        rows=rows, cols=cols, spacing_xy_mm=(dx, dy), orientation=iop, position_mm=ipp,
        slope=slope, intercept=intercept,
        instance_number=int(inst) if inst not in (None, "") else None,
        slice_thickness_mm=thick_mm, transfer_syntax=ts,
        patient_sex=sex if sex in ("M", "F") else None,
        patient_age_years=_age_years(ds.get("PatientAge")),
    )


@contextlib.contextmanager
def _quiet(path: Path):
    """pydicom warns about every non-conformant value; log those at debug level instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.debug("%s: %s", path, w.message)


def _check_file_size(path: Path) -> None:
    """Refuse a file too large to be one CT slice before reading it into memory."""
    try:
        size = path.stat().st_size
    except OSError:
        return  # dcmread says why it cannot be read
    if size > MAX_DICOM_FILE_BYTES:
        raise ImageError(f"file of {size / 2**20:.0f} MiB is too large for one CT slice (at most "
                         f"{MAX_DICOM_FILE_BYTES / 2**20:.0f} MiB); refused before reading", str(path))


def _dcmread(path: Path, stop_before_pixels: bool) -> Any:
    pydicom = _pydicom()
    if not stop_before_pixels:
        _check_file_size(path)
    try:
        with _quiet(path):
            ds = pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except pydicom.errors.InvalidDicomError as exc:
        raise ImageError(f"not a DICOM file, or truncated before its header ({exc})", str(path)) from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ImageError(f"unreadable DICOM file, probably truncated or corrupt ({type(exc).__name__}: {exc})",
                         str(path)) from exc
    return ds


def decode_hu(ds: Any, header: SliceHeader) -> np.ndarray:
    """Decode one slice's pixels and rescale to HU (float64); :class:`ImageError` with the fix."""
    path = header.path
    try:
        with _quiet(path):
            arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types here; each becomes one clear reason
        msg = str(exc)
        ts_name = _ts_name(header.transfer_syntax)
        if "missing dependencies" in msg or "no pixel data handlers" in msg.lower() \
                or "not installed" in msg or isinstance(exc, NotImplementedError):
            raise ImageError(
                f"cannot decode {ts_name} pixel data: no decoder for it is installed; "
                f"run `{CODECS_FIX}` (or install python-gdcm)", str(path)) from exc
        if "number of bytes of pixel data is less than expected" in msg or "truncated" in msg.lower():
            raise ImageError(f"pixel data is truncated ({msg.split(' - ')[0]})", str(path)) from exc
        raise ImageError(f"cannot decode {ts_name} pixel data ({type(exc).__name__}: {msg[:200]})",
                         str(path)) from exc
    if arr.ndim != 2 or arr.shape != (header.rows, header.cols):
        raise ImageError(f"decoded pixels have shape {arr.shape}, header says {header.rows}×{header.cols}",
                         str(path))
    return arr.astype(np.float64) * header.slope + header.intercept


def _ts_name(uid: str) -> str:
    try:
        from pydicom.uid import UID

        return f"{UID(uid).name} ({uid})" if uid else "this transfer syntax"
    except Exception:  # pragma: no cover
        return uid or "this transfer syntax"


def dicom_files(path: str | Path) -> list[Path]:
    """Candidate DICOM files: the file itself, or every regular file under a folder (sorted;
    folders reached through symbolic links included)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ImageError("series folder not found", str(p))
    return sorted(f for folder, names in walk_folders(p) for f in (folder / n for n in names)
                  if is_candidate_name(f.name) and f.is_file())


def walk_folders(root: str | Path) -> Iterator[tuple[Path, list[str]]]:
    """(folder, file names) of ``root`` and every folder below it, in sorted order, following
    symbolic links to folders (archives are often assembled from links) but never into a loop or
    twice into the same folder."""
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        yield Path(folder), sorted(files)


def is_candidate_name(name: str) -> bool:
    """Whether a file name may hold a DICOM slice (hidden files, DICOMDIR and text files may not)."""
    return not name.startswith(".") and name not in _SKIP_NAMES \
        and Path(name).suffix.lower() not in (".md", ".txt", ".json", ".csv")


@dataclass(frozen=True)
class SeriesInfo:
    """One series found under a folder, from the first readable header."""

    series_uid: str
    study_uid: str | None
    patient_id: str | None
    study_date: str | None
    patient_sex: str | None
    patient_age_years: int | None
    folder: Path
    n_files: int


def list_series(path: str | Path) -> tuple[list[SeriesInfo], dict[str, str]]:
    """The CT series under ``path`` (headers only) and the files skipped (path → reason)."""
    groups: dict[str, list[SliceHeader]] = {}
    skipped: dict[str, str] = {}
    for f in dicom_files(path):
        try:
            h = read_header(f, check_pixels=False)
        except ImageError as exc:
            skipped[str(f)] = exc.reason
            continue
        groups.setdefault(h.series_uid, []).append(h)
    out = []
    for uid, hs in groups.items():
        h = hs[0]
        folders = Counter(x.path.parent for x in hs)
        out.append(SeriesInfo(uid, h.study_uid, h.patient_id, h.study_date, h.patient_sex,
                              h.patient_age_years, folders.most_common(1)[0][0], len(hs)))
    return sorted(out, key=lambda s: (s.patient_id or "", s.study_date or "", s.series_uid)), skipped


def read_series(
    path: str | Path | Iterable[str | Path],
    series_uid: str | None = None,
    *,
    allow_gaps: bool = False,
) -> Volume:
    """Read one CT series from a folder (or a file, or a list of files) into a :class:`Volume`.

    Several series in the input need ``series_uid`` (the others are counted in
    ``Volume.other_series``). Files that are not CT images are skipped and listed in
    ``Volume.skipped_files``; with no CT slice left the reasons are raised together.
    ``allow_gaps``: keep going when a few slices are lost (see the module doc), instead of raising.
    """
    files = [Path(p) for p in path] if not isinstance(path, str | Path) else dicom_files(path)
    where = str(path) if isinstance(path, str | Path) else (str(files[0].parent) if files else "")
    groups: dict[str, list[tuple[SliceHeader, Any]]] = {}
    skipped: dict[str, str] = {}
    for f in files:
        try:
            ds = _dcmread(f, stop_before_pixels=False)
            h = read_header(f, ds)
        except ImageError as exc:
            skipped[str(f)] = exc.reason
            continue
        groups.setdefault(h.series_uid, []).append((h, ds))
    series_uid = _pick_series(groups, series_uid, skipped, where)
    vol = _assemble(groups[series_uid], skipped, allow_gaps, where)
    vol.other_series = {uid: len(m) for uid, m in groups.items() if uid != series_uid}
    return vol


def _majority(values: list[Any], digits: int | None = None) -> Any:
    """The value most slices agree on (compared rounded to ``digits`` decimals)."""
    def key(v: Any) -> Any:
        if digits is None:
            return v
        return tuple(round(float(x), digits) for x in v)

    counts = Counter(key(v) for v in values)
    best = counts.most_common(1)[0][0]
    return next(v for v in values if key(v) == best)


def _head_first_sign(normal: np.ndarray) -> float:
    """+1 when larger positions along ``normal`` are more superior (LPS +z is head)."""
    return 1.0 if normal[2] >= -1e-6 else -1.0


def _layout(members: list[tuple[SliceHeader, Any]], allow_gaps: bool) -> dict[str, Any]:
    """Everything the headers say about a series: consistency checked, members sorted head first,
    each on its grid index; no pixel decoded."""
    headers = [h for h, _ in members]
    # -- consistency of size, spacing and orientation (against what most slices say) ----------
    size = _majority([(h.rows, h.cols) for h in headers])
    for h in headers:
        if (h.rows, h.cols) != size:
            raise ImageError(f"image size {h.rows}×{h.cols} differs from the series' {size[0]}×{size[1]}",
                             str(h.path))
    sp = _majority([h.spacing_xy_mm for h in headers], 4)
    for h in headers:
        if not np.allclose(h.spacing_xy_mm, sp, rtol=SPACING_RTOL):
            raise ImageError(f"pixel spacing {h.spacing_xy_mm} mm differs from the series' {sp} mm",
                             str(h.path))
    iop = _majority([h.orientation for h in headers], 3)
    for h in headers:
        if not np.allclose(h.orientation, iop, atol=ORIENTATION_ATOL):
            raise ImageError(f"orientation {h.orientation} differs from the series' {tuple(iop)}", str(h.path))
    orientation = np.asarray(iop, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    sign = _head_first_sign(normal)
    # -- order head first along the normal --------------------------------------------------------
    members = sorted(members, key=lambda m: -sign * float(np.dot(normal, m[0].position_mm)))
    headers = [h for h, _ in members]
    d = np.array([sign * float(np.dot(normal, h.position_mm)) for h in headers])  # decreasing
    grid, interval = _slice_grid(d, headers, allow_gaps)
    n = int(grid[-1]) + 1 if len(grid) else 0
    thick = _majority([h.slice_thickness_mm for h in headers])
    if interval is None:
        interval = thick
    integral = all(float(h.slope).is_integer() and float(h.intercept).is_integer() for h in headers)
    positions = np.empty((n, 3))
    files: list[Path | None] = [None] * n
    sops: list[str | None] = [None] * n
    for h, g in zip(headers, grid, strict=True):
        g = int(g)
        files[g], sops[g] = h.path, h.sop_uid
        positions[g] = h.position_mm
    missing = tuple(i for i in range(n) if files[i] is None)
    if missing:  # put lost slices on the grid so geometry stays continuous
        step = (positions[int(grid[-1])] - positions[0]) / max(int(grid[-1]), 1)
        for i in missing:
            positions[i] = positions[0] + i * step
    return dict(members=members, grid=[int(g) for g in grid], n=n, size=size, spacing=(float(sp[0]), float(sp[1])),
                orientation=orientation, normal=normal, sign=sign, interval=interval, thick=thick,
                dtype=np.int16 if integral else np.float32, positions=positions, files=files, sops=sops,
                missing=missing)


def _to_dtype(vals: np.ndarray, dtype: Any) -> np.ndarray:
    if dtype is np.int16:
        vals = np.clip(np.rint(vals), -32768, 32767)
    return vals.astype(dtype)


def _assemble(members: list[tuple[SliceHeader, Any]], skipped: dict[str, str], allow_gaps: bool,
              where: str) -> Volume:
    lay = _layout(members, allow_gaps)
    size, dtype = lay["size"], lay["dtype"]
    hu = np.full((lay["n"], size[0], size[1]), -1024, dtype=dtype)
    bad: dict[int, str] = {}
    for (h, ds), g in zip(lay["members"], lay["grid"], strict=True):
        try:
            vals = decode_hu(ds, h)
        except ImageError as exc:
            if not allow_gaps:
                raise
            bad[g] = f"{h.path.name}: {exc.reason}"
            continue
        hu[g] = _to_dtype(vals, dtype)
    if len(bad) == len(lay["members"]):
        raise ImageError("no slice of the series could be decoded: " + "; ".join(
            sorted(set(r.split(": ", 1)[1] for r in bad.values()))), where)
    return _volume(lay, hu, bad, skipped)


def _volume(lay: dict[str, Any], hu: np.ndarray, bad: dict[int, str], skipped: dict[str, str]) -> Volume:
    first = lay["members"][0][0]
    sp = lay["spacing"]
    return Volume(
        hu=hu, spacing_xy_mm=sp, slice_interval_mm=lay["interval"],
        slice_positions_mm=lay["positions"] @ lay["normal"] * lay["sign"], positions_mm=lay["positions"],
        orientation=lay["orientation"], series_uid=first.series_uid, study_uid=first.study_uid,
        patient_id=first.patient_id, study_date=first.study_date, sop_uids=lay["sops"], files=lay["files"],
        slice_thickness_mm=lay["thick"], patient_sex=first.patient_sex, patient_age_years=first.patient_age_years,
        missing_slices=lay["missing"], bad_slices=bad, skipped_files=dict(skipped),
    )


#: The header fields :func:`read_header` uses: a header-only scan parses only these.
HEADER_TAGS = ("SOPClassUID", "Modality", "SamplesPerPixel", "PhotometricInterpretation", "NumberOfFrames",
               "SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID", "PatientID", "StudyDate", "Rows",
               "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "RescaleSlope",
               "RescaleIntercept", "InstanceNumber", "SliceThickness", "PatientSex", "PatientAge",
               "BitsAllocated")


class LazySeries:
    """A CT series known from its headers alone (read once, pixels skipped); the pixels of single
    slices are read on demand (:meth:`slice_hu`, :meth:`sub_volume`), each file at most once.

    Geometry, order, consistency checks and gaps are exactly :func:`read_series`'s. A slice whose
    pixels cannot be decoded is found when it is first read (``bad_slices`` grows then).
    """

    def __init__(self, lay: dict[str, Any], skipped: dict[str, str], where: str):
        self._lay = lay
        self._hdr: dict[int, SliceHeader] = {g: h for (h, _), g in zip(lay["members"], lay["grid"], strict=True)}
        self._cache: dict[int, np.ndarray] = {}
        # a Volume without pixels: geometry and slice_problem() as read_series gives them
        self.volume = _volume(lay, np.empty((lay["n"], 0, 0), dtype=lay["dtype"]), {}, skipped)
        self.where = where
        self.files_read = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self._lay["n"], *self._lay["size"])

    @property
    def dtype(self) -> Any:
        return self._lay["dtype"]

    def slice_problem(self, i: int) -> str | None:
        why = self.volume.slice_problem(i)
        if why is None:
            try:
                self.slice_hu(i)
            except ImageError:
                return self.volume.slice_problem(i)
        return why

    def slice_hu(self, i: int) -> np.ndarray:
        """Slice ``i`` (grid index, head first) in HU; :class:`ImageError` when lost or unreadable."""
        if i in self._cache:
            return self._cache[i]
        why = self.volume.slice_problem(i)
        if why:
            raise ImageError(why, self.where)
        h = self._hdr[i]
        try:
            ds = _dcmread(h.path, stop_before_pixels=False)
            vals = _to_dtype(decode_hu(ds, h), self._lay["dtype"])
        except ImageError as exc:
            self.volume.bad_slices[i] = f"{h.path.name}: {exc.reason}"
            raise ImageError(self.volume.slice_problem(i) or exc.reason, self.where) from exc
        self.files_read += 1
        self._cache[i] = vals
        return vals

    def sub_volume(self, lo: int, hi: int) -> np.ndarray:
        """Slices ``lo..hi`` (inclusive) as (hi - lo + 1, rows, cols); lost or unreadable ones hold
        -1024 HU, as in :func:`read_series` with ``allow_gaps``."""
        n, rows, cols = self.shape
        out = np.full((hi - lo + 1, rows, cols), -1024, dtype=self._lay["dtype"])
        for i in range(lo, hi + 1):
            try:
                out[i - lo] = self.slice_hu(i)
            except ImageError:
                continue
        return out

    def release(self, keep: Iterable[int] = ()) -> None:
        keep = set(keep)
        for i in [i for i in self._cache if i not in keep]:
            del self._cache[i]


def read_series_lazy(path: str | Path, series_uid: str | None = None, *, allow_gaps: bool = False) -> LazySeries:
    """:func:`read_series` for a few slices: every header read once (``stop_before_pixels``, only
    :data:`HEADER_TAGS` parsed), no pixel decoded until asked for. Same errors for the series."""
    files = dicom_files(path)
    groups: dict[str, list[tuple[SliceHeader, Any]]] = {}
    skipped: dict[str, str] = {}
    pydicom = _pydicom()
    for f in files:
        try:
            with _quiet(f):
                ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
            h = read_header(f, ds, check_pixels=False)
        except ImageError as exc:
            skipped[str(f)] = exc.reason
            continue
        except pydicom.errors.InvalidDicomError as exc:
            skipped[str(f)] = f"not a DICOM file, or truncated before its header ({exc})"
            continue
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            skipped[str(f)] = f"unreadable DICOM file, probably truncated or corrupt ({type(exc).__name__}: {exc})"
            continue
        groups.setdefault(h.series_uid, []).append((h, None))
    where = str(path)
    series_uid = _pick_series(groups, series_uid, skipped, where)
    lazy = LazySeries(_layout(groups[series_uid], allow_gaps), skipped, where)
    lazy.volume.other_series = {uid: len(m) for uid, m in groups.items() if uid != series_uid}
    return lazy


def _pick_series(groups: dict[str, list], series_uid: str | None, skipped: dict[str, str], where: str) -> str:
    """The series to read: ``series_uid``, or the only one found; an error naming what was found."""
    if not groups:
        detail = "; ".join(f"{Path(p).name}: {r}" for p, r in sorted(skipped.items())[:5]) or "no files"
        raise ImageError(f"no readable CT slice ({detail})", where)
    if series_uid is None:
        if len(groups) > 1:
            raise ImageError(f"{len(groups)} series in one input; "
                             "pass series_uid to pick one", where)
        series_uid = next(iter(groups))
    if series_uid not in groups:
        # UIDs identify a patient's study: the message says how many, not which
        raise ImageError(f"the series asked for is not there (found {len(groups)} other series)", where)
    return series_uid


def _slice_grid(d: np.ndarray, headers: list[SliceHeader], allow_gaps: bool) -> tuple[np.ndarray, float | None]:
    """Grid index of each slice (positions ``d`` decreasing) and the slice interval in mm."""
    if len(d) == 1:
        return np.zeros(1, dtype=int), None
    gaps = d[:-1] - d[1:]
    for k, gap in enumerate(gaps):
        if gap < 1e-3:
            raise ImageError(f"two slices at the same position ({d[k]:.3f} mm along the normal): "
                             f"{headers[k].path.name} and {headers[k + 1].path.name}", str(headers[k + 1].path))
    interval = float(np.median(gaps))
    grid = np.concatenate([[0], np.rint(np.cumsum(gaps) / interval)]).astype(int)
    # Refine the interval on the whole grid, then check every slice sits on it.
    if grid[-1] > 0:
        interval = float((d[0] - d) @ grid / (grid @ grid))
    tol = max(GRID_TOL * interval, 0.02)
    for k in range(1, len(d)):
        steps = grid[k] - grid[k - 1]
        off = abs((d[0] - d[k]) - grid[k] * interval)
        if off > tol or steps < 1:
            raise ImageError(
                f"inconsistent slice spacing: {headers[k].path.name} is {gaps[k - 1]:.3f} mm from "
                f"{headers[k - 1].path.name}, the series' slice interval is {interval:.3f} mm",
                str(headers[k].path))
        if steps > 1 and (not allow_gaps or steps - 1 > MAX_GAP_SLICES):
            raise ImageError(
                f"inconsistent slice spacing: gap of {gaps[k - 1]:.3f} mm ({steps - 1} slice(s) missing) "
                f"between {headers[k - 1].path.name} and {headers[k].path.name}; the series' slice "
                f"interval is {interval:.3f} mm", str(headers[k].path))
    return grid, interval
