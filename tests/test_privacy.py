"""Privacy by default: after ingest, embed, match, mine and a DICOM SR export read back (`export sr`,
`ingest sr`) of a synthetic cohort, no PatientID, StudyInstanceUID, SeriesInstanceUID or study date
of the cohort is anywhere in the graph (every property of every node and relationship), in the data
dir's files, or in any ``--json`` output; with ``--keep-source-ids`` they are."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lesiondb.cli.main import cli
from tests.identifiers import source_identifiers


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    synth = pytest.importorskip("lesiondb.synth")
    root = tmp_path_factory.mktemp("privacy") / "cohort"
    synth.generate_cohort(root, 3, seed=21, workers=1)
    return root


def _identifiers(root: Path) -> set[str]:
    out = source_identifiers(root)
    assert len(out) > 10 and all(len(x) >= 7 for x in out)
    return out


def _run_everything(root: Path, data: Path, tiny_model: Path, *extra: str) -> list[str]:
    """The default pipeline through the CLI, as a user runs it; returns every --json output."""
    runner = CliRunner()
    outputs = []
    for args in (["ingest", "dicom", str(root), "--model", str(tiny_model), "-k", "3", *extra],
                 ["embed", "--cohort", str(root), "--model", str(tiny_model), "-k", "3", "--force"],
                 ["match"],
                 ["mine", "--images", str(root), "--no-embed", "--no-rank-calibration"],
                 ["export", "sr", str(data.parent / "sr"), "--images", str(root)],
                 ["ingest", "sr", str(data.parent / "sr"), "--images", str(root), "--no-embed"],
                 ["review", "list"],
                 ["query", "lesions"], ["query", "patients"], ["stats"]):
        res = runner.invoke(cli, ["--data-dir", str(data), "--no-progress", *args, "--json"], catch_exceptions=False)
        assert res.exit_code == 0, (args, res.output)
        json.loads(res.stdout)
        outputs.append(res.stdout)
    return outputs


def _graph_text(data: Path) -> str:
    """Every property of every node and relationship, as text."""
    from lesiondb.workspace import Workspace

    with Workspace(data) as ws:
        eng = ws.engine()
        nodes = eng._read("MATCH (n) RETURN labels(n) AS l, properties(n) AS p", {})
        rels = eng._read("MATCH ()-[r]->() RETURN type(r) AS t, properties(r) AS p", {})
    return json.dumps([nodes, rels], default=str)


def _file_text(data: Path) -> str:
    """The data dir's files (append-only file, snapshot, caches, logs) as bytes decoded leniently,
    the snapshot rewritten without compression first (compressed strings would hide in it)."""
    from lesiondb.workspace import Workspace

    with Workspace(data) as ws:
        conn = ws.engine().db.connection
        conn.config_set("rdbcompression", "no")
        conn.bgrewriteaof()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (conn.info("persistence")["aof_rewrite_in_progress"]
                                               or conn.info("persistence")["aof_rewrite_scheduled"]):
            time.sleep(0.1)
    return "\n".join(f.read_bytes().decode("latin-1") for f in sorted(data.rglob("*")) if f.is_file())


def _found(ids: set[str], text: str) -> set[str]:
    return {i for i in ids if re.search(re.escape(i), text)}


def test_no_source_identifier_in_the_graph_its_files_or_any_json(cohort, tiny_model, tmp_path):
    ids = _identifiers(cohort)
    data = tmp_path / "data"
    outputs = _run_everything(cohort, data, tiny_model)
    stats = json.loads(outputs[-1])
    assert stats["nodes"]["Lesion"] > 0 and stats["relationships"]["SIMILAR_TO"] > 0
    assert stats["nodes"].get("Track", 0) > 0
    assert _found(ids, "\n".join(outputs)) == set()
    assert _found(ids, _graph_text(data)) == set()
    assert _found(ids, _file_text(data)) == set()
    assert str(cohort) not in _graph_text(data)  # no local path either


def test_keep_source_ids_keeps_them(cohort, tiny_model, tmp_path):
    ids = _identifiers(cohort)
    data = tmp_path / "data"
    _run_everything(cohort, data, tiny_model, "--keep-source-ids")
    # every patient id, UID and date, as asked (dates in the ISO form the graph stores), in the
    # graph and in its files: the file check above can see them
    kept = {i for i in ids if not i.isdigit()}
    assert _found(ids, _graph_text(data)) == kept
    assert _found(ids, _file_text(data)) >= kept
