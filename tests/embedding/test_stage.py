"""lesiondb.embedding.stage: embedding a graph's lesions from a small synthetic DICOM cohort and from
real DeepLesion PNGs; the SIMILAR_TO edges it keeps."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from lesiondb.core import knn
from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.datasets.deeplesion import file_names
from lesiondb.embedding import EmbedOptions, load_encoder, services, stage
from lesiondb.embedding import store as sim
from lesiondb.embedding.patches import CohortImages, read_targets
from lesiondb.embedding.region import embed_region
from lesiondb.errors import ConfigError
from lesiondb.imaging.patches import PatchSpec
from lesiondb.ingest import ingest_deeplesion, ingest_dicom

KEY = b"pipeline-test-key-0123456789"
IDS = Pseudonymizer(KEY)


def _ingest(engine, root):
    rep = ingest_dicom(engine, root, IDS, embed=False)
    assert rep.rejected == [] and rep.written > 0
    return rep.written


def _embed(engine, root, model_path, cache_dir=None, k=3, force=False):
    model = load_encoder(model_path)
    return stage.embed_lesions(engine, CohortImages(root, model.patch_spec, IDS), model,
                               EmbedOptions(k=k, cache_dir=cache_dir, force=force, workers=0))


def _folder(root, t):
    """The series folder of a target, found the way the stage finds it (headers, pseudonyms)."""
    return CohortImages(root, PatchSpec(), IDS).folder(t)

def test_cohort_lesions_are_embedded_with_exact_edges(engine, image_cohort, tiny_model, tmp_path):
    n = _ingest(engine, image_cohort)
    out = _embed(engine, image_cohort, tiny_model, tmp_path)
    assert out["embedded"] == n and out["notEmbedded"] == 0 and out["totalEmbedded"] == n
    assert set(out["seconds"]) >= {"read", "crop", "embed", "write", "knn", "edges"}
    table = sim.read_embeddings(engine, out["modelId"])
    assert len(table) == n and table.dim == 32
    lists = sim.read_similarity_lists(engine, out["modelId"], table, 3)
    ref = knn.brute_force(table.vectors, 3)
    order = np.argsort(lists.rows)
    assert np.array_equal(lists.index[order], ref.index)
    # re-running embeds nothing and writes no edge
    again = _embed(engine, image_cohort, tiny_model, tmp_path)
    assert again["embedded"] == 0 and again["upToDate"] == n and again["similarEdgesWritten"] == 0
    # a lesion whose data changed (re-ingested with another box) is embedded again, alone
    lid = table.ids[0]
    engine._write("MATCH (l:Lesion {lesionId: $id}) SET l.contentHash = 'changed'", {"id": lid})
    third = _embed(engine, image_cohort, tiny_model, tmp_path)
    assert third["embedded"] == 1 and third["upToDate"] == n - 1


def test_the_same_patch_gives_the_same_embedding(engine, image_cohort, tiny_model):
    _ingest(engine, image_cohort)
    out = _embed(engine, image_cohort, tiny_model)
    t = next(t for t in read_targets(engine) if t.model_id)
    model = load_encoder(tiny_model)
    folder = _folder(image_cohort, t)
    vec, notes = embed_region(model, folder / f"{t.key_slice_index:04d}.dcm", t.bbox_px)
    assert notes["kind"] == "dicom" and notes["sliceIndex"] == t.key_slice_index
    rows = services.similar_to_vector(engine, vec, k=2, exact=True)
    assert rows[0]["lesionId"] == t.lesion_id and rows[0]["distance"] < 1e-3
    assert out["modelId"] == model.model_id


def test_missing_images_are_reported_marked_and_skipped(engine, image_cohort, tiny_model, tmp_path):
    root = tmp_path / "cohort"
    shutil.copytree(image_cohort, root)
    n = _ingest(engine, root)
    targets = read_targets(engine)
    gone = _folder(root, targets[0])
    victims = {t.lesion_id for t in targets if _folder(root, t) == gone}
    saved = tmp_path / "saved"  # outside the cohort: the headers would find it anywhere inside
    shutil.move(gone, saved)
    out = _embed(engine, root, tiny_model, tmp_path)
    assert out["notEmbedded"] == len(victims) and out["embedded"] == n - len(victims)
    assert {p["lesionId"] for p in out["embedProblems"]} == victims
    assert all("not among the DICOM series" in p["reason"] for p in out["embedProblems"])
    rows = engine._read("MATCH (l:Lesion) WHERE l.embedded = false RETURN l.lesionId AS id, l.embeddingProblem AS why", {})
    assert {r["id"] for r in rows} == victims and all(r["why"] for r in rows)
    assert engine._read("MATCH (l:Lesion)-[r:SIMILAR_TO]-() WHERE l.embedded = false RETURN count(r) AS n", {})[0]["n"] == 0
    # the images come back: those lesions are embedded, the others are left alone
    shutil.move(saved, gone)
    out = _embed(engine, root, tiny_model, tmp_path)
    assert out["embedded"] == len(victims) and out["upToDate"] == n - len(victims) and out["notEmbedded"] == 0


def test_many_missing_images_log_a_line_each_up_to_a_cap(engine, image_cohort, tiny_model, tmp_path,
                                                        monkeypatch, caplog):
    """An images folder holding part of the lesions is common (a DLS run: 8 of 1,187): the log
    names the first few and counts the rest, the summary and the graph keep every one."""
    root = tmp_path / "cohort"
    shutil.copytree(image_cohort, root)
    n = _ingest(engine, root)
    assert n >= 3
    for t in read_targets(engine):
        folder = _folder(root, t)
        if folder is not None:
            shutil.rmtree(folder)
    monkeypatch.setattr(stage, "MAX_PROBLEMS_SHOWN", 2)
    with caplog.at_level("WARNING", logger="lesiondb.embedding.stage"):
        out = _embed(engine, root, tiny_model, tmp_path)
    assert out["notEmbedded"] == n and out["embedded"] == 0 and len(out["embedProblems"]) == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "lesiondb.embedding.stage"]
    assert sum(m.startswith("lesion ") and "not embedded" in m for m in lines) == 2
    assert f"{n - 2} more lesions not embedded" in " ".join(lines)
    assert engine._read("MATCH (l:Lesion) WHERE l.embedded = false RETURN count(l) AS n", {})[0]["n"] == n


def _dl_subset(dl_info: Path, images: Path, tmp_path: Path, extra: int = 5) -> tuple[Path, int]:
    """The DL_info rows whose key slice is under ``images`` plus ``extra`` rows without one."""
    have = {f"{p.parent.name}_{p.name}" for p in images.glob("*/*.png")}
    with open(dl_info, newline="") as fh:
        rows = list(csv.reader(fh))
    keep = [r for r in rows[1:] if r[0] in have]
    others = [r for r in rows[1:] if r[0] not in have][:extra]
    out = tmp_path / "dl_subset.csv"
    with open(out, "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *keep, *others])
    return out, len(keep)


def test_deeplesion_pngs_are_embedded(engine, shared_data, dl_info, tiny_model, tmp_path):
    images = shared_data / "deeplesion_images" / "key_slices"
    subset, n_img = _dl_subset(dl_info, images, tmp_path)
    rep = ingest_deeplesion(engine, str(subset), IDS)
    assert rep.written == n_img + 5
    model = load_encoder(tiny_model)
    # the series are found by the lesions' seriesId pseudonyms: no DL_info, no source ids needed
    out = stage.embed_deeplesion(engine, images, model, IDS, options=EmbedOptions(k=4, workers=0))
    assert out["embedded"] == n_img and out["notEmbedded"] == 5
    assert all("not among the series folders" in p["reason"] for p in out["embedProblems"])
    assert out["seconds"]["read"] > 0 and out["seconds"]["crop"] > 0
    # another key's pseudonyms would match no folder: refused, saying so
    with pytest.raises(ConfigError, match="not the key this graph"):
        stage.embed_deeplesion(engine, images, model, Pseudonymizer(b"another-key-0123456789abcdef"))
    # lesions of a graph from before the seriesId: found through the DL_info's file names
    engine._write("MATCH (l:Lesion) REMOVE l.seriesId", {})
    out = stage.embed_deeplesion(engine, images, model, IDS, options=EmbedOptions(k=4, workers=0, force=True))
    assert out["embedded"] == 0 and out["notEmbedded"] == n_img + 5
    out = stage.embed_deeplesion(engine, images, model, IDS, file_names=file_names(subset, IDS),
                                 options=EmbedOptions(k=4, workers=0, force=True))
    assert out["embedded"] == n_img
