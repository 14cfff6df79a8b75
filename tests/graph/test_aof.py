"""The embedded server's snapshots: never taken while commands write, checked before the old
generation goes, and the old generation restored when the new snapshot cannot be loaded."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from lesiondb.graph import aof, embedded
from lesiondb.graph.embedded import EmbeddedFalkorDB
from lesiondb.graph.falkor_engine import FalkorEngine


def _aof_dir(data_dir) -> Path:
    return Path(data_dir) / "falkordb" / embedded.AOF_DIR


def _count(eng, label="Lesion") -> int:
    return int(eng._read(f"MATCH (n:{label}) RETURN count(n) AS c", {})[0]["c"])


def _corrupt(path: Path) -> None:
    """Flip bytes in the middle of a snapshot (its checksum no longer matches: Redis refuses it)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    path.write_bytes(bytes(data))


def _rewrite(srv: EmbeddedFalkorDB) -> None:
    r = srv._redis(timeout=30)
    r.bgrewriteaof()
    while r.info("persistence")["aof_rewrite_in_progress"] or r.info("persistence")["aof_rewrite_scheduled"]:
        time.sleep(0.02)
    r.close()


def test_manifest_lines_parse_and_rename():
    f = aof.AofFile.parse("file appendonly.aof.7.incr.aof seq 7 type i startoffset 25 endoffset 26")
    assert (f.name, f.seq, f.type) == ("appendonly.aof.7.incr.aof", 7, "i")
    assert f.line() == "file appendonly.aof.7.incr.aof seq 7 type i startoffset 25 endoffset 26"
    assert f.line("kept-x") == "file kept-x seq 7 type i startoffset 25 endoffset 26"
    with pytest.raises(ValueError, match="not a manifest line"):
        aof.AofFile.parse("seq 7 type i")


def test_no_automatic_rewrite_while_commands_write(tmp_path):
    """FalkorDB's snapshot of a graph taken during an ingest loads, but every later snapshot of
    the graph loaded from it was unloadable: the server no longer rewrites on its own (it did at
    10 % growth past 256 kB), only when its owner stops it."""
    eng = FalkorEngine.embedded(str(tmp_path))
    try:
        base_before = aof.base_file(_aof_dir(tmp_path)).name
        r = eng.server._redis(timeout=60)
        pipe = r.pipeline(transaction=False)
        for i in range(3000):  # quick queries are logged as their text: ~0.5 MB of log
            pipe.execute_command("GRAPH.QUERY", "lesiondb", f"CREATE (:Lesion {{lesionId: '{i}', note: '{'x' * 100}'}})")
        pipe.execute()
        info = r.info("persistence")
        assert info["aof_current_size"] - info["aof_base_size"] > 400_000  # past the old 256 kB trigger
        time.sleep(0.3)  # the server checks for an automatic rewrite every 100 ms
        assert aof.base_file(_aof_dir(tmp_path)).name == base_before
    finally:
        eng.close()
    assert aof.base_file(_aof_dir(tmp_path)).name != base_before  # compacted at the stop
    assert not (tmp_path / "falkordb" / embedded.KEPT_DIR).exists()  # checked, old files gone


def test_a_snapshot_the_server_cannot_load_gives_way_to_the_kept_generation(tmp_path, monkeypatch, caplog):
    eng = FalkorEngine.embedded(str(tmp_path))
    eng._write("UNWIND range(1, 300) AS i CREATE (:Lesion {lesionId: toString(i)})", {})
    eng.close()  # a good snapshot
    eng = FalkorEngine.embedded(str(tmp_path))
    eng._write("UNWIND range(301, 500) AS i CREATE (:Lesion {lesionId: toString(i)})", {})
    real = aof.verify_snapshot
    checked = []

    def corrupt_then_verify(server, module, snapshot, *a, **kw):
        _corrupt(snapshot)  # as FalkorDB's bad snapshots: written, unloadable
        checked.append(snapshot.name)
        return real(server, module, snapshot, *a, **kw)

    monkeypatch.setattr(aof, "verify_snapshot", corrupt_then_verify)
    eng.close()
    monkeypatch.setattr(aof, "verify_snapshot", real)
    assert checked and "cannot load again" in caplog.text
    assert (tmp_path / "falkordb" / embedded.REJECTED_DIR / checked[0]).exists()  # kept for a bug report
    names = [f.name for f in aof.read_manifest(_aof_dir(tmp_path))]
    assert checked[0] not in names and any(n.startswith("kept-") for n in names)
    eng = FalkorEngine.embedded(str(tmp_path))  # without the restore: the server refuses to start
    try:
        assert _count(eng) == 500
        eng._write("CREATE (:Lesion {lesionId: 'after'})", {})
    finally:
        eng.close()  # this snapshot is fine again: a normal generation
    eng = FalkorEngine.embedded(str(tmp_path))
    try:
        assert _count(eng) == 501
    finally:
        eng.close()
    assert not any(f.name.startswith("kept-") for f in aof.read_manifest(_aof_dir(tmp_path)))


def test_a_command_killed_while_checking_is_settled_at_the_next_start(tmp_path):
    eng = FalkorEngine.embedded(str(tmp_path))
    eng._write("UNWIND range(1, 200) AS i CREATE (:Lesion {lesionId: toString(i)})", {})
    eng.close()
    srv = EmbeddedFalkorDB(tmp_path).start()
    srv._redis().execute_command("GRAPH.QUERY", "lesiondb", "CREATE (:Lesion {lesionId: 'late'})")
    aof.keep_generation(_aof_dir(tmp_path), tmp_path / "falkordb" / embedded.KEPT_DIR)
    _rewrite(srv)
    os.kill(srv.proc.pid, signal.SIGKILL)  # killed before the new snapshot was checked
    srv.proc.wait()
    srv.owned = False
    srv.release()
    _corrupt(aof.base_file(_aof_dir(tmp_path)))
    eng = FalkorEngine.embedded(str(tmp_path))
    try:
        assert _count(eng) == 201
    finally:
        eng.close()
