"""The job script in jobs/ drives the installed CLI end to end."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("lesiondb") is None, reason="the lesiondb console script is not installed")
def test_deeplesion_job_script(dl_info, tmp_path):
    lines = open(dl_info).read().splitlines()[:21]
    csv = tmp_path / "small.csv"
    csv.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "DEEPLESION_DL_INFO": str(csv), "LESIONDB_DATA_DIR": str(tmp_path / "d"),
           "REPORT": str(tmp_path / "r.json")}
    env.pop("LESIONDB_URI", None)
    res = subprocess.run(["bash", str(REPO / "jobs" / "deeplesion.sh")], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["nodes"]["Lesion"] == 20
    assert json.loads((tmp_path / "r.json").read_text())["written"] == 20
    csv.write_text("\n".join(lines + ["broken,row"]) + "\n")
    res = subprocess.run(["bash", str(REPO / "jobs" / "deeplesion.sh")], env=env, capture_output=True, text=True)
    assert res.returncode == 3 and "rejected rows: 1" in res.stderr
