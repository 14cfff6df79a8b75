"""The DICOM validators the tests run: ``dciodvfy`` (Debian's dicom3tools) and ``dsrdump``
(dcmtk). A test that needs one skips with the reason when it is not installed (``.ci/run``
installs both)."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

INSTALL_HINT = "apt-get install -y dicom3tools dcmtk"


def need(tool: str) -> str:
    """The path of ``tool``, or skip the test saying how to install it."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed ({INSTALL_HINT})")
    return path


def dciodvfy_errors(files: Iterable[str | Path]) -> dict[str, list[str]]:
    """``{file: [error lines]}`` of every file dciodvfy finds an error in (warnings are not errors)."""
    exe = need("dciodvfy")
    out: dict[str, list[str]] = {}
    for f in files:
        res = subprocess.run([exe, str(f)], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
        if errors:
            out[str(f)] = errors
    return out


def dsrdump(file: str | Path) -> str:
    """dsrdump's text rendering of an SR document (with code values)."""
    exe = need("dsrdump")
    res = subprocess.run([exe, "+Pc", str(file)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout
