"""Keyed pseudonyms for patient, study and lesion identifiers.

Identifiers are HMAC-SHA256 of the source identifier under a secret key kept in the data dir
(``pseudonym.key``, mode 0600) or given by the user. The same key gives the same ids on every
ingest, so ids are stable across re-ingest and row order; without the key they cannot be reversed.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Any

from ..errors import ConfigError

KEY_FILE = "pseudonym.key"


class Pseudonymizer:
    """Maps source identifiers to stable pseudonyms: ``P-…`` (patient), ``S-…`` (study), ``R-…`` (series), ``L-…`` (lesion)."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ConfigError("pseudonym key must be at least 16 bytes")
        self._key = key

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike, key: str | None = None) -> Pseudonymizer:
        """Use ``key`` (hex or text) if given, else the data dir's key file, created on first use."""
        if key:
            return cls(key.encode())
        path = Path(data_dir) / KEY_FILE
        if path.exists():
            return cls(bytes.fromhex(path.read_text().strip()))
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(raw.hex() + "\n")
        return cls(raw)

    def _digest(self, kind: str, value: str, n: int = 16) -> str:
        mac = hmac.new(self._key, f"{kind}\x1f{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[:n]

    def patient(self, source: str, patient: str) -> str:
        return "P-" + self._digest("patient", f"{source}:{patient}")

    def study(self, source: str, patient: str, study: str) -> str:
        return "S-" + self._digest("study", f"{source}:{patient}:{study}")

    def series(self, source: str, patient: str, series: str) -> str:
        """A series (DICOM SeriesInstanceUID, DeepLesion ``PPPPPP_SS_RR``): how a pseudonymised graph
        finds its images again, by pseudonymising what it finds in the image folder."""
        return "R-" + self._digest("series", f"{source}:{patient}:{series}")

    def lesion(self, source: str, key: str) -> str:
        return "L-" + self._digest("lesion", f"{source}:{key}", 20)


class Redactor:
    """Replaces source identifiers in free text (error messages, file paths) by their pseudonyms,
    so that what lesiondb reports by default — ``--json`` output, messages stored in the graph —
    names patients, studies and series as the graph does. ``add(value, pseudonym)``; calling the
    redactor on a text returns it with every known value replaced (longest first)."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {}
        self._re: re.Pattern[str] | None = None

    def add(self, value: str | None, pseudonym: str) -> None:
        if value and len(value) >= 3 and value != pseudonym:  # a one- or two-character id would hit anything
            self._map[value] = pseudonym
            self._re = None

    def __bool__(self) -> bool:
        return bool(self._map)

    def __call__(self, text: Any) -> Any:
        if not isinstance(text, str) or not self._map:
            return text
        if self._re is None:
            self._re = re.compile("|".join(re.escape(k) for k in sorted(self._map, key=len, reverse=True)))
        return self._re.sub(lambda m: self._map[m.group(0)], text)
