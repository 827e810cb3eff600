"""The embedded repositories: the data directory (one NDJSON file per session), or nothing (memory).

Both are :class:`engine.stores.Repository` implementations over synchronous stores; their ``async``
methods do no I/O worth awaiting (a local file) and return at once. Redis is in :mod:`engine.stores.redis`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Final

from turnstile.engine.errors import LogError
from turnstile.engine.stores.file import FileLogRepository, FileLogStore, FsyncPolicy
from turnstile.engine.stores.memory import MemoryLogStore

__all__ = ["FileRepository", "MemoryRepository"]

_CHECK_TTL_S: Final = 5.0


@contextlib.asynccontextmanager
async def _nothing_to_hold() -> AsyncIterator[None]:
    yield


class FileRepository:
    """``<data_dir>/sessions/<id>.ndjson``: every log in the directory is this runtime's."""

    shared = False

    def __init__(self, root: str | os.PathLike[str], *, fsync: FsyncPolicy = "lifecycle") -> None:
        self.files = FileLogRepository(root, fsync=fsync)
        self.description = f"data directory {self.files.sessions_dir}"
        self._checked: tuple[float, str | None] | None = None

    def prepare(self) -> None:
        """Create the directories and remove a crashed predecessor's write probes; raise :class:`LogError`."""
        self.files.ensure()
        self.files.remove_stray_probes()

    def connected(self) -> AbstractAsyncContextManager[None]:
        """Nothing to connect."""
        return _nothing_to_hold()

    async def claim(self, session_id: str) -> bool:
        """True unless a log with this id exists (one process owns a data directory)."""
        return not self.files.exists(session_id)

    async def release(self, session_id: str) -> None:
        """Remove the log of a session that could not be created, if it is empty."""
        try:
            path = self.files.path_for(session_id)
            if path.stat().st_size == 0:
                path.unlink()
        except (OSError, LogError):
            pass

    async def open(self, session_id: str) -> FileLogStore:
        """Open or create the log file (repairing a torn last line)."""
        return self.files.open(session_id)

    async def session_ids(self) -> list[str]:
        """Every log in the directory, oldest file first."""
        return self.files.list_ids()

    async def delete(self, session_id: str) -> None:
        """Remove the log file."""
        self.files.delete(session_id)

    def problem(self) -> str | None:
        """Why the directory cannot be written (probed at most every 5 s), or None."""
        now = time.monotonic()
        if self._checked is None or now - self._checked[0] > _CHECK_TTL_S:
            self._checked = (now, self.files.writable())
        return self._checked[1]

    async def check(self) -> str | None:
        """Probe the directory now."""
        self.forget_check()
        return self.problem()

    def forget_check(self) -> None:
        """Probe again at the next :meth:`problem` (a write just failed, or worked again)."""
        self._checked = None

    def present(self, session_id: str) -> bool:
        """Whether the session's file is still there."""
        try:
            return self.files.path_for(session_id).exists()
        except LogError:
            return False

    def created_at(self, session_id: str) -> float | None:
        """The file's modification time."""
        try:
            return os.stat(self.files.path_for(session_id)).st_mtime
        except (OSError, LogError):
            return None


class MemoryRepository:
    """Logs in memory: nothing survives the runtime, nothing is recovered."""

    shared = False
    description = "memory"

    def __init__(self) -> None:
        self._ids: set[str] = set()

    def connected(self) -> AbstractAsyncContextManager[None]:
        """Nothing to connect."""
        return _nothing_to_hold()

    async def claim(self, session_id: str) -> bool:
        """True unless this runtime made a log with this id."""
        return session_id not in self._ids

    async def release(self, session_id: str) -> None:
        """Forget the id."""
        self._ids.discard(session_id)

    async def open(self, session_id: str) -> MemoryLogStore:
        """A new, empty in-memory log."""
        self._ids.add(session_id)
        return MemoryLogStore()

    async def delete(self, session_id: str) -> None:
        """Forget the id (nothing else is kept once the session is forgotten)."""
        self._ids.discard(session_id)

    async def session_ids(self) -> list[str]:
        """Nothing to recover."""
        return []

    def problem(self) -> str | None:
        """Memory can always be written."""
        return None

    async def check(self) -> str | None:
        """Memory can always be written."""
        return None

    def present(self, session_id: str) -> bool:
        """In memory while the runtime lives."""
        return True

    def created_at(self, session_id: str) -> float | None:
        """Unknown."""
        return None
