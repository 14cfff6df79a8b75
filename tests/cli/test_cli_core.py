"""CLI: init, ingest deeplesion, stats, query, engine — through click's CliRunner."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lesiondb.cli.main import cli


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()

    def _run(*args, ok=True):
        res = runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), *args], catch_exceptions=False)
        if ok:
            assert res.exit_code == 0, res.output
        return res

    return _run


def _small_csv(dl_info, tmp_path, n=60):
    lines = open(dl_info).read().splitlines()[: n + 1]
    p = tmp_path / "small.csv"
    p.write_text("\n".join(lines) + "\n")
    return p, n


def test_help_lists_commands():
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    for name in ("ingest", "stats", "query", "engine", "init", "eval"):
        assert name in res.output
    res = CliRunner().invoke(cli, ["ingest", "--help"])
    assert "deeplesion" in res.output


def test_ingest_stats_query_roundtrip(run, dl_info, tmp_path):
    path, n = _small_csv(dl_info, tmp_path)
    out = json.loads(run("ingest", "deeplesion", str(path), "--json").output)
    assert out["written"] == n and out["rejected"] == 0
    out = json.loads(run("ingest", "deeplesion", str(path), "--json").output)
    assert out["written"] == 0 and out["unchanged"] == n
    stats = json.loads(run("stats", "--json").output)
    assert stats["nodes"]["Lesion"] == n
    assert set(stats) == {"nodes", "relationships"}
    rows = json.loads(run("query", "patients", "--json").output)
    assert sum(r["lesions"] for r in rows) == n
    pid = rows[0]["patientId"]
    rows = json.loads(run("query", "lesions", "-p", f"patientId={pid}", "-p", "limit=2", "--json").output)
    assert len(rows) <= 2 and all(r["patientId"] == pid for r in rows)
    listing = run("query", "--list").output
    assert "upsert_lesions" in listing and "patients" in listing


def test_ingest_reports_bad_rows_by_line(run, dl_info, tmp_path):
    path, n = _small_csv(dl_info, tmp_path, 10)
    lines = path.read_text().splitlines()
    lines.insert(3, lines[3].replace(".png,", ".png,notanumber,", 1))
    path.write_text("\n".join(lines) + "\n")
    res = run("ingest", "deeplesion", str(path))
    assert "rejected 1" in res.output and f"{path}:4" in res.output
    assert json.loads(run("stats", "--json").output)["nodes"]["Lesion"] == n


def test_query_errors_are_clear(run):
    res = run("query", "no_such_query", ok=False)
    assert res.exit_code != 0 and "no query named 'no_such_query'" in res.output
    res = run("query", "lesions", "-p", "oops", ok=False)
    assert res.exit_code != 0 and "KEY=VALUE" in res.output


def test_missing_file_is_a_usage_error(run, tmp_path):
    res = run("ingest", "deeplesion", str(tmp_path / "missing.csv"), ok=False)
    assert res.exit_code == 2 and "does not exist" in res.output


def test_engine_start_status_stop(run):
    st = json.loads(run("engine", "status", "--json").output)
    assert st["running"] is False
    st = json.loads(run("engine", "start", "--json").output)
    try:
        assert st["running"] and st["daemon"] and "redis-cli -s" in st["connect"]
        assert json.loads(run("init", "--json").output)["schema"]
        assert json.loads(run("engine", "status", "--json").output)["running"] is True
    finally:
        out = json.loads(run("engine", "stop", "--json").output)
    assert out["stopped"] is True
    assert json.loads(run("engine", "status", "--json").output)["running"] is False
