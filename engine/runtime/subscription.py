"""Subscriptions: a cursor into a log that catches up from the store, then follows it live.

A :class:`Subscription` is an async iterator of batches (``list[Record]``: whatever is ready at once, so
a front-end can send many entries in one write). It starts as a cursor: it reads the store after ``after``
in chunks. Once its cursor has reached the journal's last *written* seq, it registers for live pushes *in
the same synchronous step* as that comparison (no ``await`` between "nothing more in the log" and "send
me what comes next"; the journal moves that seq and pushes the entries in one step too), so an append
racing the catch-up is either already read or will be pushed: never missed, never twice. A read of a
network store (Redis) is awaited, so entries may be written meanwhile: then the cursor is behind and it
reads again. A store that cannot be read ends the subscription with :class:`engine.errors.StorageFailed`.

Live, every append is pushed into the subscriber's bounded buffer (``buffer`` records) without waiting:
the writer never blocks on a reader. A subscriber whose buffer would overflow is dropped from the live
set and, once it has taken what it already had, its next read raises :class:`engine.errors.Lagged` with
the last seq it received; it resubscribes from there and catches up from the log.

With ``stream=`` only that stream's entries are delivered, and the iteration ends right after the stream's
``stream.ended`` entry — also when the stream ended long ago (history, terminal entry, end). A session-wide
subscription ends when the log closes (session stopped, runtime shut down), after everything logged.

Only written entries are delivered (:mod:`engine.runtime.journal`). When the log's storage fails, a live
subscription delivers what it has and then raises :class:`engine.errors.StorageFailed` (the last written
seq and why) instead of waiting for entries that cannot come; so does one that catches up while the storage
still fails. Resubscribe after that seq once the storage works again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import trio

from turnstile.engine.errors import Lagged, LogError, StorageFailed
from turnstile.engine.log import Record, StreamEnded
from turnstile.engine.runtime.journal import Journal

__all__ = ["Subscription"]

_CATCH_UP_CHUNK = 512


class Subscription:
    """An async iterator of ``list[Record]`` batches. Use via ``Runtime.subscribe`` (a context manager).

    Batches are never empty, except once after each :meth:`poke`.

    Cancellation: a cancelled ``__anext__`` loses nothing; the next call returns what is pending.
    """

    def __init__(
        self, journal: Journal, *, after: int = 0, stream: str | None = None, buffer: int = 1024
    ) -> None:
        self._journal = journal
        self.stream = stream
        self._limit = buffer
        self._buf: deque[Record] = deque()
        self._wake: trio.Event | None = None
        self._live = False
        self._lagged = False
        self._poked = False
        self._closed = False  # the log will push nothing more
        self._failed: StorageFailed | None = None  # the log's storage failed: end with this
        self._done = False  # the iteration is over
        #: The seq of the last entry delivered (or skipped by the stream filter) — the resume point.
        self.last_seq = max(after, 0)
        self._cursor = self.last_seq  # catch-up position in the store
        if stream is not None:
            start = journal.stream_start.get(stream)
            if start is not None:
                self._cursor = max(self._cursor, start - 1)
            end = journal.stream_end.get(stream)
            if end is not None and self.last_seq >= end:
                self._done = True
        journal.subscriptions.add(self)

    @property
    def live(self) -> bool:
        """Whether the catch-up is over and entries arrive as they are appended."""
        return self._live

    @property
    def lagged(self) -> bool:
        """Whether the subscriber fell behind and will end with :class:`Lagged`."""
        return self._lagged

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> list[Record]:
        # A checkpoint that cannot lose data: cancellation is taken only before anything is consumed, and
        # a batch, once taken, is returned through a shielded scheduling point.
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self._done:
                raise StopAsyncIteration
            batch: list[Record] = []
            if not self._live:
                batch = await self._catch_up()
                if not batch:
                    # Everything in this chunk was filtered out: let others run before the next one.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    continue
            elif self._buf:
                pending = list(self._buf)
                self._buf.clear()
                self._poked = False  # something is delivered anyway
                batch = self._take(pending)
            elif self._lagged:
                self._finish()
                raise Lagged(self.last_seq)
            elif self._failed is not None:
                self._finish()
                raise self._failed
            elif self._closed:
                self._finish()
                raise StopAsyncIteration
            elif self._poked:
                self._poked = False
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return []
            else:
                self._wake = trio.Event()
                await self._wake.wait()
                waited = True
                continue
            if batch:
                if not waited:
                    # Every call passes a scheduling point; one that waited for the batch already has.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return batch

    async def _catch_up(self) -> list[Record]:
        journal = self._journal
        try:
            # A synchronous store is read without a scheduling point (see Journal.read_async).
            records = await journal.read_async(self._cursor, _CATCH_UP_CHUNK)
        except LogError as exc:
            self._finish()
            raise StorageFailed(self.last_seq, f"cannot read the log: {exc}", self.stream) from exc
        if records:
            self._cursor = max(self._cursor, records[-1].entry.seq)
        if self._cursor >= journal.last_seq and not self._done:
            # Caught up with everything written. Go live in this same synchronous step: whatever is
            # written from now on is pushed.
            if not journal._go_live(self):
                self._closed = True
            self._live = True
        return self._take(records) if records else []

    def _take(self, records: Sequence[Record]) -> list[Record]:
        """Filter, cut after the stream's end, and advance ``last_seq``."""
        out: list[Record] = []
        stream = self.stream
        last = self.last_seq
        for rec in records:
            entry = rec.entry
            if entry.seq <= last:
                continue
            last = entry.seq
            if stream is None:
                out.append(rec)
                continue
            if entry.stream != stream:
                continue
            out.append(rec)
            if type(entry) is StreamEnded:
                self.last_seq = last
                self._finish()
                break
        self.last_seq = last
        return out

    # --- called by the journal (synchronously, from the writer) ------------------------------------------

    def _push(self, records: Sequence[Record]) -> None:
        if self._lagged or self._done or records[-1].entry.seq <= self.last_seq:
            return  # (the last: a catch-up that read ahead of the journal already delivered these)
        if self.stream is not None:
            records = [r for r in records if r.entry.stream == self.stream]
            if not records:
                return
        if len(self._buf) + len(records) > self._limit:
            # Too far behind: drop what is buffered and end with a resume hint. The writer never waits.
            self._buf.clear()
            self._lagged = True
            self._journal.lagged_total += 1
            self._journal._drop(self)
        else:
            self._buf.extend(records)
        if self._wake is not None:
            self._wake.set()

    def _storage_failed(self, last_seq: int, reason: str) -> None:
        """The log cannot be written: nothing more will be pushed. Deliver what is buffered, then end."""
        if self._done or self._lagged:
            return
        # Everything written up to last_seq was pushed or read: resuming after it loses nothing.
        self._failed = StorageFailed(max(last_seq, self.last_seq), reason, self.stream)
        if self._wake is not None:
            self._wake.set()

    def poke(self) -> None:
        """Make a pending (or the next) live read return an empty batch, unless entries come first.

        For a front-end's heartbeat: its one task waits for entries *or* a poke, with no timer per read.
        """
        self._poked = True
        if self._wake is not None:
            self._wake.set()

    def _close(self) -> None:
        self._closed = True
        if self._wake is not None:
            self._wake.set()

    def _finish(self) -> None:
        self._done = True
        self._journal._drop(self)

    def close(self) -> None:
        """Stop receiving (idempotent). Called by the context manager that handed it out."""
        self._finish()
        self._buf.clear()
