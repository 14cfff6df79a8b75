"""lesiondb.graph.neo4j_import (``lesiondb export neo4j-import``): the files, their headers and
values on any engine; and (the Neo4j tier) the round trip: the pipeline's graph written by the
UNWIND ingest, exported, imported with ``neo4j-admin database import full`` into a fresh server,
then ``lesiondb init``: the same graph, vector index included."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from lesiondb.cli.main import cli
from lesiondb.errors import InputError
from lesiondb.graph import graph_stats, queries
from lesiondb.graph.neo4j_import import ARGS_FILE, LABEL_KEYS, dump_graph, export_neo4j_import
from tests.conftest import REPO
from tests.similarity_factory import build


def _header(path) -> list[str]:
    return path.read_text().strip().split(",")


def _rows(path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_label_keys_are_the_schemas_unique_constraints():
    """Every label with a uniqueness constraint is exported, by that property as its id."""
    found = {}
    for q in queries.schema("neo4j"):
        m = re.search(r"FOR \(n:(\w+)\) REQUIRE n\.(\w+) IS UNIQUE", q.text)
        if m:
            found[m.group(1)] = m.group(2)
    assert found == LABEL_KEYS


def test_export_writes_typed_headers_ids_per_label_and_the_import_arguments(engine, tmp_path):
    build(engine, n=30, k=4, embed=27)  # 3 lesions without an image: no embedding, a reason instead
    res = export_neo4j_import(engine, tmp_path / "out")
    assert res.nodes == {"Patient": 3, "Study": 6, "Lesion": 30, "Model": 1}
    assert res.relationships == {"HAS_LESION": 30, "HAS_STUDY": 6, "SIMILAR_TO": 27 * 4}
    nodes, rels = tmp_path / "out" / "nodes", tmp_path / "out" / "relationships"
    lesion = _header(nodes / "Lesion.header.csv")
    assert lesion[0] == "lesionId:ID(Lesion)"
    for col in ("embedding:float[]", "embedded:boolean", "labelled:boolean", "typeCode:long", "typeName:string",
                "longDiameterMm:double", "modelId:string", "embeddingProblem:string", "contentHash:string"):
        assert col in lesion
    assert _header(nodes / "Model.header.csv")[:2] == ["modelId:ID(Model)", "active:boolean"]
    assert _header(rels / "SIMILAR_TO.Lesion.Lesion.header.csv") == [
        ":START_ID(Lesion)", ":END_ID(Lesion)", "distance:double", "modelId:string", "rank:long"]
    assert _header(rels / "HAS_STUDY.Patient.Study.header.csv") == [":START_ID(Patient)", ":END_ID(Study)"]
    rows = _rows(nodes / "Lesion.csv")
    assert len(rows) == 30 and len({r[0] for r in rows}) == 30
    col = {c.split(":")[0]: i for i, c in enumerate(lesion)}
    table = {r[0]: r for r in rows}
    stored = {r["lesionId"]: r["embedding"] for r in engine.run("embeddings", modelId="model-a")}
    for lid, vec in stored.items():
        got = [float(x) for x in table[lid][col["embedding"]].split(";")]
        assert np.allclose(got, vec, atol=1e-7)
    missing = [r for r in rows if r[col["embedding"]] == ""]
    assert len(missing) == 3 and all(r[col["embedded"]] == "false" for r in missing)
    sim = _rows(rels / "SIMILAR_TO.Lesion.Lesion.csv")
    assert {r[0] for r in sim} <= set(stored) and all(int(r[4]) in range(1, 5) for r in sim)
    args = (tmp_path / "out" / ARGS_FILE).read_text().split("\n")
    assert args[:4] == ["database", "import", "full", "neo4j"] and args == res.args + [""]
    assert f"--nodes=Lesion={(nodes / 'Lesion.header.csv').resolve()},{(nodes / 'Lesion.csv').resolve()}" in args
    assert any(a.startswith("--relationships=SIMILAR_TO=") for a in args)
    assert "--multiline-fields=true" not in args and res.coerced == []
    with pytest.raises(InputError, match="not empty"):
        export_neo4j_import(engine, tmp_path / "out")
    again = export_neo4j_import(engine, tmp_path / "out", overwrite=True)
    assert again.nodes == res.nodes


def test_strings_quotes_newlines_empty_strings_and_mixed_types(engine, tmp_path):
    rows = [{"patient": {"patientId": "P-1", "source": 'a "quoted", comma'},
             "study": {"studyId": "S-1", "studyIndex": 1, "note": "two\nlines"},
             "lesion": {"lesionId": "L-1", "contentHash": "h1", "typeName": "", "score": 1, "tags": ["a", "b;c"]}},
            {"patient": {"patientId": "P-2", "source": "plain"},
             "study": {"studyId": "S-2", "studyIndex": 2},
             "lesion": {"lesionId": "L-2", "contentHash": "h2", "score": 2.5, "mixed": "x"}},
            {"patient": {"patientId": "P-3"},
             "study": {"studyId": "S-3", "studyIndex": 3},
             "lesion": {"lesionId": "L-3", "contentHash": "h3", "mixed": 7}}]
    engine.write("upsert_lesions", rows)
    res = export_neo4j_import(engine, tmp_path / "out")
    out = tmp_path / "out" / "nodes"
    header = _header(out / "Lesion.header.csv")
    assert "score:double" in header and "mixed:string" in header and "tags:string[]" in header
    assert res.coerced == ["Lesion.mixed"]
    text = (out / "Lesion.csv").read_text()
    assert '"a|b;c"' in text and "--array-delimiter=|" in res.args  # ";" is in a string of an array
    data = {r[0]: dict(zip([h.split(":")[0] for h in header], r, strict=True)) for r in _rows(out / "Lesion.csv")}
    assert data["L-1"]["typeName"] == "" and '""' in text.splitlines()[0]  # an empty string stays one
    assert data["L-3"]["mixed"] == "7" and data["L-2"]["score"] == "2.5" and data["L-1"]["score"] == "1.0"
    patients = {r[0]: r for r in _rows(out / "Patient.csv")}
    assert patients["P-1"][1] == 'a "quoted", comma' and patients["P-3"][1] == ""
    assert "--multiline-fields=true" in res.args  # the study's note holds a line break


def test_the_cli_writes_the_files_and_says_how_to_import_them(tmp_path):
    runner = CliRunner()
    data = tmp_path / "data"
    res = runner.invoke(cli, ["--data-dir", str(data), "--no-progress", "synth", str(tmp_path / "c"), "--patients", "2",
                              "--no-images", "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["--data-dir", str(data), "--no-progress", "ingest", "dicom", str(tmp_path / "c"),
                              "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["--data-dir", str(data), "--no-progress", "export", "neo4j-import", str(tmp_path / "x"),
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["nodes"]["Lesion"] > 0 and (tmp_path / "x" / ARGS_FILE).is_file()
    res = runner.invoke(cli, ["--data-dir", str(data), "--no-progress", "export", "neo4j-import", str(tmp_path / "x")])
    assert res.exit_code == 1 and "not empty" in res.output
    res = runner.invoke(cli, ["--data-dir", str(data), "--no-progress", "export", "neo4j-import", str(tmp_path / "x"),
                              "--overwrite"])
    assert res.exit_code == 0 and "neo4j-admin $(cat" in res.output and "lesiondb init" in res.output


# -- the round trip on a real server (Neo4j tier) ---------------------------------------------------------
def _server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "neo4j-server"), *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.neo4j
def test_the_bulk_import_gives_the_same_graph_as_the_unwind_ingest(neo4j, image_cohort, tiny_model, tmp_path,
                                                                   monkeypatch):
    from lesiondb.core.pseudonym import Pseudonymizer
    from lesiondb.embedding import services
    from lesiondb.embedding import store as sim
    from lesiondb.graph.neo4j_engine import Neo4jEngine
    from tests.conftest import _neo4j_engine
    from tests.pipeline_factory import CLOCK, run_pipeline

    source = _neo4j_engine()
    sim.drop_vector_index(source)
    run_pipeline(source, image_cohort, tiny_model, Pseudonymizer.from_text("b0" * 32))
    nodes_a, rels_a = dump_graph(source)
    stats_a = graph_stats(source)
    model = services.active_model(source)
    probe = source.run("embeddings", modelId=model["modelId"])[:5]
    near_a = [services.similar_to_vector(source, r["embedding"], k=4) for r in probe]
    by_id_a = [services.similar(source, r["lesionId"], k=4) for r in probe]
    res = export_neo4j_import(source, tmp_path / "export")
    source.close()
    assert res.nodes == stats_a["nodes"] | {"GraphInfo": 1} and res.relationships == stats_a["relationships"]

    server = tmp_path / "server"
    done = _server("admin", str(server), *res.args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert not (server / "import.report").exists() or (server / "import.report").read_text().strip() == ""
    started = _server("start", str(server))
    if started.returncode != 0:  # once more: a free port taken by another server in between, say
        first = started.stderr[-2000:]
        _server("stop", str(server))
        started = _server("start", str(server))
        assert started.returncode == 0, first + "\n--- second try:\n" + started.stderr[-2000:]
    try:
        env = dict(re.findall(r"^export (\w+)=(.*)$", started.stdout, re.M))
        env = {k: v.strip("'\"") for k, v in env.items()}
        monkeypatch.setenv("LESIONDB_PASSWORD", env["LESIONDB_PASSWORD"])
        init = CliRunner().invoke(cli, ["--uri", env["LESIONDB_TEST_NEO4J_URI"], "init", "--json"])
        assert init.exit_code == 0, init.output
        assert json.loads(init.stdout)["vectorIndexDimension"] == model["dim"]
        imported = Neo4jEngine.connect(env["LESIONDB_TEST_NEO4J_URI"])
        try:
            assert graph_stats(imported) == stats_a
            nodes_b, rels_b = dump_graph(imported)
            assert set(nodes_b) == set(nodes_a)
            diffs = []
            for key, props in nodes_a.items():
                other = nodes_b[key]
                assert set(other) == set(props), key
                for p, v in props.items():
                    w = other[p]
                    if p == "embedding":  # float[]: the embeddings' own float32 precision
                        ok = np.allclose(np.asarray(v, np.float32), np.asarray(w, np.float32), atol=1e-7)
                    else:
                        ok = type(v) is type(w) and (v == w or p in CLOCK)
                    if not ok:
                        diffs.append((key, p, v, w))
            assert diffs == []
            assert [r[:5] for r in rels_b] == [r[:5] for r in rels_a]
            assert [r[5] for r in rels_b] == [r[5] for r in rels_a]
            info = sim.vector_index(imported)
            assert info == {"dimension": model["dim"], "state": "ONLINE"}
            near_b = [services.similar_to_vector(imported, r["embedding"], k=4) for r in probe]
            assert [[x["lesionId"] for x in n] for n in near_b] == [[x["lesionId"] for x in n] for n in near_a]
            assert {x["source"] for n in near_b for x in n} == {"index"}
            by_id_b = [services.similar(imported, r["lesionId"], k=4) for r in probe]
            assert [[(x["lesionId"], x["source"]) for x in n] for n in by_id_b] == \
                   [[(x["lesionId"], x["source"]) for x in n] for n in by_id_a]
        finally:
            imported.close()
    finally:
        stopped = _server("stop", str(server))
        assert stopped.returncode == 0, stopped.stderr
