"""Log stores: where a session's entries live, and the repository that finds and creates them.

A :class:`LogStore` is deliberately small — append a batch, read from a seq, the last seq, close — and
synchronous: the embedded stores (in memory, one NDJSON file per session) write with a system call, so the
runtime's journal stores, folds and fans out an entry in one synchronous step. A store whose writes are
network I/O (Redis Streams, :mod:`engine.stores.redis`) is an :class:`AsyncLogStore` instead: the journal
folds its entries at once, a writer task (:mod:`engine.runtime.writer`) writes them in order, and they are
sent to subscribers only once written. Live subscription is not part of a store: the runtime fans out what
was written, and catches subscribers up by reading the store.

A :class:`Repository` is the set of a runtime's logs: the data directory (:mod:`engine.stores.repository`),
memory, or a Redis database shared by several servers. The runtime chooses one from its configuration.

The embedded stores never import trio.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeAlias, runtime_checkable

from turnstile.engine.log import Record

__all__ = ["AnyLogStore", "AsyncLogStore", "LogStore", "Repository"]


@runtime_checkable
class LogStore(Protocol):
    """An append-only, gap-free sequence of records for one session (or the pool)."""

    @property
    def last_seq(self) -> int:
        """The seq of the last entry (0 when empty)."""
        ...

    def append(self, records: Sequence[Record]) -> None:
        """Append records whose seqs continue the log exactly (``last_seq + 1``, ...).

        Raises :class:`engine.errors.SequenceGap` otherwise, and :class:`engine.errors.LogError` when the
        backing storage fails (nothing is half-written: a failed append can be retried).
        """
        ...

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Record]:
        """Records with ``seq > after``, in order, at most ``limit`` of them."""
        ...

    def sync(self) -> None:
        """Make appended lifecycle entries durable (may block on the disk: call it from a thread).

        A no-op for stores that are durable on append (or not durable at all)."""
        ...

    def close(self) -> None:
        """Release resources. Appending after close raises :class:`engine.errors.LogError`."""
        ...


@runtime_checkable
class AsyncLogStore(Protocol):
    """A log whose reads and writes are network I/O: the same contract as :class:`LogStore`, awaited.

    Appends are atomic per batch and idempotent: a batch whose answer was lost (the connection broke after
    the server applied it) can be sent again and is not written twice.
    """

    @property
    def last_seq(self) -> int:
        """The seq of the last entry this store wrote or read (0 when empty)."""
        ...

    async def append_async(self, records: Sequence[Record]) -> None:
        """Append records that continue the log exactly, all or none.

        Raises :class:`engine.errors.SequenceGap` for records that do not continue the log, and
        :class:`engine.errors.LogError` when the storage cannot be reached or refuses the batch.
        """
        ...

    async def read_async(self, after: int = 0, limit: int | None = None) -> list[Record]:
        """Records with ``seq > after``, in order, at most ``limit`` of them; raises :class:`LogError`."""
        ...

    def close(self) -> None:
        """No more appends (the connection belongs to the repository and stays open)."""
        ...


AnyLogStore: TypeAlias = LogStore | AsyncLogStore


class Repository(Protocol):
    """A runtime's logs: which sessions exist, whose they are, and their stores."""

    #: Where the logs are, for messages (``data directory /var/lib/turnstile``, ``redis://host:6379/0``).
    description: str
    #: Whether other servers share these logs (and may run some of their sessions).
    shared: bool

    def connected(self) -> AbstractAsyncContextManager[None]:
        """Hold the repository's connections open (the runtime's whole life)."""
        ...

    async def claim(self, session_id: str) -> bool:
        """Reserve a new session id for this runtime; False when a session with this id exists."""
        ...

    async def release(self, session_id: str) -> None:
        """Give up a claimed id whose session could not be created (its log is empty)."""
        ...

    async def open(self, session_id: str) -> AnyLogStore:
        """The store of ``session_id`` (created empty if missing). Raises :class:`LogError`."""
        ...

    async def delete(self, session_id: str) -> None:
        """Remove the (closed) log of ``session_id`` and free its id. Raises :class:`LogError`."""
        ...

    async def session_ids(self) -> list[str]:
        """The sessions this runtime runs after a restart (oldest first). Raises :class:`LogError`."""
        ...

    def problem(self) -> str | None:
        """Why new entries cannot be written now, or None. Cheap (cached): readiness calls it."""
        ...

    async def check(self) -> str | None:
        """Look again now (may do I/O) and return :meth:`problem`."""
        ...

    def present(self, session_id: str) -> bool:
        """Whether the log of ``session_id`` is still where it was (an operator may move a damaged one)."""
        ...

    def created_at(self, session_id: str) -> float | None:
        """When a log with no ``session.created`` entry was made, if the repository can tell."""
        ...
