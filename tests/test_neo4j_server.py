"""tools/neo4j-server: its configuration, output, error messages and stop (no server started here:
the running one, when the Neo4j tier is on, is checked at the end)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "neo4j-server"


@pytest.fixture(scope="module")
def tool():
    loader = SourceFileLoader("neo4j_server_tool", str(TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _conf(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_the_tool_is_an_executable_python_script():
    assert os.access(TOOL, os.X_OK)
    assert TOOL.read_text().startswith("#!/usr/bin/env python3\n")


def test_conf_listens_on_loopback_only_and_lets_gds_run(tool, tmp_path):
    d, home = tmp_path / "srv", tmp_path / "cache"
    tool.write_conf(d, home, 17687, 17474)
    conf = _conf(d / "conf" / "neo4j.conf")
    listen = {k: v for k, v in conf.items() if k.endswith(("listen_address", "advertised_address"))}
    assert listen and all(v.startswith("127.0.0.1") for v in listen.values())
    assert conf["server.bolt.listen_address"] == "127.0.0.1:17687"
    assert conf["server.http.listen_address"] == "127.0.0.1:17474"
    assert conf["server.https.enabled"] == "false" and conf["dbms.security.auth_enabled"] == "true"
    assert conf["dbms.security.procedures.unrestricted"] == "gds.*"
    assert conf["dbms.usage_report.enabled"] == "false"
    # everything the server writes stays in DIR; the jars stay in the cache
    for key in ("data", "logs", "run", "import"):
        assert conf[f"server.directories.{key}"] == str(d / key)
    assert conf["server.directories.plugins"] == str(home / "plugins")
    assert conf["server.memory.heap.max_size"] == tool.HEAP
    for name in ("user-logs.xml", "server-logs.xml"):
        assert str(d / "logs") in (d / "conf" / name).read_text()


def test_exports_survive_eval(tool):
    env = {"LESIONDB_TEST_NEO4J_URI": "bolt://127.0.0.1:7", "LESIONDB_PASSWORD": "a b'c$d-_"}
    out = subprocess.run(["bash", "-c", 'eval "$(cat)"; printf "%s|%s" "$LESIONDB_TEST_NEO4J_URI" '
                          '"$(bash -c \'printf %s "$LESIONDB_PASSWORD"\')"'],
                         input=tool.exports(env), capture_output=True, text=True, check=True).stdout
    assert out == "bolt://127.0.0.1:7|a b'c$d-_"  # exported: a child process sees it too


def test_maven_listing_keeps_every_jar_and_classifier(tool):
    text = """
The following files have been resolved:
   org.neo4j:neo4j-kernel:jar:5.26.24:compile:/m2/org/neo4j/neo4j-kernel-5.26.24.jar
   io.netty:netty-transport-native-epoll:jar:linux-x86_64:4.1.129.Final:compile:/m2/epoll-x86_64.jar
   io.netty:netty-transport-native-epoll:jar:linux-aarch_64:4.1.129.Final:runtime:/m2/epoll-aarch_64.jar
   org.example:tests-only:jar:1.0:test:/m2/tests-only.jar
   org.example:a-pom:pom:1.0:compile
"""
    got = tool.parse_listing(text)
    assert got == {("org.neo4j", "neo4j-kernel", ""): Path("/m2/org/neo4j/neo4j-kernel-5.26.24.jar"),
                   ("io.netty", "netty-transport-native-epoll", "linux-x86_64"): Path("/m2/epoll-x86_64.jar"),
                   ("io.netty", "netty-transport-native-epoll", "linux-aarch_64"): Path("/m2/epoll-aarch_64.jar")}


def test_missing_maven_says_what_to_install(tool, tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONDB_NEO4J_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tool.shutil, "which", lambda name: None)
    with pytest.raises(tool.Failure, match=r"Maven \(mvn\) is needed.*apt-get install maven"):
        tool.ensure_installed()


def test_a_filled_cache_needs_no_maven(tool, tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONDB_NEO4J_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tool.shutil, "which", lambda name: None)
    home = tool.install_dir()
    home.mkdir(parents=True)
    (home / "COMPLETE").write_text("")
    assert tool.ensure_installed() == home
    assert home.is_relative_to(tmp_path) and "neo4j-" + tool.NEO4J_VERSION in home.name


@pytest.mark.parametrize("version,ok", [("11.0.2", False), ("17.0.15", True), ("21.0.1", True), ("25", False)])
def test_java_version_is_checked(tool, tmp_path, monkeypatch, version, ok):
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2025-01-01\' >&2\n')
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    if ok:
        assert tool.find_java() == str(java)
    else:
        with pytest.raises(tool.Failure, match=rf"Java {version.split('.')[0]}; Neo4j .* runs on Java 17 or 21"):
            tool.find_java()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(tool.Failure, match="Java 17 or 21 is needed"):
        tool.find_java()


def _sleeper(*args: str) -> subprocess.Popen:
    """A process whose command line carries ``args`` (python ignores them), sleeping a minute."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])


def test_stop_ends_the_server_of_its_dir_and_nothing_else(tool, tmp_path):
    d, other = tmp_path / "a", tmp_path / "b"
    (d / "run").mkdir(parents=True)
    ours = _sleeper(tool.ENTRY_POINT, f"--home-dir={d}")
    theirs = _sleeper(tool.ENTRY_POINT, f"--home-dir={other}")
    unrelated = _sleeper()
    try:
        time.sleep(0.2)  # let /proc/PID/cmdline show the arguments
        for p in (theirs, unrelated):  # a pid file naming another process: left alone
            tool.pid_file(d).write_text(f"{p.pid}\n")
            assert tool.running_pid(d) is None
            assert tool.stop(d) == 0 and p.poll() is None
        tool.pid_file(d).write_text(f"{ours.pid}\n")
        assert tool.running_pid(d) == ours.pid
        assert tool.stop(d) == 0
        assert ours.wait(timeout=10) == -signal.SIGTERM
        assert not tool.pid_file(d).exists() and theirs.poll() is None and unrelated.poll() is None
        assert tool.stop(d) == 0  # stopping twice is fine
    finally:
        for p in (ours, theirs, unrelated):
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.neo4j
def test_the_tier_server_serves_browser_over_http(neo4j):
    """The server tools/neo4j-server started (LESIONDB_TEST_NEO4J_HTTP) serves Neo4j Browser and the
    discovery document naming its Bolt address."""
    http = os.environ.get("LESIONDB_TEST_NEO4J_HTTP")
    if not http:
        pytest.skip("LESIONDB_TEST_NEO4J_HTTP is not set (the server was not started by tools/neo4j-server)")
    with urllib.request.urlopen(http + "/", timeout=10) as r:
        discovery = json.loads(r.read())
    assert discovery["bolt_direct"] == neo4j and discovery["neo4j_version"].startswith("5.")
    with urllib.request.urlopen(http + "/browser/", timeout=10) as r:
        assert r.status == 200 and b"<html" in r.read().lower()


def test_admin_refuses_a_running_server(tool, tmp_path, capsys):
    d = tmp_path / "srv"
    (d / "run").mkdir(parents=True)
    server = _sleeper(tool.ENTRY_POINT, f"--home-dir={d}")
    try:
        time.sleep(0.2)
        tool.pid_file(d).write_text(f"{server.pid}\n")
        assert tool.main(["admin", str(d), "database", "info"]) == 1
        assert "is running: stop it first" in capsys.readouterr().err
    finally:
        server.kill()
        server.wait()


@pytest.mark.neo4j
def test_admin_imports_csv_into_a_dir_before_its_first_start(tool, tmp_path, neo4j):
    """neo4j-admin database import full through the cached server's jars (the bulk path), on a DIR
    that has never run a server: the import lands where `start DIR` looks."""
    if not (tool.install_dir() / "COMPLETE").is_file():
        pytest.skip("the Neo4j tier's server was not started by tools/neo4j-server (no cache)")
    csv = tmp_path / "lesions.csv"
    csv.write_text("lesionId:ID(Lesion),typeName\nL1,liver\nL2,lung\n")
    rels = tmp_path / "similar.csv"
    rels.write_text(":START_ID(Lesion),:END_ID(Lesion),distance:float\nL1,L2,0.5\n")
    d = tmp_path / "srv"
    rc = tool.main(["admin", str(d), "database", "import", "full", "neo4j", f"--nodes=Lesion={csv}",
                    f"--relationships=SIMILAR_TO={rels}"])
    assert rc == 0
    assert (d / "data" / "databases" / "neo4j").is_dir() and (d / "conf" / "neo4j.conf").is_file()
    report = d / "import.report"  # neo4j-admin writes bad entries there (its working dir is DIR)
    assert not report.exists() or not report.read_text().strip()
