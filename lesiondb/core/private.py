"""Private files: the data dir is 0700 and every file lesiondb writes in it 0600, whatever the umask.

The graph's files hold the whole graph (append-only files, snapshots, the embeddings cache), the
pseudonym key and logs: no other local user may read them (docs/security.md, "File permissions").
Modes are set explicitly (``chmod`` after creation), so a permissive umask such as 0o022 changes
nothing; only files and folders owned by the current user are changed.
"""
from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
#: The umask given to processes lesiondb starts on the data dir (the embedded server).
PRIVATE_UMASK = 0o077


def make_private_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and missing parents) and make it 0700; returns it."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _chmod_own(path, DIR_MODE)
    return path


def secure_tree(root: str | os.PathLike) -> int:
    """Make ``root`` and every folder below it 0700 and every regular file 0600 (those owned by
    this user; links and sockets are left alone). Returns how many modes were changed."""
    root = Path(root)
    changed = int(_chmod_own(root, DIR_MODE))
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            changed += _chmod_own(Path(folder) / d, DIR_MODE)
        for f in files:
            changed += _chmod_own(Path(folder) / f, FILE_MODE)
    return changed


def make_private_file(path: str | os.PathLike) -> None:
    """Make an existing file 0600 (after a library wrote it with the umask's mode)."""
    _chmod_own(Path(path), FILE_MODE)


def write_private_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as a 0600 file (replaced atomically)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created inside get at most 0600 / folders 0700 (process-wide while it lasts)."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def _chmod_own(path: Path, mode: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if st.st_uid != os.getuid() or stat.S_ISLNK(st.st_mode):
        return False
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)) or stat.S_IMODE(st.st_mode) == mode:
        return False
    try:
        os.chmod(path, mode)
    except OSError:
        return False
    return True
