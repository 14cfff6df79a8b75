"""The DLS benchmark's lesion pairs (Deep Lesion Tracker, Cai et al. CVPR 2021).

``valid.json`` / ``test.json`` hold directed pairs of the same lesion in two scans of one patient,
each as a DeepLesion key slice (``PPPPPP_SS_RR/KKK.png``) and its RECIST endpoints. DLS stores
DL_info's coordinates minus 1 px; :func:`read_dls_pairs` gives them back in DL_info's frame.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class DLSPair:
    key: str
    source_file: str  # DeepLesion File_name, e.g. 000004_02_01_013.png
    source_coords: tuple[float, ...]  # DL_info Measurement_coordinates (DLS + 1 px)
    target_file: str
    target_coords: tuple[float, ...]


def read_dls_pairs(path: str | Path) -> list[DLSPair]:
    """The pairs of a DLS json (``valid.json`` / ``test.json``), coordinates in DL_info's frame."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read DLS pairs: {exc.strerror}", str(path)) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", str(path), exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", str(path)) from exc
    if not isinstance(data, dict) or not data:
        raise InputError("not a DLS pairs file: expected a non-empty object of pairs keyed '0001', …", str(path))
    out = []
    for key, v in data.items():
        try:
            sf = v["source recist slice"].replace("/", "_")
            tf = v["target recist slice"].replace("/", "_")
            sc = tuple(float(c) + 1.0 for c in v["source recist coordinate"])
            tc = tuple(float(c) + 1.0 for c in v["target recist coordinate"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"pair {key!r}: missing or bad 'source/target recist slice/coordinate' ({exc})",
                             str(path)) from None
        if len(sc) != 8 or len(tc) != 8:
            raise InputError(f"pair {key!r}: a RECIST coordinate needs 8 numbers", str(path))
        out.append(DLSPair(key, sf, sc, tf, tc))
    return out
