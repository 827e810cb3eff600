"""The single writer of one log: assigns seqs, stores, folds, and fans out — synchronously.

Every entry of a session (or of the pool) goes through :meth:`Journal.append`: it gets the next seq and
the time, is encoded once (:class:`engine.log.Record`), written to the :class:`LogStore`, applied to the
fold, and pushed to live subscribers and listeners — in that order, in one synchronous step. Because no
``await`` separates the steps, an append can never be cut in half by a cancellation: a ``finally`` block
that appends a terminal entry needs no shield for the append itself.

After each batch the fold is asked what must follow *right away* (:meth:`Folder.settle`): for a session,
a ``stream.ended`` for every stream the evidence just ended (a result, a process exit, a timeout, an
escalated interrupt). Those are appended in the same step, so a stream's terminal entry is in the log
before the code that caused it runs its next line.

**Nothing is sent that is not written.** An entry reaches subscribers and listeners only once the store
took it (written: the kernel has the bytes; fsync is a separate, later step — ``docs/log-format.md``).
When the store fails (disk full, permissions, I/O error) a *storage failure episode* begins:

* the failure is logged at ERROR once, with the store's message (the file and the system's error);
* the refused entries, and every entry appended while the episode lasts, are kept in memory in seq order
  and still folded (the session's own decisions need them) but sent to nobody — so a crash before they
  are written may give their seqs to other entries, and no client can have seen them;
* every live subscription ends at once with :class:`engine.errors.StorageFailed` (the last *written*
  seq and the reason), and the failure hooks run (the session ends its turns, see
  :mod:`engine.runtime.session`);
* agent output appended while failing is bounded: past ``backlog_bytes`` of waiting entries, stdout and
  stderr lines are counted, not kept, and a ``log.dropped`` entry says so once the storage works again
  (lifecycle entries — a terminal entry, an exit — are always kept);
* :meth:`Journal.retry` (the runtime calls it on a timer) writes the backlog first, in order, then the
  ``log.dropped`` note; the written entries go to listeners and the episode is over.

**Stores that write over the network** (:class:`engine.stores.AsyncLogStore`, e.g. Redis Streams) cannot
write in that synchronous step. For them the journal *writes behind*: an entry gets its seq, is folded and
settled at once as above, and waits in the same in-memory list as a failure episode's backlog; the
writer task (:mod:`engine.runtime.writer`) writes that list in order, in batches, and each batch is sent
to subscribers and listeners only once written (:meth:`Journal.written`). Everything else holds: nothing
is sent that is not written, and a seq is never reused. When the store keeps failing (the writer gives up
waiting after a grace period) or the entries waiting pass ``backlog_bytes``, the writer or the journal
begins a storage failure episode as above (:meth:`Journal.storage_failed`): subscribers are told, the
session ends its turns ``failed``, and the backlog is written first once the store works again.
:meth:`Journal.flush` waits until what was appended is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import msgspec
import trio

from turnstile.engine.errors import LogError
from turnstile.engine.framing import Frame
from turnstile.engine.log import (
    CliDecodeError,
    CliLine,
    CliOversized,
    Entry,
    LogDropped,
    Record,
    Stderr,
    StreamEnded,
    TurnRequested,
    UnknownEntry,
    entries_from_frames,
    record,
)
from turnstile.engine.protocol import Message
from turnstile.engine.runtime.syncer import Syncable, Syncer, default_syncer
from turnstile.engine.stores import AnyLogStore, AsyncLogStore

__all__ = ["DEFAULT_BACKLOG_BYTES", "Folder", "Journal", "Subscriber"]

logger = logging.getLogger("turnstile.journal")

DEFAULT_BACKLOG_BYTES = 16 << 20
"""Agent output kept in memory per log while its storage fails (past it, output is counted, not kept)."""

# Output an episode may drop past the bound: what the agent printed. Lifecycle entries are always kept.
_DROPPABLE: tuple[type, ...] = (CliLine, CliDecodeError, CliOversized, Stderr)


class Folder(Protocol):
    """What a journal needs of a fold: apply an entry, and say which entries must follow at once."""

    def apply(self, entry: Entry, view: Message | None) -> object:
        """Fold one entry; truthy when it changed some lifecycle state (cheap hint for :meth:`settle`)."""
        ...

    def settle(self) -> list[Entry]:
        """Entries (seq and ts not yet assigned) the log must carry now, e.g. ``stream.ended``."""
        ...


class Subscriber(Protocol):
    """What the journal needs of a live subscriber (:class:`engine.runtime.subscription.Subscription`):
    written records pushed to it, told when the storage fails, told when the log closes. Declared here so
    that the journal does not import the subscription module (which imports the journal)."""

    def _push(self, records: Sequence[Record]) -> None: ...

    def _storage_failed(self, last_seq: int, reason: str) -> None: ...

    def _close(self) -> None: ...


Listener = Callable[[Sequence[Record]], None]
FailureHook = Callable[[str], None]


@dataclass
class _Dropped:
    """Output not kept during one storage failure episode (past the backlog bound)."""

    entries: int = 0
    bytes: int = 0


class Journal:
    """One log's single writer. Not thread-safe; used from one trio thread only."""

    def __init__(
        self,
        name: str,
        store: AnyLogStore,
        folder: Folder | None = None,
        *,
        clock: Callable[[], float] = time.time,
        syncer: Syncer | None = None,
        backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
    ) -> None:
        self.name = name
        self.store = store
        self.folder = folder
        self._clock = clock
        # By default the process-wide syncer, shared by every journal, so that a burst of fsyncs across
        # sessions is one trip to its thread.
        self._syncer = syncer if syncer is not None else default_syncer
        self._next = store.last_seq + 1
        #: The seq of the last entry written (and sent): what readers may see.
        self._written = store.last_seq
        #: Whether the store writes behind (network I/O): entries wait in _pending for the writer task.
        self.writes_behind = isinstance(store, AsyncLogStore)
        self._progress = trio.Event()  # set (and replaced) whenever entries are written or waiting
        # Entries appended (seq given, folded) but not written, in seq order: a storage failure episode's
        # backlog, and (writing behind) the writer's queue.
        self._pending: list[Record] = []
        self._pending_bytes = 0
        self._backlog_bytes = backlog_bytes
        self._dropped = _Dropped()
        self._announce = False
        #: Why the store refused the last append, while a storage failure episode lasts (else None).
        self.write_error: str | None = None
        #: Why the last fsync failed (the entries are written but may not survive a power loss), else None.
        self.sync_error: str | None = None
        #: Writing behind: why the writer's last try failed (it keeps trying until the grace ends), else None.
        self.write_trouble: str | None = None
        #: Writing behind: called when entries start waiting to be written (wakes the writer task).
        self.on_unwritten: Callable[[], None] | None = None
        self.closed = False
        self._listeners: list[Listener] = []
        self._folded_hooks: list[Listener] = []
        self._failure_hooks: list[FailureHook] = []
        self._store_released = False
        #: Called after a batch that changed some machine state (the fold said so), before its settle.
        self.on_change: Callable[[], None] | None = None
        self._live: set[Subscriber] = set()
        self.subscriptions: set[Subscriber] = set()
        self.lagged_total = 0
        # Where each stream starts and ends, so a stream subscription can skip straight to it.
        self.stream_start: dict[str, int] = {}
        self.stream_end: dict[str, int] = {}

    # --- writing ---------------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the last entry *written* — the last one anybody can have been sent."""
        return self._written

    @property
    def next_seq(self) -> int:
        """The seq the next entry will get (entries kept in memory while storage fails come first)."""
        return self._next

    @property
    def failing(self) -> bool:
        """Whether a storage failure episode lasts: entries wait in memory, nothing is sent."""
        return self.write_error is not None

    @property
    def pending(self) -> int:
        """How many entries wait in memory to be written."""
        return len(self._pending)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(records)`` once a batch is written (and folded). It must not append."""
        self._listeners.append(listener)

    def add_folded_hook(self, hook: Listener) -> None:
        """Call ``hook(records)`` once a batch is folded, written or not: for the writer's own control
        flow (it sees entries nobody was sent yet), never to send anything anywhere. It must not append."""
        self._folded_hooks.append(hook)

    def add_failure_hook(self, hook: FailureHook) -> None:
        """Call ``hook(reason)`` when a storage failure episode begins (after the batch that hit it is
        folded). It may append: those entries wait in memory with the rest."""
        self._failure_hooks.append(hook)

    def append(self, entry: Entry, ts: float | None = None) -> Record:
        """Append one lifecycle entry (never dropped; the agent's output goes through :meth:`extend` or
        :meth:`append_frames`); its ``seq`` and ``ts`` are assigned here (pass ``seq=0, ts=None``)."""
        return self.extend([entry], ts)[0]

    def extend(self, entries: Iterable[Entry], ts: float | None = None) -> list[Record]:
        """Append entries in order (seqs and times assigned here) and everything they settle.

        ``ts`` is the time to stamp them with (default: the journal's clock now) — the writer passes the
        time it decided them at, so the entries say when the decision was made.

        Returns the records appended: while a storage failure has filled the backlog, the agent's output
        among ``entries`` may be counted for ``log.dropped`` instead (never a lifecycle entry).
        """
        now = self._clock() if ts is None else ts
        stamped: list[Entry] = []
        for entry in entries:
            stamped.append(msgspec.structs.replace(entry, seq=self._next, ts=now))
            self._next += 1
        records = [record(e) for e in stamped]
        if records:
            kept = self._commit(records, stamped, [None] * len(records), now)
            del records[kept:]
        return records

    def append_frames(
        self, frames: Sequence[Frame], stream: str | None, ts: float | None = None
    ) -> list[tuple[Entry, Message | None]]:
        """Append framed CLI stdout lines (one batch: one write, one wake-up per subscriber).

        Returns each line's entry and typed view (blank lines are skipped; while a storage failure has
        filled the backlog, lines past it are counted for ``log.dropped`` and not returned).
        """
        now = self._clock() if ts is None else ts
        out = entries_from_frames(frames, seq=self._next, ts=now, stream=stream)
        self._next += len(out)
        if out:
            kept = self._commit([record(e) for e, _ in out], [e for e, _ in out], [v for _, v in out], now)
            del out[kept:]
        return out

    def _commit(
        self, records: list[Record], entries: list[Entry], views: Sequence[Message | None], now: float
    ) -> int:
        """Write, fold, fan out, settle; the number of ``records`` kept (the rest: output dropped past the
        backlog bound while the storage fails — their seqs are given back)."""
        if self.closed:
            raise LogError(f"log {self.name} is closed; no more entries can be appended")
        written = self._write(records)
        if not written:
            if self.writes_behind and self.write_error is None:
                self._check_backlog(records)
            kept = self._bound(records)
            if kept < len(records):
                del records[kept:], entries[kept:]
                views = views[:kept]
            self._keep(records)
        changed = False
        apply = self.folder.apply if self.folder is not None else None
        for entry, view in zip(entries, views, strict=True):
            if type(entry) is not CliLine:  # the bulk of entries: CLI lines, which index nothing
                self._index(entry)
            if apply is not None and apply(entry, view):
                changed = True
        if records:
            for hook in self._folded_hooks:
                hook(records)
        if written:
            self._fan_out(written)
        if changed and self.folder is not None:
            if self.on_change is not None:
                self.on_change()
            self._settle(now)
        if self._announce:
            # After the batch that hit the failure is folded (and what it settles appended), so whatever
            # the hooks append comes after it in the log.
            self._announce = False
            self._announce_failure()
        return len(records)

    def _write(self, records: list[Record]) -> list[Record]:
        """Store ``records``; the records now written (none while storage fails: the caller keeps them)."""
        if self.write_error is not None:
            return []  # the episode goes on: retry() writes the backlog, in order, first
        if isinstance(self.store, AsyncLogStore):
            return []  # the writer task writes them (in order, after what waits) and then sends them
        try:
            self.store.append(records)
        except LogError as exc:
            self._begin_failure(str(exc), records[0].entry.seq)
            return []
        self._written = records[-1].entry.seq
        return records

    def _begin_failure(self, reason: str, first_seq: int) -> None:
        """A storage failure episode begins: announced after the batch at hand is folded."""
        self.write_error = reason
        self._announce = True
        if self.writes_behind:
            self._wake()  # flush() waits no longer: the entries wait in memory now
        logger.error(
            "log %s cannot be written: %s. Entries from seq %d on are kept in memory (agent output up "
            "to %d bytes), sent to nobody, and written first when the storage works again; "
            "subscribers were told; new sessions and turns get 503 meanwhile",
            self.name,
            reason,
            first_seq,
            self._backlog_bytes,
        )

    def _bound(self, records: list[Record]) -> int:
        """How many of ``records`` (the newest seqs) the backlog keeps: all but a tail of agent output
        past ``backlog_bytes`` — once output is dropped in an episode, all later output is too, so what
        is kept of it is one unbroken prefix. The dropped tail is counted, and its seqs given back."""
        room = self._backlog_bytes - self._pending_bytes
        for i, rec in enumerate(records):
            if not isinstance(rec.entry, _DROPPABLE):
                continue
            size = len(rec.data) + 1
            if self._dropped.entries == 0 and size <= room:
                room -= size
                continue
            tail = records[i:]
            if not all(isinstance(r.entry, _DROPPABLE) for r in tail):
                return len(records)  # a lifecycle entry follows: keep the batch whole (it is small)
            assert tail[-1].entry.seq == self._next - 1, "only the newest seqs can be given back"
            self._dropped.entries += len(tail)
            self._dropped.bytes += sum(len(r.data) + 1 for r in tail)
            self._next -= len(tail)
            return i
        return len(records)

    def _keep(self, records: list[Record]) -> None:
        self._pending.extend(records)
        self._pending_bytes += sum(len(r.data) + 1 for r in records)
        if self.writes_behind and self.on_unwritten is not None:
            self.on_unwritten()

    def _check_backlog(self, records: Sequence[Record]) -> None:
        """Writing behind: more waiting than ``backlog_bytes`` begins a storage failure episode."""
        size = self._pending_bytes + sum(len(r.data) + 1 for r in records)
        if size > self._backlog_bytes:
            trouble = self.write_trouble or "the store does not keep up"
            self._begin_failure(
                f"{trouble}; {size} bytes of entries waited to be written (more than storage_backlog_bytes="
                f"{self._backlog_bytes})",
                records[0].entry.seq,
            )

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _fan_out(self, records: Sequence[Record]) -> None:
        if not records:
            return
        self._written = records[-1].entry.seq
        if self.writes_behind:
            self._wake()
        for sub in list(self._live):
            sub._push(records)
        for listener in self._listeners:
            listener(records)

    def _announce_failure(self) -> None:
        reason = self.write_error
        if reason is None:
            return
        last = self.last_seq
        for sub in list(self._live):
            sub._storage_failed(last, reason)
        self._live.clear()
        for hook in self._failure_hooks:
            hook(reason)

    def _settle(self, now: float) -> None:
        assert self.folder is not None
        follow = self.folder.settle()
        if follow:
            # Folded like any entry; a stream.ended settles nothing further, so this recursion is shallow.
            # Stamped with the batch's time: the end is decided in the same instant as its evidence.
            self.extend(follow, now)

    def settle(self) -> list[Record]:
        """Append what the fold says must follow now (e.g. a ``stream.ended`` for every stream the
        evidence ended), even when no new entry changed anything — for recovery."""
        if self.folder is None:
            return []
        follow = self.folder.settle()
        return self.extend(follow) if follow else []

    async def flush(self) -> None:
        """Make the lifecycle entries appended so far durable (fsync in a worker thread, batched with other
        logs' by the :class:`Syncer`, so the disk never stalls the event loop). Cancellation: an fsync
        that started finishes in its thread.

        Writing behind: wait until every entry appended so far is written, or the storage fails (then
        the entries wait in memory; :attr:`failing` says so)."""
        if self.writes_behind:
            target = self._next - 1
            while self._written < target and self.write_error is None and not self._store_released:
                await self._progress.wait()
            return
        if getattr(self.store, "sync_pending", False) and not self.closed:
            try:
                await self._syncer.sync(cast(Syncable, self.store))
            except LogError as exc:
                if self.sync_error is None:
                    logger.error("log %s: %s (entries written but maybe not durable)", self.name, exc)
                self.sync_error = str(exc)
            else:
                self.sync_error = None

    def retry(self) -> bool:
        """Write the entries a failing store refused (then the ``log.dropped`` note, if output was
        dropped); True when the storage works again and nothing waits. The runtime calls this on a timer."""
        if self.write_error is None:
            return True
        if self._store_released or isinstance(self.store, AsyncLogStore):
            return False  # writing behind, the writer task retries (and ends the episode: written())
        try:
            self.store.append(self._pending)
        except LogError as exc:
            self.write_error = str(exc)
            return False
        written, self._pending, self._pending_bytes = self._pending, [], 0
        self._end_episode(written)
        self._fan_out(written)
        self._note_dropped()
        if self.closed and not self.failing:
            self._release_store()
        return not self.failing

    def _end_episode(self, written: list[Record]) -> None:
        """The backlog is written (``written``: its last part): the episode is over."""
        self.write_error = None
        dropped = self._dropped
        logger.warning(
            "log %s can be written again: wrote the %d entries kept in memory (seqs %d-%d)%s",
            self.name,
            len(written),
            written[0].entry.seq if written else 0,
            written[-1].entry.seq if written else 0,
            f"; {dropped.entries} lines of agent output ({dropped.bytes} bytes) could not be kept"
            if dropped.entries
            else "",
        )

    def _note_dropped(self) -> None:
        """Append the ``log.dropped`` note for the output an episode could not keep (if any)."""
        dropped, self._dropped = self._dropped, _Dropped()
        if dropped.entries:
            note = LogDropped(
                seq=0,
                ts=None,
                entries=dropped.entries,
                bytes=dropped.bytes,
                limit=self._backlog_bytes,
                reason="the log could not be written and the agent's output waiting in memory reached "
                f"{self._backlog_bytes} bytes",
            )
            self._append_note(note)

    def _append_note(self, entry: Entry) -> None:
        # Like extend(), also for a log closed to new entries whose backlog is being written.
        stamped = msgspec.structs.replace(entry, seq=self._next, ts=self._clock())
        self._next += 1
        rec = record(stamped)
        written = self._write([rec])
        if written:
            self._fan_out(written)
        else:
            self._keep([rec])
        if self._announce:
            self._announce = False
            self._announce_failure()

    # --- the writer task's side (writing behind; engine.runtime.writer) ------------------------------------

    def unwritten(self, limit: int, limit_bytes: int) -> list[Record]:
        """The oldest entries waiting to be written: at most ``limit`` of them and about ``limit_bytes``."""
        out: list[Record] = []
        size = 0
        for rec in self._pending:
            if out and (len(out) >= limit or size + len(rec.data) > limit_bytes):
                break
            out.append(rec)
            size += len(rec.data) + 1
        return out

    @property
    def released(self) -> bool:
        """Whether the store was given back: closed with nothing left to write, or abandoned."""
        return self._store_released

    def written(self, count: int) -> None:
        """The writer wrote the ``count`` oldest waiting entries: send them (and end a failure episode
        once nothing waits; release the store of a closed log once everything is written)."""
        batch = self._pending[:count]
        del self._pending[:count]
        self._pending_bytes -= sum(len(r.data) + 1 for r in batch)
        self.write_trouble = None
        episode_over = self.write_error is not None and not self._pending
        if episode_over:
            self._end_episode(batch)
        # During an episode no subscriber is live (all were told), so only listeners get these.
        self._fan_out(batch)
        if episode_over:
            self._note_dropped()
        if self.closed and not self._pending and self.write_error is None:
            self._wind_up()

    def storage_failed(self, reason: str) -> None:
        """The writer gave up waiting for the store: begin a storage failure episode now."""
        if self.write_error is not None or not self._pending:
            return
        self._begin_failure(reason, self._pending[0].entry.seq)
        self._announce = False
        self._announce_failure()

    async def replay(self, chunk: int = 2048, observe: Callable[[Entry], None] | None = None) -> int:
        """Fold the entries the store already holds (a reopened log); return how many.

        Nothing is appended or pushed. Yields to the scheduler between chunks, so a long log does not
        stall other tasks. Call once, before the first append.
        """
        after = 0
        while True:
            batch = await self.read_async(after, chunk)
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
        self._written = max(after, self.store.last_seq)
        self._next = self._written + 1
        return after

    def _index(self, entry: Entry) -> None:
        if isinstance(entry, TurnRequested) and entry.stream is not None:
            self.stream_start.setdefault(entry.stream, entry.seq)
        elif isinstance(entry, StreamEnded) and entry.stream is not None:
            self.stream_end.setdefault(entry.stream, entry.seq)

    # --- reading ---------------------------------------------------------------------------------------

    def read(self, after: int, limit: int) -> list[Record]:
        """Up to ``limit`` written records with ``seq > after`` (entries waiting in memory while the
        storage fails are not readable: nobody may see an entry that is not written). Only for a
        synchronous store: use :meth:`read_async` for any."""
        if isinstance(self.store, AsyncLogStore):
            raise LogError(f"log {self.name} is read over the network: use read_async()")
        return list(self.store.read(after, limit))

    async def read_async(self, after: int, limit: int) -> list[Record]:
        """Like :meth:`read`, for every store: a synchronous store is read without a scheduling point
        (so a caller can act on the result in the same step), a network store is awaited (raises
        :class:`LogError` when it cannot be read)."""
        if isinstance(self.store, AsyncLogStore):
            return await self.store.read_async(after, limit)
        return list(self.store.read(after, limit))

    # --- subscribers -----------------------------------------------------------------------------------

    def _go_live(self, sub: Subscriber) -> bool:
        """Register ``sub`` for live pushes; False when nothing more will be pushed to it (the log is
        closed, or its storage fails: then the subscription is told so)."""
        if self.write_error is not None:
            sub._storage_failed(self.last_seq, self.write_error)
            return False
        if self.closed and not (self.writes_behind and self._pending):
            return False  # (writing behind, a closed log's last entries are still sent once written)
        self._live.add(sub)
        return True

    def _drop(self, sub: Subscriber) -> None:
        self._live.discard(sub)
        self.subscriptions.discard(sub)

    def close(self) -> None:
        """No more appends: live subscribers finish what they have, then end. Closes the store — unless
        entries still wait for a failing store: then it stays open until :meth:`retry` writes them."""
        if self.closed:
            return
        self.closed = True
        if self.write_error is not None:
            # One more try now; the runtime's retry timer keeps trying for a closed log too.
            self.retry()
        if self.writes_behind and self._pending and self.write_error is None:
            return  # the writer writes and sends what waits, then ends the subscribers (written())
        self._wind_up()

    def _wind_up(self) -> None:
        for sub in list(self._live):
            sub._close()
        self._live.clear()
        if self.write_error is None:
            self._release_store()

    def abandon(self, *, quiet: bool = False) -> list[Record]:
        """Give up on the entries still waiting (the runtime is exiting, or a session could not be
        created): close the store and return them. They were sent to nobody, so their seqs may be
        reused after a restart. Logged at ERROR unless ``quiet``."""
        lost, self._pending, self._pending_bytes = self._pending, [], 0
        self.write_error = None
        if lost and not quiet:
            logger.error(
                "log %s: %d entries (seqs %d-%d) could not be written and are lost; nobody was sent "
                "them, and a restart folds the log as it is on disk (last seq %d)",
                self.name,
                len(lost),
                lost[0].entry.seq,
                lost[-1].entry.seq,
                self.last_seq,
            )
        self.closed = True
        self._release_store()
        return lost

    def _release_store(self) -> None:
        if not self._store_released:
            self._store_released = True
            self.store.close()
            if self.writes_behind:
                self._wake()  # the writer task (and flush) see it
