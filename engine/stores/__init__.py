"""Log stores: where a session's entries live.

The interface is deliberately small — append a batch, read from a seq, the last seq, close — so that a
distributed backend (Redis Streams, NATS JetStream) can implement it later. Live subscription is not part
of a store: the runtime fans out what it appends, and catches subscribers up with :meth:`LogStore.read`.

Stores are synchronous and single-writer. They never import trio.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from turnstile.engine.log import Record

__all__ = ["LogStore"]


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
