"""Write one benchmark's figures into its own section of docs/benchmarks.md (other sections kept)."""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nEvery figure here is written by a script in `benchmarks/` "
          "(run it to refresh its section). Nothing is typed in by hand.\n")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section ``name`` of docs/benchmarks.md with ``body`` (markdown)."""
    text = DOC.read_text() if DOC.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = time.strftime("%Y-%m-%d")
    block = f"{start}\n{body.rstrip()}\n\n_Measured {stamp} on {machine()}._\n{end}"
    pat = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def run_cli(args: list[str]) -> tuple[float, dict]:
    """Run ``lesiondb ARGS`` in a subprocess; returns (wall seconds, its JSON output or {})."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "lesiondb.cli.main", *args], capture_output=True, text=True)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    out = res.stdout.strip()
    return dt, json.loads(out) if out[:1] in ("{", "[") else {}


def pct(values, q) -> float:
    """The q-th percentile of seconds, in ms."""
    import numpy as np

    return float(np.percentile(np.asarray(values) * 1e3, q))


def process_hwm_mb(pid: int) -> float:
    """A process's peak resident size (VmHWM) in MB, NaN when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def process_cpu_s(pid: int) -> float:
    """A process's CPU seconds (user + system), NaN when it cannot be read."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")

