"""CLI: ``embed`` and ``ingest deeplesion`` reading images in worker processes (``--workers``)."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from lesiondb.cli.main import cli


def _runner(data):
    runner = CliRunner()

    def run(*args):
        res = runner.invoke(cli, ["--data-dir", str(data), *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res

    return run


def test_workers_option_embeds_the_same_lesions(image_cohort, tiny_model, tmp_path):
    vectors = {}
    for workers in ("0", "2"):
        run = _runner(tmp_path / f"data{workers}")
        run("engine", "start")
        try:
            run("ingest", "dicom", str(image_cohort), "--json")
            out = json.loads(run("embed", "--cohort", str(image_cohort), "--model", str(tiny_model), "-k", "3",
                                 "--workers", workers, "--json").output)["cohort"]
            assert out["embedded"] > 0 and out["notEmbedded"] == 0
        finally:
            run("engine", "stop")
        vectors[workers] = (out["embedded"], out["totalEmbedded"], out["similarEdgesWritten"])
    assert vectors["0"] == vectors["2"]


def test_help_names_the_workers_option():
    runner = CliRunner()
    for cmd in (["embed"], ["ingest", "deeplesion"]):
        res = runner.invoke(cli, [*cmd, "--help"])
        assert res.exit_code == 0 and "--workers" in res.output and "core" in res.output


def test_same_vectors_with_and_without_workers(image_cohort, tiny_model, tmp_path):
    """The embedding written for each lesion does not depend on how many processes read the images."""
    from lesiondb.core.pseudonym import Pseudonymizer
    from lesiondb.embedding import EmbedOptions, embed_lesions, load_encoder
    from lesiondb.embedding import store as sim
    from lesiondb.embedding.patches import CohortImages
    from lesiondb.graph.falkor_engine import FalkorEngine
    from lesiondb.ingest import ingest_dicom

    model = load_encoder(tiny_model)
    ids = Pseudonymizer(b"embed-cli-test-key-0123456789")
    tables = {}
    for workers in (0, 2):
        eng = FalkorEngine.embedded(str(tmp_path / f"d{workers}"))
        try:
            ingest_dicom(eng, image_cohort, ids, embed=False)
            src = CohortImages(image_cohort, model.patch_spec, ids)
            src.task_lesions = 2  # several tasks, so that workers=2 runs a pool
            out = embed_lesions(eng, src, model, EmbedOptions(k=3, workers=workers))
            assert out["notEmbedded"] == 0 and ("readWait" in out["seconds"]) == (workers == 2)
            t = sim.read_embeddings(eng, out["modelId"])
            tables[workers] = dict(zip(t.ids, t.vectors, strict=True))
        finally:
            eng.close()
    assert tables[0].keys() == tables[2].keys()
    for lid, v in tables[0].items():
        np.testing.assert_allclose(tables[2][lid], v, atol=2e-3)  # stored in fixed point
