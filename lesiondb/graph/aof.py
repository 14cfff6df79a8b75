"""The embedded server's append-only files: keep a generation, check a new snapshot, restore.

Redis keeps a data set as a *generation* of files named by ``appendonly.aof.manifest``: an RDB
snapshot (the base, ``type b``) and the logs written since (``type i``). A rewrite
(``BGREWRITEAOF``) writes a new generation and deletes the old one. FalkorDB 4.16 can write a
snapshot it cannot load again (the server aborts in ``RdbLoadRelationMatrices``, asking for
petabytes): measured on a DeepLesion-sized graph whose previous snapshot had been taken while an
ingest was writing. A rewrite that replaced the only good generation with such a file would lose
the whole graph, so :meth:`~lesiondb.graph.embedded.EmbeddedFalkorDB.compact` keeps the old
generation (hard links, no copy) until the new snapshot has been loaded by a scratch server
(:func:`verify_snapshot`), and otherwise writes a manifest that names the old generation again
(:func:`restore_generation`): nothing written is lost, the next start replays the log.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.private import PRIVATE_UMASK, make_private_dir

MANIFEST = "appendonly.aof.manifest"
#: A scratch load of a snapshot gives up after this long (a DeepLesion-sized one loads in ~0.3 s).
VERIFY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class AofFile:
    """One line of a manifest: ``file NAME seq N type T`` and any further ``key value`` fields."""

    name: str
    seq: int
    type: str  # b (base snapshot), i (log), h (history: deleted by the server)
    fields: tuple[tuple[str, str], ...]  # every key-value pair of the line, in order

    @classmethod
    def parse(cls, line: str) -> AofFile:
        parts = line.split()
        fields = tuple(zip(parts[0::2], parts[1::2], strict=False))
        d = dict(fields)
        if "file" not in d or "seq" not in d or "type" not in d:
            raise ValueError(f"not a manifest line: {line!r}")
        return cls(d["file"], int(d["seq"]), d["type"], fields)

    def line(self, name: str | None = None) -> str:
        """The manifest line, with the file renamed to ``name`` if given."""
        return " ".join(f"{k} {name if k == 'file' and name else v}" for k, v in self.fields)


def read_manifest(aof_dir: Path) -> list[AofFile]:
    """The files a manifest names, in its order; [] when there is none."""
    try:
        text = (aof_dir / MANIFEST).read_text()
    except FileNotFoundError:
        return []
    return [AofFile.parse(line) for line in text.splitlines() if line.strip()]


def base_file(aof_dir: Path) -> Path | None:
    """The snapshot of the current generation, if it has one."""
    bases = [f for f in read_manifest(aof_dir) if f.type == "b"]
    return aof_dir / bases[-1].name if bases else None


def keep_generation(aof_dir: Path, into: Path) -> list[AofFile]:
    """Hard-link the current generation's files (and manifest) into ``into`` (emptied first), so
    a rewrite that deletes them from ``aof_dir`` leaves them here. Returns the files kept."""
    shutil.rmtree(into, ignore_errors=True)
    make_private_dir(into)
    files = [f for f in read_manifest(aof_dir) if f.type in ("b", "i")]
    for f in files:
        os.link(aof_dir / f.name, into / f.name)
    if files:
        os.link(aof_dir / MANIFEST, into / MANIFEST)
    return files


def restore_generation(aof_dir: Path, kept_dir: Path, kept: list[AofFile], rejected_dir: Path) -> None:
    """Make the kept generation current again, followed by the logs written since the rewrite
    (the current manifest's ``type i`` files), and move the rejected snapshot to ``rejected_dir``
    (for a bug report). The server keeps appending to the newest log, which the new manifest names.

    The kept files come back under new names (``kept-…``): the running server deletes the old
    generation's files by name once its rewrite is done, possibly after this returns."""
    current = read_manifest(aof_dir)
    kept_names = {k.name for k in kept}
    for f in kept:
        target = aof_dir / _kept_name(f.name)
        if not target.exists():
            os.link(kept_dir / f.name, target)
    shutil.rmtree(rejected_dir, ignore_errors=True)  # the latest one is enough for a bug report
    make_private_dir(rejected_dir)
    for f in current:
        if f.type == "b" and f.name not in kept_names:
            with contextlib.suppress(FileNotFoundError):
                os.replace(aof_dir / f.name, rejected_dir / f.name)
    lines = [f.line(_kept_name(f.name)) for t in ("b", "i") for f in kept if f.type == t]
    lines += [f.line() for f in current if f.type == "i" and f.name not in kept_names]
    tmp = aof_dir / (MANIFEST + ".lesiondb-tmp")
    old = os.umask(PRIVATE_UMASK)
    try:
        tmp.write_text("\n".join(lines) + "\n")
    finally:
        os.umask(old)
    os.replace(tmp, aof_dir / MANIFEST)  # atomic: a crash leaves one manifest or the other


def _kept_name(name: str) -> str:
    return name if name.startswith("kept-") else f"kept-{name}"


def verify_snapshot(server: str, module: str, snapshot: Path, timeout_s: float = VERIFY_TIMEOUT_S) -> str | None:
    """Load ``snapshot`` in a scratch server (no persistence, unix socket in a private temporary
    folder beside it, so the hard link needs no copy). Returns None when it loaded, else what went
    wrong with the end of the scratch server's log."""
    import redis  # as in embedded.py: only commands that talk to a server import the client

    with tempfile.TemporaryDirectory(dir=snapshot.parent.parent, prefix=".verify-") as tmp:
        work = Path(tmp)
        os.link(snapshot, work / "dump.rdb")
        sock_dir = Path(tempfile.mkdtemp(prefix="lesiondb-verify-"))  # short: AF_UNIX paths ≤ 107 bytes
        sock = sock_dir / "s.sock"
        log_path = work / "verify.log"
        args = [server, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                "--dir", str(work), "--dbfilename", "dump.rdb", "--appendonly", "no", "--save", "",
                "--daemonize", "no", "--logfile", str(log_path),
                "--crash-memcheck-enabled", "no",  # a failed load is the answer; no 5 s memory test
                "--loadmodule", module]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=str(work), umask=PRIVATE_UMASK)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return f"the scratch server exited with code {proc.returncode}: {_log_tail(log_path)}"
                if sock.exists():
                    r = redis.Redis(unix_socket_path=str(sock), socket_timeout=5)
                    try:
                        if r.ping():
                            return None
                    except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError,
                            redis.exceptions.TimeoutError):
                        pass
                    finally:
                        r.close()
                time.sleep(0.02)
            return f"the scratch server did not load it within {timeout_s:g} s"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            shutil.rmtree(sock_dir, ignore_errors=True)


def _log_tail(path: Path, n: int = 6) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    picked = [x for x in lines if "#" in x and ("Out Of Memory" in x or "crash" in x.lower() or "Guru" in x)]
    return " | ".join((picked or lines)[-n:])
