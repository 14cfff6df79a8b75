"""docker-compose.yml and the GitHub Actions workflow: parse, and hold what the docs promise.

`docker compose config` is not available on the project machines, so the compose file is checked
here: YAML, compose's variable interpolation (emulated for the forms the file uses), and the
health check's shell command actually run against a stand-in ``cypher-shell``.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse docker-compose.yml and the workflow")

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
CI_RUN = REPO / ".ci" / "run"
TOOL = REPO / "tools" / "neo4j-server"


def pinned(name: str) -> str:
    """A version pinned in tools/neo4j-server (NEO4J_VERSION, GDS_VERSION)."""
    m = re.search(rf'^{name} = "([\d.]+)"', TOOL.read_text(), re.M)
    assert m, f"tools/neo4j-server pins no {name}"
    return m.group(1)


class InterpolationError(Exception):
    pass


def interpolate(value, env: dict[str, str]):
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$`` on every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("bad") is not None:  # compose rejects e.g. ${VAR#prefix}: invalid interpolation format
            raise InterpolationError(f"invalid interpolation format in {value!r}")
        name, op, arg = m.group("name") or m.group("bare"), m.group("op"), m.group("arg")
        val = env.get(name)
        if op == ":?" and not val:
            raise InterpolationError(f"{name}: {arg}")
        if op == ":-" and not val:
            return arg
        return val or ""

    return re.sub(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)|(?P<bad>\$\{)",
                  sub, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_neo4j5_community_on_bolt_with_named_volume(compose):
    svc = compose["services"]["neo4j"]
    assert re.fullmatch(r"neo4j:5[\w.]*-community", svc["image"])
    assert svc["image"] == f"neo4j:{pinned('NEO4J_VERSION')}-community"  # the server the tests run
    ports = [str(p) for p in svc["ports"]]
    assert any(p.endswith(":7687:7687") or p == "7687:7687" for p in ports)
    assert any(p.endswith(":7474:7474") or p == "7474:7474" for p in ports)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    assert mounts["/data"] in compose["volumes"]  # a named volume, not a bind mount
    hc = svc["healthcheck"]
    assert hc["test"][0] == "CMD-SHELL" and "cypher-shell" in hc["test"][1] and "RETURN 1" in hc["test"][1]


def test_compose_takes_the_password_from_the_environment_only(compose):
    text = COMPOSE.read_text()
    assert "${LESIONDB_PASSWORD:?" in compose["services"]["neo4j"]["environment"]["NEO4J_AUTH"]
    with pytest.raises(InterpolationError, match="LESIONDB_PASSWORD"):
        interpolate(compose, {})
    resolved = interpolate(compose, {"LESIONDB_PASSWORD": "pw-for-test-1"})
    assert resolved["services"]["neo4j"]["environment"]["NEO4J_AUTH"] == "neo4j/pw-for-test-1"
    assert "pw-for-test-1" not in text
    # No other literal credential anywhere in the file.
    assert not re.search(r"NEO4J_AUTH\s*[:=]\s*neo4j/[^$]", text)


def test_compose_installs_graph_data_science(compose):
    """`lesiondb cluster` runs Louvain on the server where GDS is there (docs/neo4j.md)."""
    env = compose["services"]["neo4j"]["environment"]
    resolved = interpolate(env, {"LESIONDB_PASSWORD": "pw-for-test-1"})
    assert json.loads(resolved["NEO4J_PLUGINS"]) == ["graph-data-science"]
    off = interpolate(env, {"LESIONDB_PASSWORD": "pw-for-test-1", "LESIONDB_NEO4J_PLUGINS": "[]"})
    assert json.loads(off["NEO4J_PLUGINS"]) == []
    assert pinned("GDS_VERSION").startswith("2.13.")  # the GDS line made for Neo4j 5.26


def _fake_cypher_shell(tmp_path: Path, rc: int) -> Path:
    bindir = tmp_path / f"bin{rc}"
    bindir.mkdir()
    script = bindir / "cypher-shell"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/args"\nexit {rc}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bindir


@pytest.mark.parametrize("rc", [0, 1])
def test_compose_healthcheck_command_authenticates_with_the_password(compose, tmp_path, rc):
    """Runs the health check's shell command as the container would, with a stand-in cypher-shell."""
    resolved = interpolate(compose, {"LESIONDB_PASSWORD": "pw with $pecial"})
    svc = resolved["services"]["neo4j"]
    env = {"PATH": f"{_fake_cypher_shell(tmp_path, rc)}:{os.environ['PATH']}",
           "NEO4J_AUTH": svc["environment"]["NEO4J_AUTH"]}
    res = subprocess.run(["sh", "-c", svc["healthcheck"]["test"][1]], env=env, capture_output=True, timeout=30)
    assert res.returncode == (0 if rc == 0 else 1)
    args = (tmp_path / "args").read_text().splitlines()
    assert args[args.index("-p") + 1] == "pw with $pecial"
    assert args[args.index("-u") + 1] == "neo4j"
    assert args[-1] == "RETURN 1"


# -- the workflow ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workflow() -> dict:
    wf = yaml.safe_load(WORKFLOW.read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as true
    return wf


def _runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in job["steps"])


def test_workflow_main_job_runs_the_readme_test_command(workflow):
    readme = (REPO / "README.md").read_text()
    m = re.search(r"Install and run the tests:\s*```bash\n(.+?)\n```", readme, re.S)
    assert m, "README has no 'Install and run the tests' command block"
    job = workflow["jobs"]["test"]
    assert job["runs-on"].startswith("ubuntu")
    pythons = [s["with"]["python-version"] for s in job["steps"] if "setup-python" in s.get("uses", "")]
    assert pythons == ["3.11"]
    assert m.group(1).strip() in _runs(job)
    assert "download.pytorch.org/whl/cpu" in str(workflow.get("env")) + _runs(job)
    assert "npm ci" in _runs(job)  # so tests/test_cypher_lint.py runs instead of skipping


def test_workflow_neo4j_job_runs_the_suite_on_the_pinned_server(workflow):
    job = workflow["jobs"]["neo4j"]
    steps = job["steps"]
    runs = [s.get("run", "") for s in steps]
    java = [s["with"]["java-version"] for s in steps if "setup-java" in s.get("uses", "")]
    assert java == ["17"]
    start = next(i for i, r in enumerate(runs) if "tools/neo4j-server start" in r)
    test = next(i for i, r in enumerate(runs) if 'pip install -e ".[test]" && python -m pytest' in r)
    stop = next(i for i, r in enumerate(runs) if "tools/neo4j-server stop" in r)
    assert start < test < stop and steps[stop]["if"] == "always()"
    assert "GITHUB_ENV" in runs[start] and "::add-mask::" in runs[start]  # the password stays out of logs
    assert pinned("NEO4J_VERSION") in job["name"] and pinned("GDS_VERSION") in job["name"]
    assert "services" not in job  # no container: the same server .ci/run starts


def test_ci_run_starts_the_neo4j_tier_around_the_readme_command():
    text = CI_RUN.read_text()
    start = text.index("tools/neo4j-server start")
    command = text.index('pip install -e ".[test]" && python -m pytest')
    assert text.index("trap") < start < text.index('eval "$neo4j_env"') < command
    assert 'tools/neo4j-server stop "$NEO4J_DIR"' in text[text.index("trap"):start]
    # a failed start ends the run (set -e on the assignment), instead of eval'ing nothing
    assert re.search(r'^neo4j_env="\$\(tools/neo4j-server start "\$NEO4J_DIR"\)"', text, re.M)
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text


def test_workflow_lints_the_cypher(workflow):
    job = workflow["jobs"]["cypher-lint"]
    node = [s["with"]["node-version"] for s in job["steps"] if "setup-node" in s.get("uses", "")]
    assert node == ["20"]
    assert job["defaults"]["run"]["working-directory"] == "tools/cypher-lint"
    runs = _runs(job)
    assert "npm ci" in runs and "node lint.mjs" in runs


def test_workflow_triggers_on_push_and_pull_request(workflow):
    assert {"push", "pull_request"} <= set(workflow["on"])
