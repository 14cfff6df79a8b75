"""Running the web application: uvicorn in the foreground (:func:`serve`, the CLI's) or in a
thread (:class:`ServerThread`, for tests and benchmarks)."""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from ..demo import DEMO_DIR

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750


def is_loopback(host: str) -> bool:
    """Is ``host`` this machine only (127.0.0.0/8, ::1, localhost)?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> list[str]:
    """The ``Host`` names the app answers when bound to ``host``: the loopback names, plus
    ``host`` itself; every name when bound to all interfaces (the user asked for it)."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return sorted({"127.0.0.1", "localhost", host})


def demo_images(data_dir: str | Path) -> Path | None:
    """The demo's cohort folder (``DATA_DIR/demo``, written by ``lesiondb demo``) when it is there:
    the images ``lesiondb serve`` uses when no ``--images`` is given."""
    p = Path(data_dir) / DEMO_DIR
    return p if (p / "cohort.json").is_file() else None


def serve(app: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, log_level: str = "warning",
          access_log: bool = False) -> None:
    """Run ``app`` with uvicorn until interrupted (Ctrl-C)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log, server_header=False)


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving ``app`` on ``host:port`` in a daemon thread (``with ServerThread(app) as url:``)."""

    def __init__(self, app: Any, host: str = DEFAULT_HOST, port: int | None = None, timeout_s: float = 20.0):
        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="lesiondb-web", daemon=True)
        self.timeout_s = timeout_s

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the web server did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.timeout_s)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
