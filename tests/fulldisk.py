"""A pretend full disk for tests that cannot mount a tmpfs: :class:`Disk` puts a quota on log appends.

Every :class:`FileLogStore` append counts its bytes against ``free`` and fails the way a full file system
does (``LogError`` naming the file and "No space left on device") once it would go past it; ``free = None``
is "space came back". The real thing — a full tmpfs with real processes and clients — is
``tests/reliability/test_disk_full.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from turnstile.engine.errors import LogError
from turnstile.engine.log import Record
from turnstile.engine.stores.file import FileLogStore

__all__ = ["ENOSPC", "Disk", "full_disk"]

ENOSPC = "No space left on device"

_Append = Callable[[FileLogStore, Sequence[Record]], None]


class Disk:
    """Room left for log appends: ``free`` bytes (None: unlimited)."""

    def __init__(self) -> None:
        self.free: int | None = None
        self.refused = 0

    def append(self, real: _Append, store: FileLogStore, records: Sequence[Record]) -> None:
        need = sum(len(r.data) + 1 for r in records)
        if self.free is not None and records:
            if need > self.free:
                self.refused += 1
                raise LogError(f"cannot append to log {store.path}: {ENOSPC}")
            self.free -= need
        real(store, records)


def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    """Install a :class:`Disk` under every file store (use as the body of a fixture)."""
    disk = Disk()
    real: _Append = FileLogStore.append
    monkeypatch.setattr(FileLogStore, "append", lambda store, records: disk.append(real, store, records))
    yield disk
