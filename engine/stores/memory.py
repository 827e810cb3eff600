"""An in-memory log store: for tests, replays, and the pool's transient log."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from turnstile.engine.errors import LogError, SequenceGap
from turnstile.engine.log import Record

__all__ = ["MemoryLogStore"]


class MemoryLogStore:
    """A list of records. Reads are O(1) to start at any seq."""

    def __init__(self) -> None:
        self._records: list[Record] = []
        self._closed = False

    @property
    def last_seq(self) -> int:
        """The seq of the last entry (0 when empty)."""
        return len(self._records)

    def append(self, records: Sequence[Record]) -> None:
        """Append records that continue the sequence."""
        if self._closed:
            raise LogError("append to a closed log store")
        check_continues(self.last_seq, records)
        self._records.extend(records)

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Record]:
        """Records with ``seq > after``, in order."""
        start = max(after, 0)
        stop = len(self._records) if limit is None else min(len(self._records), start + limit)
        return iter(self._records[start:stop])

    def sync(self) -> None:
        """Nothing to make durable: memory is not."""

    def close(self) -> None:
        """Mark the store closed (its records stay readable)."""
        self._closed = True


def check_continues(last_seq: int, records: Sequence[Record]) -> None:
    """Raise :class:`SequenceGap` unless ``records`` carry seqs ``last_seq + 1, last_seq + 2, ...``."""
    expected = last_seq + 1
    for rec in records:
        if rec.entry.seq != expected:
            raise SequenceGap(
                f"entry seq {rec.entry.seq} does not continue the log at {expected}: "
                "entries must be appended by the log's single writer, in order"
            )
        expected += 1
