"""The single writer of one log: assigns seqs, stores, folds, and fans out — synchronously.

Every entry of a session (or of the pool) goes through :meth:`Journal.append`: it gets the next seq and
the time, is encoded once (:class:`engine.log.Record`), written to the :class:`LogStore`, applied to the
fold, and pushed to live subscribers — in that order, in one synchronous step. Nothing acts on an entry
before it is stored (invariant: nothing is lost), and because no ``await`` separates the steps, an append
can never be cut in half by a cancellation: a ``finally`` block that appends a terminal entry needs no
shield for the append itself.

After each batch the fold is asked what must follow *right away* (:meth:`Folder.settle`): for a session,
a ``stream.ended`` for every stream the evidence just ended (a result, a process exit, a timeout, an
escalated interrupt). Those are appended in the same step, so a stream's terminal entry is in the log
before the code that caused it runs its next line.

When the store fails (disk full, permissions), entries are kept in memory and retried with the next
append, so the sequence stays gap-free and live subscribers keep going; :attr:`Journal.write_error`
says why, and readiness reports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, cast

import msgspec
import trio

from turnstile.engine.errors import LogError
from turnstile.engine.framing import Frame
from turnstile.engine.log import (
    CliLine,
    Entry,
    Record,
    StreamEnded,
    TurnRequested,
    UnknownEntry,
    entries_from_frames,
    record,
)
from turnstile.engine.protocol import Message
from turnstile.engine.runtime.syncer import Syncable, Syncer, default_syncer
from turnstile.engine.stores import LogStore

if TYPE_CHECKING:
    from turnstile.engine.runtime.subscription import Subscription

__all__ = ["Folder", "Journal"]


class Folder(Protocol):
    """What a journal needs of a fold: apply an entry, and say which entries must follow at once."""

    def apply(self, entry: Entry, view: Message | None) -> object:
        """Fold one entry; truthy when it changed some lifecycle state (cheap hint for :meth:`settle`)."""
        ...

    def settle(self) -> list[Entry]:
        """Entries (seq and ts not yet assigned) the log must carry now, e.g. ``stream.ended``."""
        ...


Listener = Callable[[Sequence[Record]], None]


class Journal:
    """One log's single writer. Not thread-safe; used from one trio thread only."""

    def __init__(
        self,
        name: str,
        store: LogStore,
        folder: Folder | None = None,
        *,
        clock: Callable[[], float] = time.time,
        syncer: Syncer | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.folder = folder
        self._clock = clock
        # By default the process-wide syncer, shared by every journal, so that a burst of fsyncs across
        # sessions is one trip to its thread.
        self._syncer = syncer if syncer is not None else default_syncer
        self._next = store.last_seq + 1
        self._unstored: list[Record] = []
        self.write_error: str | None = None
        self.closed = False
        self._listeners: list[Listener] = []
        #: Called after a batch that changed some machine state (the fold said so), before its settle.
        self.on_change: Callable[[], None] | None = None
        self._live: set[Subscription] = set()
        self.subscriptions: set[Subscription] = set()
        self.lagged_total = 0
        # Where each stream starts and ends, so a stream subscription can skip straight to it.
        self.stream_start: dict[str, int] = {}
        self.stream_end: dict[str, int] = {}

    # --- writing ---------------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the last entry appended (stored or still pending)."""
        return self._next - 1

    @property
    def next_seq(self) -> int:
        """The seq the next entry will get."""
        return self._next

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(records)`` after each batch is stored and folded. It must not append."""
        self._listeners.append(listener)

    def append(self, entry: Entry) -> Record:
        """Append one entry; its ``seq`` and ``ts`` are assigned here (pass ``seq=0, ts=None``)."""
        return self.extend([entry])[0]

    def extend(self, entries: Iterable[Entry]) -> list[Record]:
        """Append entries in order (seqs and times assigned here) and everything they settle."""
        now = self._clock()
        stamped: list[Entry] = []
        for entry in entries:
            stamped.append(msgspec.structs.replace(entry, seq=self._next, ts=now))
            self._next += 1
        records = [record(e) for e in stamped]
        if records:
            self._commit(records, stamped, [None] * len(records))
        return records

    def append_frames(
        self, frames: Sequence[Frame], stream: str | None
    ) -> list[tuple[Entry, Message | None]]:
        """Append framed CLI stdout lines (one batch: one write, one wake-up per subscriber).

        Returns each line's entry and typed view (blank lines are skipped).
        """
        out = entries_from_frames(frames, seq=self._next, ts=self._clock(), stream=stream)
        self._next += len(out)
        if out:
            self._commit([record(e) for e, _ in out], [e for e, _ in out], [v for _, v in out])
        return out

    def _commit(self, records: list[Record], entries: list[Entry], views: Sequence[Message | None]) -> None:
        if self.closed:
            raise LogError(f"log {self.name} is closed; no more entries can be appended")
        self._store(records)
        changed = False
        apply = self.folder.apply if self.folder is not None else None
        for entry, view in zip(entries, views, strict=True):
            if type(entry) is not CliLine:  # the bulk of entries: CLI lines, which index nothing
                self._index(entry)
            if apply is not None and apply(entry, view):
                changed = True
        for sub in list(self._live):
            sub._push(records)
        for listener in self._listeners:
            listener(records)
        if changed and self.folder is not None:
            if self.on_change is not None:
                self.on_change()
            self._settle()

    def _settle(self) -> None:
        assert self.folder is not None
        follow = self.folder.settle()
        if follow:
            # Folded like any entry; a stream.ended settles nothing further, so this recursion is shallow.
            self.extend(follow)

    async def flush(self) -> None:
        """Make the lifecycle entries appended so far durable (fsync in a worker thread, batched with other
        logs' by the :class:`Syncer`, so the disk never stalls the event loop). Cancellation: an fsync
        that started finishes in its thread."""
        if getattr(self.store, "sync_pending", False) and not self.closed:
            try:
                await self._syncer.sync(cast(Syncable, self.store))
            except LogError as exc:
                self.write_error = str(exc)

    def retry(self) -> bool:
        """Try again to store entries a failing store refused; True when nothing is pending any more."""
        if self._unstored and not self.closed:
            self._store([])
        return not self._unstored

    def _store(self, records: list[Record]) -> None:
        pending = self._unstored + records if self._unstored else records
        try:
            self.store.append(pending)
        except LogError as exc:
            self._unstored = list(pending)
            self.write_error = str(exc)
            return
        self._unstored = []
        self.write_error = None

    async def replay(self, chunk: int = 2048, observe: Callable[[Entry], None] | None = None) -> int:
        """Fold the entries the store already holds (a reopened log); return how many.

        Nothing is appended or pushed. Yields to the scheduler between chunks, so a long log does not
        stall other tasks. Call once, before the first append.
        """
        after = 0
        while True:
            batch = list(self.store.read(after, chunk))
            if not batch:
                break
            for rec in batch:
                entry = rec.entry
                if isinstance(entry, UnknownEntry):
                    continue
                self._index(entry)
                if observe is not None:
                    observe(entry)
                if self.folder is not None:
                    # No view: the fold decodes a CLI line itself when it needs to.
                    self.folder.apply(entry, None)
            after = batch[-1].entry.seq
            await trio.lowlevel.checkpoint()
        self._next = self.store.last_seq + 1
        return after

    def _index(self, entry: Entry) -> None:
        if isinstance(entry, TurnRequested) and entry.stream is not None:
            self.stream_start.setdefault(entry.stream, entry.seq)
        elif isinstance(entry, StreamEnded) and entry.stream is not None:
            self.stream_end.setdefault(entry.stream, entry.seq)

    # --- reading ---------------------------------------------------------------------------------------

    def read(self, after: int, limit: int) -> list[Record]:
        """Up to ``limit`` records with ``seq > after``: from the store, then any not stored yet."""
        out = list(self.store.read(after, limit))
        if len(out) < limit and self._unstored:
            start = max(after, self.store.last_seq)
            out.extend(r for r in self._unstored if r.entry.seq > start)
            out = out[:limit]
        return out

    # --- subscribers -----------------------------------------------------------------------------------

    def _go_live(self, sub: Subscription) -> bool:
        """Register ``sub`` for live pushes; False when the log is closed (nothing more will come)."""
        if self.closed:
            return False
        self._live.add(sub)
        return True

    def _drop(self, sub: Subscription) -> None:
        self._live.discard(sub)
        self.subscriptions.discard(sub)

    def close(self) -> None:
        """No more appends: live subscribers finish what they have, then end. Closes the store."""
        if self.closed:
            return
        self.closed = True
        if self._unstored:
            # Last chance to persist what a failing store refused.
            try:
                self.store.append(self._unstored)
                self._unstored = []
            except LogError as exc:
                self.write_error = str(exc)
        for sub in list(self._live):
            sub._close()
        self._live.clear()
        self.store.close()
