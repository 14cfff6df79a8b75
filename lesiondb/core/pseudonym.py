"""Keyed pseudonyms for patient, study and lesion identifiers.

Identifiers are HMAC-SHA256 of the source identifier under a secret key kept in the data dir
(``pseudonym.key``, mode 0600) or given by the user. The same key gives the same ids on every
ingest, so ids are stable across re-ingest and row order; without the key they cannot be reversed.

One key format everywhere (docs/security.md): a key is text; text of hexadecimal digits (an even
number, at least 32, i.e. 16 bytes) is the hex spelling of the key bytes, any other text (at least
16 bytes of UTF-8) is the key itself. The key file holds 32 random bytes in hex, so
``--pseudonym-key "$(cat DATA_DIR/pseudonym.key)"`` is the key of the file. Surrounding whitespace
(a newline) is ignored. :attr:`Pseudonymizer.fingerprint` identifies a key without revealing it:
the graph records it and ingest refuses a key whose fingerprint differs.
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
MIN_KEY_BYTES = 16
_HEX_RE = re.compile(r"^(?:[0-9a-fA-F]{2}){16,}$")
_FINGERPRINT_MSG = b"lesiondb pseudonym key fingerprint v1"


def key_bytes(text: str) -> bytes:
    """The key bytes a key given as text stands for (the one format of the module doc)."""
    s = text.strip()
    if _HEX_RE.match(s):
        return bytes.fromhex(s)
    raw = s.encode("utf-8")
    if len(raw) < MIN_KEY_BYTES:
        raise ConfigError(f"pseudonym key must be at least {MIN_KEY_BYTES} bytes (or {2 * MIN_KEY_BYTES} hex "
                          f"digits), got {len(raw)}")
    return raw


class Pseudonymizer:
    """Maps source identifiers to stable pseudonyms: ``P-…`` (patient), ``S-…`` (study), ``R-…`` (series), ``L-…`` (lesion)."""

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"pseudonym key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def from_text(cls, text: str) -> Pseudonymizer:
        return cls(key_bytes(text))

    @classmethod
    def from_data_dir(cls, data_dir: str | os.PathLike, key: str | None = None) -> Pseudonymizer:
        """Use ``key`` if given, else the data dir's key file, created (0600) on first use.
        Both are read the same way (:func:`key_bytes`)."""
        if key:
            return cls.from_text(key)
        path = Path(data_dir) / KEY_FILE
        if path.exists():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read the pseudonym key {path}: {exc}") from exc
            return cls.from_text(text)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        raw = secrets.token_bytes(32)
        # written whole under a temporary name, then linked into place: a concurrent first use
        # either wins or reads the complete key of the one that did, never a half-written file
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            with os.fdopen(fd, "w") as fh:
                fh.write(raw.hex() + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                return cls.from_text(path.read_text(encoding="utf-8"))
        finally:
            tmp.unlink(missing_ok=True)
        return cls(raw)

    @property
    def fingerprint(self) -> str:
        """A short public id of the key (HMAC of a fixed message): equal keys, equal fingerprints;
        the key cannot be recovered from it."""
        return "K-" + hmac.new(self._key, _FINGERPRINT_MSG, hashlib.sha256).hexdigest()[:16]

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

    def uid(self, source: str, uid: str) -> str:
        """A DICOM UID (``2.25.`` + a 128-bit keyed hash) standing for a source's UID, e.g. the
        Tracking Unique Identifier of a DICOM SR measurement: the same UID for the same key."""
        return "2.25." + str(int(self._digest("uid", f"{source}:{uid}", 32), 16))


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
