"""docs/cookbook.md: every query runs as written (with its :param values) on the embedded engine
and — with the Neo4j tier on — every block, the Neo4j-only ones included, on the Neo4j server as a
Browser user would paste it; every block passes Neo4j's own Cypher parser (tools/cypher-lint)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lesiondb.embedding import services
from lesiondb.embedding import store as sim
from lesiondb.tracking.match import match_graph
from tests.similarity_factory import build
from tests.tracking.test_match import gap_cohort, ingest, lesion

REPO = Path(__file__).resolve().parent.parent
COOKBOOK = REPO / "docs" / "cookbook.md"
LINT_DIR = REPO / "tools" / "cypher-lint"
_BLOCK = re.compile(r"^### (?P<title>.+?)\n.*?```cypher(?P<dialect>[ a-z0-9]*)\n(?P<body>.*?)```", re.S | re.M)
_PARAM = re.compile(r"^:param\s+(\w+)\s*=>\s*(.+?);?\s*$")


def _value(raw: str):
    raw = raw.strip()
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1]
    return json.loads(raw)  # numbers, true/false/null, lists


def blocks() -> list[dict]:
    out = []
    for m in _BLOCK.finditer(COOKBOOK.read_text(encoding="utf-8")):
        params, lines = {}, []
        for line in m.group("body").splitlines():
            pm = _PARAM.match(line.strip())
            if pm:
                params[pm.group(1)] = _value(pm.group(2))
            elif line.strip():
                lines.append(line)
        out.append({"title": m.group("title").strip(), "neo4j_only": "neo4j" in m.group("dialect"),
                    "params": params, "query": "\n".join(lines)})
    return out


BLOCKS = blocks()
PORTABLE = [b for b in BLOCKS if not b["neo4j_only"]]


def test_the_cookbook_has_queries_and_every_block_is_well_formed():
    assert len(PORTABLE) >= 12 and any(b["neo4j_only"] for b in BLOCKS)
    for b in BLOCKS:
        used = set(re.findall(r"\$(\w+)", b["query"]))
        assert used == set(b["params"]), f"{b['title']}: :param lines {sorted(b['params'])} != $params {sorted(used)}"
        assert "(portable)" in b["title"] or b["neo4j_only"], b["title"]
        assert not b["query"].rstrip().endswith(";")


def _cookbook_graph(eng) -> dict:
    """A graph with embeddings, edges, predictions, clusters and one lesion planted with a wrong label."""
    ids, patients, types, _, _ = build(eng, n=160, embed=150, k=5, n_patients=20)
    services.predict_types(eng, k=5)
    services.cluster(eng, seed=0)  # GDS Louvain on a Neo4j server with the plug-in
    liver = [lid for i, lid in enumerate(ids[:150]) if i % 3 and int(types[i]) == 4]
    query_lesion = liver[0]
    planted = liver[1]  # a liver lesion relabelled bone: its liver neighbours disagree
    eng._write("MATCH (l:Lesion {lesionId: $id}) SET l.typeName = 'bone', l.typeCode = 1", {"id": planted})
    pid = dict(zip(ids, patients, strict=True))
    # a matched patient with a gap in a track: SAME_LESION probabilities and a POSSIBLE edge
    # … and one whose study-2 twins are equally likely to be its study-1 lesion: a link at ~0.5
    twins = [lesion("D", 1, "a", (0.5, 0.5, 0.5), 20.0), lesion("D", 2, "b", (0.5 + 10 / 370, 0.5, 0.5), 20.0),
             lesion("D", 2, "c", (0.5 - 10 / 370, 0.5, 0.5), 20.0)]
    # … and one whose study-1 lesion is bookmarked twice, 4 mm apart (one lesion: one track)
    bookmarks = [lesion("E", 1, "a", (0.5, 0.5, 0.5), 20.0), lesion("E", 1, "b", (0.5 + 4 / 370, 0.5, 0.5), 18.0),
                 lesion("E", 2, "c", (0.5, 0.5, 0.5), 21.0)]
    ingest(eng, gap_cohort() + twins + bookmarks)
    for patient in ("P-C", "P-D", "P-E"):
        match_graph(eng, patient=patient, calibrate=False, workers=1)
    return {"engine": eng, "lesionId": query_lesion, "patientId": pid[query_lesion], "planted": planted}


@pytest.fixture(scope="module")
def cookbook_graph(falkor_server):
    from tests.conftest import _falkor_engine

    eng = _falkor_engine(falkor_server)
    yield _cookbook_graph(eng)
    eng.graph.delete()


@pytest.fixture(scope="module")
def neo4j_cookbook_graph():
    from tests.conftest import _neo4j_engine

    eng = _neo4j_engine()  # emptied first
    yield _cookbook_graph(eng)
    eng.close()


def _run_as_written(block: dict, g: dict) -> list[dict]:
    """The block's statement with its :param values (the doc's example ids → this graph's)."""
    params = dict(block["params"])
    for key in ("lesionId", "patientId"):
        if key in params:
            params[key] = g[key]
    rows = g["engine"]._read(block["query"], params)
    assert rows, f"{block['title']}: no rows on a graph that has what it asks for"
    return rows


def _check(block: dict, g: dict, rows: list[dict]) -> None:
    """What each block promises, beyond returning rows."""
    title, k = block["title"], block["params"].get("k")
    if title.startswith("The lesions most similar to a lesion"):
        want = [r["lesionId"] for r in services.similar(g["engine"], g["lesionId"], k=k)]
        assert len(rows) == 5 and [r["lesionId"] for r in rows] == want[:5]  # the graph stores k = 5
    elif title.startswith("…of one type"):
        assert all(r["patientId"] != g["patientId"] for r in rows)
    elif title.startswith("Labelled lesions whose neighbours disagree"):
        assert g["planted"] in {r["lesionId"] for r in rows}
    elif title.startswith("The members of one cluster"):
        size = next(c["size"] for c in services.clusters(g["engine"]) if c["clusterId"] == "C0001")
        assert len(rows) == min(size, 100)
    elif title.startswith("Which model produced what"):
        assert rows[0]["modelId"] == "model-a" and rows[0]["lesions"] == 150
    elif title.startswith("Lesions without an embedding"):
        no_image = [r for r in rows if r["reason"] == "no image"]  # (the matched patient's are not embedded yet)
        assert no_image == [{"reason": "no image", "lesions": 10, "examples": no_image[0]["examples"]}]
    elif title.startswith("The least certain links"):
        assert all(r["probability"] <= block["params"]["maxProbability"] for r in rows)
        assert rows == sorted(rows, key=lambda r: r["probability"])
    elif title.startswith("Lesions bookmarked twice"):
        assert [(r["lesion"], r["bookmark"], r["study"]) for r in rows] == [("L-E-1-1-a", "L-E-1-1-b", 1)]
    elif title.startswith("Lesions a track may be missing"):
        assert "L-C-2-1-a" in [r["candidate"] for r in rows] and all(r["reviewId"].startswith("PS-") for r in rows)
        assert rows == sorted(rows, key=lambda r: -r["probability"])
    elif title.startswith("Nearest lesions to a lesion through the vector index"):
        # the true distances, nearest first, and (150 vectors) at most one of the k nearest missed
        table = sim.read_embeddings(g["engine"], "model-a")
        q = table.vectors[table.positions([g["lesionId"]])[0]].astype(np.float64)
        d = dict(zip(table.ids, np.linalg.norm(table.vectors.astype(np.float64) - q, axis=1), strict=True))
        got = [r["distance"] for r in rows]
        assert len(rows) == k and g["lesionId"] not in {r["lesionId"] for r in rows} and got == sorted(got)
        assert np.allclose(got, [d[r["lesionId"]] for r in rows], atol=1e-4)
        nearest = sorted((x for x in d if x != g["lesionId"]), key=d.get)[:k]
        assert len({r["lesionId"] for r in rows} & set(nearest)) >= k - 1


@pytest.mark.parametrize("block", PORTABLE, ids=[b["title"] for b in PORTABLE])
def test_cookbook_query_runs_on_the_embedded_engine(block, cookbook_graph):
    _check(block, cookbook_graph, _run_as_written(block, cookbook_graph))


@pytest.mark.neo4j
@pytest.mark.parametrize("block", BLOCKS, ids=[b["title"] for b in BLOCKS])
def test_cookbook_query_runs_on_neo4j(block, neo4j, neo4j_cookbook_graph):
    _check(block, neo4j_cookbook_graph, _run_as_written(block, neo4j_cookbook_graph))


def _param_type(v) -> str:
    return {bool: "BOOLEAN", int: "INTEGER", float: "FLOAT", str: "STRING"}.get(type(v), "ANY")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (the Cypher lint needs Node >= 20)")
@pytest.mark.skipif(not (LINT_DIR / "node_modules" / "@neo4j-cypher" / "language-support").is_dir(),
                    reason="Cypher lint not installed: run `npm ci` in tools/cypher-lint")
def test_cookbook_passes_the_neo4j_parser(tmp_path):
    root = tmp_path / "cypher"
    shutil.copytree(REPO / "cypher", root)  # the repo's writes declare the labels and types
    for i, b in enumerate(BLOCKS):
        params = ", ".join(f"{k}: {_param_type(v)}" for k, v in b["params"].items()) or "none"
        (root / "core" / f"cookbook_{i:02d}.cypher").write_text(
            f"// name: cookbook_{i:02d}\n// params: {params}\n// returns: x\n// idempotent: read-only\n"
            f"{b['query']}\n", encoding="utf-8")
    res = subprocess.run(["node", str(LINT_DIR / "lint.mjs"), "--root", str(root)], capture_output=True, text=True,
                         timeout=300)
    cook = [line for line in res.stdout.splitlines() if "cookbook_" in line]
    assert res.returncode == 0, res.stdout + res.stderr
    assert not [line for line in cook if "error" in line], cook
