"""``lesiondb serve`` through click's CliRunner (uvicorn replaced by a recorder): the default host
is this machine only, another host warns, the demo's cohort is the default image folder."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import lesiondb.web
from lesiondb.cli.common import AppContext
from lesiondb.cli.main import cli


@pytest.fixture
def served(engine, monkeypatch):
    got = {}

    def record(app, host, port, **kw):
        got.update(app=app, host=host, port=port, **kw)

    monkeypatch.setattr(lesiondb.web, "serve", record)
    monkeypatch.setattr(AppContext, "engine", lambda self: engine)
    return got


def _run(data, *args):
    return CliRunner().invoke(cli, ["--data-dir", str(data), "--no-progress", "serve", *args], catch_exceptions=False)


def test_binds_this_machine_by_default(served, tmp_path):
    r = _run(tmp_path)
    assert r.exit_code == 0, r.output
    assert (served["host"], served["port"]) == ("127.0.0.1", 8750)
    assert "warning" not in r.stderr and "http://127.0.0.1:8750/" in r.stderr
    assert "crops show a placeholder" in r.stderr  # no --images and no demo cohort
    state = served["app"].state.web
    assert state.library.roots == [] and state.cache.folder == tmp_path / "cache" / "crops"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5"])
def test_another_host_needs_the_flag_and_warns(served, tmp_path, host):
    r = _run(tmp_path, "--host", host, "--port", "9000")
    assert r.exit_code == 0, r.output
    assert served["host"] == host and served["port"] == 9000
    assert "warning: listening on" in r.stderr and "patient data" in r.stderr


def test_demo_cohort_is_the_default_image_folder(served, tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "cohort.json").write_text(json.dumps({"generator": "lesiondb synth"}))
    r = _run(tmp_path, "--no-crop-cache", "--reviewer", "dr.q")
    assert r.exit_code == 0, r.output
    state = served["app"].state.web
    assert state.library.roots == [tmp_path / "demo"] and state.cache.folder is None
    assert state.reviewer == "dr.q"
    assert "the demo cohort" in r.stderr


def test_images_given_replace_the_default(served, tmp_path):
    other = tmp_path / "ct"
    other.mkdir()
    r = _run(tmp_path, "--images", str(other), "--images", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert served["app"].state.web.library.roots == [other, tmp_path]
    assert _run(tmp_path, "--images", str(tmp_path / "absent")).exit_code != 0


def test_a_key_other_than_the_graphs_warns_that_crops_will_be_placeholders(served, engine, tmp_path):
    from lesiondb.core.pseudonym import Pseudonymizer
    from lesiondb.graph.keys import claim_pseudonym_key

    claim_pseudonym_key(engine, Pseudonymizer.from_text("the-ingest-key-0123456789"))
    r = _run(tmp_path, "--images", str(tmp_path), "--pseudonym-key", "another-key-0123456789")
    assert r.exit_code == 0 and "is not the one this graph was built with" in r.stderr
    r = _run(tmp_path, "--images", str(tmp_path), "--pseudonym-key", "the-ingest-key-0123456789")
    assert r.exit_code == 0 and "not the one" not in r.stderr
