"""lesiondb.embedding.stage: the embedding stage on a small synthetic DICOM image_cohort and on real DeepLesion PNGs."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from lesiondb.core import knn
from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.embedding import services
from lesiondb.embedding import stage as pipeline
from lesiondb.embedding import store as sim

KEY = b"pipeline-test-key-0123456789"


def _ingest(engine, root):
    from lesiondb.ingest.dicom import ingest_cohort

    rep = ingest_cohort(engine, root, Pseudonymizer(KEY))
    assert rep.rejected == [] and rep.written > 0
    return rep.written


def _embed(engine, root, model_path, cache_dir=None, k=3, force=False):
    model = pipeline.load_encoder(model_path)
    return pipeline.embed_targets(engine, pipeline.read_targets(engine), pipeline.CohortImages(root, model.patch_spec),
                                  sim.ModelInfo.from_encoder(model), pipeline.embed_patches_fn(model), k=k,
                                  cache_dir=cache_dir, force=force)


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
    t = next(t for t in pipeline.read_targets(engine) if t.model_id)
    model = pipeline.load_encoder(tiny_model)
    folder = image_cohort / t.image_ref
    vec, notes = pipeline.embed_region(model, folder / f"{t.key_slice_index:04d}.dcm", t.bbox_px)
    assert notes["kind"] == "dicom" and notes["sliceIndex"] == t.key_slice_index
    rows = services.similar_to_vector(engine, vec, k=2, exact=True)
    assert rows[0]["lesionId"] == t.lesion_id and rows[0]["distance"] < 1e-3
    assert out["modelId"] == model.model_id


def test_missing_images_are_reported_marked_and_skipped(engine, image_cohort, tiny_model, tmp_path):
    root = tmp_path / "cohort"
    shutil.copytree(image_cohort, root)
    n = _ingest(engine, root)
    targets = pipeline.read_targets(engine)
    gone = targets[0].image_ref
    victims = {t.lesion_id for t in targets if t.image_ref == gone}
    shutil.rmtree(root / gone)
    out = _embed(engine, root, tiny_model, tmp_path)
    assert out["notEmbedded"] == len(victims) and out["embedded"] == n - len(victims)
    assert {p["lesionId"] for p in out["embedProblems"]} == victims
    assert all(gone.split("/")[-1] in p["reason"] for p in out["embedProblems"])
    rows = engine._read("MATCH (l:Lesion) WHERE l.embedded = false RETURN l.lesionId AS id, l.embeddingProblem AS why", {})
    assert {r["id"] for r in rows} == victims and all(r["why"] for r in rows)
    assert engine._read("MATCH (l:Lesion)-[r:SIMILAR_TO]-() WHERE l.embedded = false RETURN count(r) AS n", {})[0]["n"] == 0
    # the images come back: those lesions are embedded, the others are left alone
    shutil.copytree(image_cohort / gone, root / gone)
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
    for t in pipeline.read_targets(engine):
        shutil.rmtree(root / t.image_ref, ignore_errors=True)
    monkeypatch.setattr(pipeline, "MAX_PROBLEMS_SHOWN", 2)
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
    from lesiondb.ingest.records import ingest_deeplesion

    images = shared_data / "deeplesion_images" / "key_slices"
    subset, n_img = _dl_subset(dl_info, images, tmp_path)
    ids = Pseudonymizer(KEY)
    rep = ingest_deeplesion(engine, str(subset), ids)
    assert rep.written == n_img + 5
    model = pipeline.load_encoder(tiny_model)
    names = pipeline.deeplesion_file_names(subset, ids)
    src = pipeline.DeepLesionImages(images, model.patch_spec, names)
    out = pipeline.embed_targets(engine, pipeline.read_targets(engine), src, sim.ModelInfo.from_encoder(model),
                                 pipeline.embed_patches_fn(model), k=4)
    assert out["embedded"] == n_img and out["notEmbedded"] == 5
    assert all("not found" in p["reason"] for p in out["embedProblems"])
    assert out["seconds"]["read"] > 0 and out["seconds"]["crop"] > 0
    # without the DL_info (and no source ids kept) the key slices cannot be found: said so
    src = pipeline.DeepLesionImages(images, model.patch_spec, {})
    out = pipeline.embed_targets(engine, pipeline.read_targets(engine), src, sim.ModelInfo.from_encoder(model),
                                 pipeline.embed_patches_fn(model), k=4, force=True)
    assert out["embedded"] == 0 and "--dl-info" in out["embedProblems"][0]["reason"]


def test_region_patch_errors_name_the_fix(image_cohort, tmp_path):
    from lesiondb.errors import InputError
    from lesiondb.imaging.patches import PatchSpec

    png = tmp_path / "001.png"
    png.write_bytes(b"not a png")
    with pytest.raises(InputError, match="--spacing"):
        pipeline.region_patch(png, (1, 1, 5, 5), PatchSpec())
    with pytest.raises(InputError, match="x1 < x2"):
        pipeline.region_patch(png, (5, 1, 1, 5), PatchSpec(), spacing_mm=(1.0, 1.0))
    series = next(p for p in (image_cohort / "dicom").rglob("*") if p.is_dir() and any(p.glob("*.dcm")))
    with pytest.raises(InputError, match="--slice"):
        pipeline.region_patch(series, (10, 10, 20, 20), PatchSpec())


def _by_id(results):
    out = {}
    for r in results:
        assert r.target.lesion_id not in out  # each lesion once
        out[r.target.lesion_id] = r
    return out


def test_worker_processes_give_the_patches_of_whole_series_reads(engine, image_cohort, tiny_model):
    from lesiondb.imaging.dicom import read_series
    from lesiondb.imaging.patches import extract_patch_from_volume

    _ingest(engine, image_cohort)
    spec = pipeline.load_encoder(tiny_model).patch_spec
    targets = pipeline.read_targets(engine)
    here_src = pipeline.CohortImages(image_cohort, spec)
    here = _by_id(pipeline.iter_patches(here_src, targets, workers=0))
    pool_src = pipeline.CohortImages(image_cohort, spec)
    pool_src.task_lesions = 2  # several tasks: the pool runs (with one task it reads here)
    pooled = _by_id(pipeline.iter_patches(pool_src, targets, workers=2, in_flight=1))
    assert set(here) == set(pooled) == {t.lesion_id for t in targets}
    assert all(r.problem is None for r in pooled.values())
    assert pool_src.timings["read"] > 0 and pool_src.timings["crop"] > 0 and "wait" in pool_src.timings
    for t in targets:
        np.testing.assert_array_equal(pooled[t.lesion_id].image, here[t.lesion_id].image)
        vol = read_series(image_cohort / t.image_ref, allow_gaps=True)  # the old path: every slice of the series
        ref = extract_patch_from_volume(vol.hu, t.key_slice_index, t.bbox_px, vol.spacing_xy_mm,
                                        vol.slice_interval_mm, spec)
        np.testing.assert_allclose(here[t.lesion_id].image, ref.image, atol=1e-5)
        np.testing.assert_allclose(here[t.lesion_id].box, ref.box_px, atol=1e-5)


def test_bad_images_fail_their_lesions_only_in_worker_processes(engine, image_cohort, tiny_model, tmp_path):
    root = tmp_path / "cohort"
    shutil.copytree(image_cohort, root)
    _ingest(engine, root)
    spec = pipeline.load_encoder(tiny_model).patch_spec
    targets = pipeline.read_targets(engine)
    by_series: dict[str, list] = {}
    for t in targets:
        by_series.setdefault(t.image_ref, []).append(t)
    refs = sorted(by_series, key=lambda r: -len(by_series[r]))
    gone, hurt = refs[0], refs[1]
    shutil.rmtree(root / gone)
    victim = by_series[hurt][0]
    key_file = root / hurt / f"{victim.key_slice_index:04d}.dcm"
    key_file.write_bytes(key_file.read_bytes()[:-500])  # its pixels truncated
    src = pipeline.CohortImages(root, spec)
    src.task_lesions = 2
    out = _by_id(pipeline.iter_patches(src, targets, workers=2))
    assert "wait" in src.timings  # read in worker processes
    assert set(out) == {t.lesion_id for t in targets}
    bad = {lid for lid, r in out.items() if r.problem}
    on_key = {t.lesion_id for t in by_series[hurt] if t.key_slice_index == victim.key_slice_index}
    assert bad == {t.lesion_id for t in by_series[gone]} | on_key
    assert all(gone.split("/")[-1] in out[t.lesion_id].problem for t in by_series[gone])
    assert key_file.name in out[victim.lesion_id].problem and "truncated" in out[victim.lesion_id].problem
    assert all(out[lid].image is not None for lid in set(out) - bad)


class _Exploding(pipeline.CohortImages):
    """Raises an unexpected error on one series."""

    def run_task(self, task):
        if any(ref == self.bad_ref for ref, _ in task.groups):
            raise RuntimeError("boom")
        return super().run_task(task)


def test_an_unexpected_error_fails_only_its_task(engine, image_cohort, tiny_model):
    _ingest(engine, image_cohort)
    targets = pipeline.read_targets(engine)
    src = _Exploding(image_cohort, pipeline.load_encoder(tiny_model).patch_spec)
    src.bad_ref = targets[0].image_ref
    src.task_lesions = 1  # a task per series
    out = _by_id(pipeline.iter_patches(src, targets, workers=0))
    bad = {lid for lid, r in out.items() if r.problem}
    task = next(tk for tk in src.tasks(targets) if isinstance(tk, pipeline.PatchTask)
                and any(ref == src.bad_ref for ref, _ in tk.groups))
    assert bad == {t.lesion_id for t in task.targets} and len(bad) < len(targets)
    assert all("boom" in out[lid].problem for lid in bad)


def test_deeplesion_pngs_in_worker_processes_equal_whole_slice_stacks(shared_data, dl_info, tiny_model, tmp_path):
    from lesiondb.datasets.deeplesion import parse_file_name, read_dl_info
    from lesiondb.imaging.patches import extract_patch
    from lesiondb.imaging.png import read_stack

    images = shared_data / "deeplesion_images" / "key_slices"
    have = {f"{p.parent.name}_{p.name}" for p in images.glob("*/*.png")}
    spec = pipeline.load_encoder(tiny_model).patch_spec
    items = [a.lesion for a in read_dl_info(dl_info, Pseudonymizer(KEY), keep_source_ids=True)
             if not hasattr(a, "reason") and a.lesion.source_id in have]
    targets = [pipeline.Target(x.lesion_id, "deeplesion", None, x.key_slice_index, x.bbox_px, x.spacing_mm,
                               x.slice_interval_mm, None, None, None, "p", x.source_id, -1) for x in items]
    assert len(targets) >= 40
    out = _by_id(pipeline.iter_patches(pipeline.DeepLesionImages(images, spec), targets, workers=2))
    assert set(out) == {t.lesion_id for t in targets} and not any(r.problem for r in out.values())
    for t in targets:
        p, s, r, k = parse_file_name(t.source_id)
        ref = extract_patch(read_stack(images, f"{p:06d}_{s:02d}_{r:02d}", k, t.slice_interval_mm, spec.offset_mm),
                            t.bbox_px, t.spacing_mm, spec)
        np.testing.assert_allclose(out[t.lesion_id].image, ref.image, atol=1e-6)
        np.testing.assert_allclose(out[t.lesion_id].box, ref.box_px, atol=1e-6)
