"""``read_series_slab``: the present slices of a DeepLesion series folder as one volume."""
from __future__ import annotations

import numpy as np
import pytest

from lesiondb.errors import ImageError
from lesiondb.imaging import png as P


def write_png(path, hu: np.ndarray) -> None:
    """A DeepLesion-style 16-bit PNG of ``hu`` (stored value = HU + 32768)."""
    import png

    raw = (np.asarray(hu, np.int32) + P.HU_OFFSET).astype(np.uint16)
    with open(path, "wb") as fh:
        png.Writer(width=raw.shape[1], height=raw.shape[0], greyscale=True, bitdepth=16).write(fh, raw.tolist())


def test_slab_keeps_the_present_slices_and_their_numbers(tmp_path):
    folder = tmp_path / "000001_01_01"
    folder.mkdir()
    for k in (3, 4, 5, 20, 21):
        write_png(folder / f"{k:03d}.png", np.full((16, 18), k * 10 - 1000))
    (folder / "notes.txt").write_text("not a slice")
    hu, numbers = P.read_series_slab(folder)
    assert numbers == [3, 4, 5, 20, 21]  # the gap 6–19 is not filled
    assert hu.shape == (5, 16, 18) and hu.dtype == np.int16
    assert [int(hu[i, 0, 0]) for i in range(5)] == [k * 10 - 1000 for k in numbers]


def test_slab_errors_name_the_file_or_folder(tmp_path):
    with pytest.raises(ImageError, match="series folder not found") as e:
        P.read_series_slab(tmp_path / "nowhere")
    assert "nowhere" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="no KKK.png"):
        P.read_series_slab(empty)
    folder = tmp_path / "s"
    folder.mkdir()
    write_png(folder / "001.png", np.zeros((16, 18)))
    write_png(folder / "002.png", np.zeros((17, 18)))
    with pytest.raises(ImageError, match="slice is 17×18") as e:
        P.read_series_slab(folder)
    assert "002.png" in str(e.value)
    (folder / "002.png").write_bytes((folder / "001.png").read_bytes()[:40])  # truncated
    with pytest.raises(ImageError) as e:
        P.read_series_slab(folder)
    assert "002.png" in str(e.value)


def test_slab_of_the_real_series_equals_its_slices(shared_data):
    folder = shared_data / "deeplesion_images" / "series_000062_01_01"
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing")
    hu, numbers = P.read_series_slab(folder)
    assert numbers == list(range(56, 85)) and hu.shape == (29, 512, 512)
    for i in (0, 14, 28):
        assert np.array_equal(hu[i], P.read_slice(folder / f"{numbers[i]:03d}.png"))
