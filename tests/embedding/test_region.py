"""lesiondb.embedding.region: a region drawn on a new image (``lesiondb similar --image``)."""
from __future__ import annotations

import pytest

from lesiondb.embedding.region import region_patch
from lesiondb.errors import InputError
from lesiondb.imaging.patches import PatchSpec


def test_region_patch_errors_name_the_fix(image_cohort, tmp_path):
    png = tmp_path / "001.png"
    png.write_bytes(b"not a png")
    with pytest.raises(InputError, match="--spacing"):
        region_patch(png, (1, 1, 5, 5), PatchSpec())
    with pytest.raises(InputError, match="x1 < x2"):
        region_patch(png, (5, 1, 1, 5), PatchSpec(), spacing_mm=(1.0, 1.0))
    series = next(p for p in (image_cohort / "dicom").rglob("*") if p.is_dir() and any(p.glob("*.dcm")))
    with pytest.raises(InputError, match="--slice"):
        region_patch(series, (10, 10, 20, 20), PatchSpec())
