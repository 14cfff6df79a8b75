"""Progress reporting for long work, without a user interface.

A use case takes ``progress: Progress | None``: a factory called as ``progress(stage, total)``
that returns a :class:`Bar` (``update(n)``, ``set_total(n)``, ``close()``). The CLI passes one that
draws tqdm bars on stderr; library callers pass their own or nothing (:func:`bar` then gives a
bar that does nothing).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol


class Bar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def set_total(self, total: int | None) -> None: ...

    def close(self) -> None: ...


Progress = Callable[[str, "int | None"], Bar]


class NullBar:
    """A bar that counts and shows nothing."""

    def __init__(self, total: int | None = None):
        self.total = total
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_total(self, total: int | None) -> None:
        self.total = total

    def close(self) -> None:
        pass

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(progress: Progress | None, stage: str, total: int | None = None) -> Bar:
    """``progress(stage, total)``, or a :class:`NullBar` without a progress factory."""
    return progress(stage, total) if progress is not None else NullBar(total)


@contextlib.contextmanager
def stage(progress: Progress | None, name: str, total: int | None = None) -> Iterator[Bar]:
    """``with stage(progress, "ingest") as b: … b.update(n)``: a bar closed when the block ends."""
    b = bar(progress, name, total)
    try:
        yield b
    finally:
        b.close()
