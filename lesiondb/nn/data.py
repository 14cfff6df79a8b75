"""Lesion patch sets: every lesion of a cohort (or DeepLesion rows with images) as encoder inputs.

A :class:`PatchSet` holds numpy arrays only (patches, boxes, types, locations, sizes, patients),
so the training loop, the evaluation and the benchmarks share one cached, reproducible input.
Bad rows and unreadable series are reported in ``PatchSet.problems`` (naming the input) and
skipped; they never stop the batch.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.private import make_private_file
from ..core.pseudonym import Pseudonymizer
from ..datasets import deeplesion as DL
from ..datasets.cohort import ANNOTATIONS, DICOM_DIR, CohortRow, read_ground_truth, read_rows
from ..datasets.deeplesion import RowError, read_dl_info
from ..errors import InputError
from ..imaging.dicom import read_series
from ..imaging.patches import PatchSpec, extract_patch, extract_patch_from_volume
from ..imaging.png import read_stack

log = logging.getLogger(__name__)


@dataclass
class PatchSet:
    """N lesions: ``images`` (N, 3, S, S) float16 in [0, 1], ``boxes`` (N, 4) patch pixels,
    ``types`` (N,) (-1 unlabelled), ``locations`` (N, 3) normalised, ``sizes_mm`` (N, 2) RECIST
    long/short diameters, ``groups`` (N,) patient ids, ``ids`` (N,) annotation ids."""

    images: np.ndarray
    boxes: np.ndarray
    types: np.ndarray
    locations: np.ndarray
    sizes_mm: np.ndarray
    groups: np.ndarray
    ids: np.ndarray
    spec: PatchSpec = field(default_factory=PatchSpec)
    problems: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx) -> PatchSet:
        idx = np.asarray(idx)
        return PatchSet(self.images[idx], self.boxes[idx], self.types[idx], self.locations[idx],
                        self.sizes_mm[idx], self.groups[idx], self.ids[idx], self.spec, list(self.problems),
                        self.source)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, images=self.images, boxes=self.boxes, types=self.types, locations=self.locations,
                 sizes_mm=self.sizes_mm, groups=self.groups.astype(str), ids=self.ids.astype(str),
                 meta=np.array(json.dumps({"spec": self.spec.to_dict(), "problems": self.problems,
                                           "source": self.source})))
        make_private_file(tmp)  # crops of patient CT: 0600 (in the data dir's cache and elsewhere)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> PatchSet:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(z["images"], z["boxes"], z["types"], z["locations"], z["sizes_mm"], z["groups"],
                       z["ids"], PatchSpec.from_dict(meta["spec"]), meta["problems"], meta.get("source", ""))


def _cohort_fingerprint(root: Path, spec: PatchSpec) -> str:
    ann = root / "annotations.csv"
    st = ann.stat()
    blob = json.dumps([str(root.resolve()), st.st_size, st.st_mtime_ns, spec.to_dict()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def patchset_from_cohort(root: str | Path, spec: PatchSpec | None = None, *,
                         cache_dir: str | Path | None = None, labels: str = "annotations",
                         progress: Callable[[int], None] | None = None) -> PatchSet:
    """Patches of every annotated lesion of a cohort folder (``annotations.csv`` + ``dicom/``).

    ``labels``: ``"annotations"`` takes types from annotations.csv; ``"ground_truth"`` from
    ground_truth.json (by annotation id) where the CSV has none. ``cache_dir``: reuse/store the
    patch set there (keyed by the cohort path, its annotations file and the patch spec).
    ``progress(n)`` is called with the number of lesions done per series.
    """

    root = Path(root)
    spec = spec or PatchSpec()
    if not (root / ANNOTATIONS).is_file():
        raise InputError(f"not a cohort folder: {ANNOTATIONS} not found "
                         "(make one with `lesiondb synth` or give the folder that holds it)", str(root))
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"patches-{_cohort_fingerprint(root, spec)}-{labels}.npz"
        if cache.is_file():
            try:
                return PatchSet.load(cache)
            except Exception as exc:  # a broken cache is rebuilt, not fatal
                log.warning("ignoring unreadable patch cache %s: %s", cache, exc)
    if not (root / DICOM_DIR).is_dir():
        raise InputError(f"cohort has no {DICOM_DIR}/ images (generated with --no-images?); "
                         "the encoder needs images", str(root))
    problems: list[str] = []
    rows: list[CohortRow] = []
    for r in read_rows(root / ANNOTATIONS):
        if isinstance(r, CohortRow):
            rows.append(r)
        else:
            problems.append(str(r))
    gt_types: dict[str, int] = {}
    if labels == "ground_truth" and (root / "ground_truth.json").is_file():
        gt_types = {i["annotation_id"]: int(i.get("type_code", -1))
                    for i in read_ground_truth(root).instances if i.get("annotation_id")}
    by_series: dict[str, list[CohortRow]] = {}
    for r in rows:
        by_series.setdefault(r.series_ref, []).append(r)
    out = {k: [] for k in ("images", "boxes", "types", "locations", "sizes", "groups", "ids")}
    for ref, members in sorted(by_series.items()):
        try:
            vol = read_series(root / ref, allow_gaps=True)
        except (InputError, OSError) as exc:
            problems.extend(f"{root / ref}: {exc} (annotation {r.annotation_id} skipped)" for r in members)
            if progress:
                progress(len(members))
            continue
        for r in members:
            why = vol.slice_problem(r.key_slice_index)
            if why or r.location is None:
                problems.append(f"{root / ANNOTATIONS}:{r.line}: annotation {r.annotation_id}: "
                                f"{why or 'no location'}; skipped")
                continue
            interval = vol.slice_interval_mm or r.slice_interval_mm
            try:
                p = extract_patch_from_volume(vol.hu, r.key_slice_index, r.bbox_px, vol.spacing_xy_mm,
                                              interval, spec)
            except InputError as exc:
                problems.append(f"{root / ANNOTATIONS}:{r.line}: annotation {r.annotation_id}: {exc}; skipped")
                continue
            t = r.type_code if r.type_code >= 0 else gt_types.get(r.annotation_id, -1)
            sx = vol.spacing_xy_mm[0]
            out["images"].append(p.image.astype(np.float16))
            out["boxes"].append(p.box_px)
            out["types"].append(t)
            out["locations"].append(r.location)
            out["sizes"].append((r.long_diameter_px * sx, r.short_diameter_px * sx))
            out["groups"].append(r.patient_id)
            out["ids"].append(r.annotation_id)
        if progress:
            progress(len(members))
    if not out["ids"]:
        raise InputError("no usable lesion in the cohort: " + "; ".join(problems[:5]), str(root))
    ps = _pack(out, spec, problems, str(root))
    if cache is not None:
        ps.save(cache)
    return ps


def patchset_from_deeplesion(dl_info: str | Path, images_root: str | Path, spec: PatchSpec | None = None, *,
                             only_with_images: bool = True) -> PatchSet:
    """Patches of the DL_info rows whose key slice is under ``images_root`` (``PPPPPP_SS_RR/KKK.png``)."""
    spec = spec or PatchSpec()
    ids = Pseudonymizer(b"lesiondb-patchset-deeplesion")
    problems: list[str] = []
    out = {k: [] for k in ("images", "boxes", "types", "locations", "sizes", "groups", "ids")}
    for item in read_dl_info(dl_info, ids, keep_source_ids=True):
        if isinstance(item, RowError):
            problems.append(str(item))
            continue
        les = item.lesion
        ref, k = DL.split_file_name(les.source_id)
        try:
            folder = DL.series_folder(images_root, ref)
        except InputError as exc:
            if not only_with_images:
                problems.append(str(exc))
            continue
        if not (folder / DL.slice_file(k)).is_file():
            continue
        try:
            stack = read_stack(folder, k, les.slice_interval_mm, spec.offset_mm)
            patch = extract_patch(stack, les.bbox_px, les.spacing_mm, spec)
        except InputError as exc:
            problems.append(f"{les.source_id}: {exc}; skipped")
            continue
        out["images"].append(patch.image.astype(np.float16))
        out["boxes"].append(patch.box_px)
        out["types"].append(les.type_code)
        out["locations"].append(les.location)
        out["sizes"].append((les.long_diameter_mm, les.short_diameter_mm))
        out["groups"].append(str(int(ref[:6])))
        out["ids"].append(les.source_id)
    if not out["ids"]:
        raise InputError("no DL_info row has its key slice under the images folder: "
                         + "; ".join(problems[:3]), str(images_root))
    return _pack(out, spec, problems, str(dl_info))


def _pack(out: dict, spec: PatchSpec, problems: list[str], source: str) -> PatchSet:
    return PatchSet(
        images=np.stack(out["images"]),
        boxes=np.stack(out["boxes"]).astype(np.float32),
        types=np.asarray(out["types"], dtype=np.int64),
        locations=np.asarray(out["locations"], dtype=np.float32),
        sizes_mm=np.asarray(out["sizes"], dtype=np.float32),
        groups=np.asarray(out["groups"], dtype=str),
        ids=np.asarray(out["ids"], dtype=str),
        spec=spec, problems=problems, source=source,
    )
