"""Writing behind: the one task that writes every journal whose store does network I/O (Redis Streams).

:mod:`engine.runtime.journal` folds an entry the instant it is appended; for an
:class:`engine.stores.AsyncLogStore` the entry then waits in the journal's list of unwritten entries.
:class:`WriteBehind` is the runtime's one writer for all such journals: each round it takes the oldest
waiting entries of every journal that has some (a batch per journal, in seq order) and writes them all in
one pipeline — one round trip, whatever the number of sessions; everything appended while a round is on
its way goes in the next — then tells each journal how much was written, and the journal sends exactly
that to its subscribers.

When the store fails (Redis down, restarting, too slow) each journal's batch is sent again, unchanged,
with exponential backoff — the store recognises a batch it already wrote, so nothing is written twice —
and the failure is reported to ``on_trouble`` (readiness). The entries keep waiting in memory, folded but
sent to nobody, for up to ``grace_s``: a Redis restart within that costs a pause, not a turn. Past it (or
once more than ``storage_backlog_bytes`` wait, which the journal checks itself) the journal begins a
storage failure episode: subscribers are told (``StorageFailed``), the session ends its turns ``failed``
with the reason, and the writer goes on trying; the backlog, the turns' terminal entries included, is
written first once the store works again. Nothing is ever dropped silently.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import trio

from turnstile.engine.errors import LogDiverged, LogError
from turnstile.engine.log import Record
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.stores import AsyncLogStore

__all__ = ["BatchAppender", "WriteBehind"]

logger = logging.getLogger("turnstile.writer")

BATCH_ENTRIES: Final = 1024
BATCH_BYTES: Final = 1 << 20
_BACKOFF_MIN_S: Final = 0.05


class BatchAppender(Protocol):
    """Appends a batch to each of several stores at once (:meth:`RedisRepository.append_many`)."""

    async def append_many(
        self, batches: Sequence[tuple[AsyncLogStore, Sequence[Record]]]
    ) -> list[int | LogError]:
        """Per batch: how many records are written now, or the error that stops its log; raises
        :class:`LogError` when nothing is known to be written."""
        ...


@dataclass(eq=False)
class _Writing:
    """One journal's state in the writer: the batch on its way (sent again, unchanged, until written)."""

    batch: list[Record] = field(default_factory=list)
    failing_since: float | None = None
    backoff: float = _BACKOFF_MIN_S
    next_try: float = -math.inf


class WriteBehind:
    """The runtime's writer task for journals on a network store. :meth:`add` them, :meth:`run` it."""

    def __init__(
        self,
        appender: BatchAppender,
        *,
        grace_s: float,
        retry_max_s: float,
        on_trouble: Callable[[str], None] | None = None,
    ) -> None:
        self._appender = appender
        self._grace_s = grace_s
        self._retry_max_s = retry_max_s
        self._on_trouble = on_trouble
        self._journals: dict[Journal, _Writing] = {}
        self._work = trio.Event()
        #: Rounds written (one pipeline each) and batches in them, for metrics and benchmarks.
        self.rounds = 0
        self.batches = 0

    def add(self, journal: Journal) -> None:
        """Write ``journal``'s waiting entries from now on (until it is released)."""
        assert journal.writes_behind, "only a journal on a network store writes behind"
        self._journals[journal] = _Writing()
        journal.on_unwritten = self._wake
        self._wake()

    def _wake(self) -> None:
        self._work.set()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write rounds forever (cancel to stop; a journal's waiting entries stay in the journal)."""
        task_status.started()
        while True:
            now = trio.current_time()
            due: list[tuple[Journal, _Writing]] = []
            wake_at = math.inf
            for journal, state in list(self._journals.items()):
                if journal.released:
                    del self._journals[journal]
                    continue
                if not state.batch:
                    state.batch = journal.unwritten(BATCH_ENTRIES, BATCH_BYTES)
                if not state.batch:
                    continue
                if state.next_try <= now:
                    due.append((journal, state))
                else:
                    wake_at = min(wake_at, state.next_try)
            if not due:
                self._work = trio.Event()
                with trio.move_on_at(wake_at):
                    await self._work.wait()
                continue
            await self._write(due)

    async def _write(self, due: list[tuple[Journal, _Writing]]) -> None:
        batches: list[tuple[AsyncLogStore, Sequence[Record]]] = []
        for journal, state in due:
            store = journal.store
            assert isinstance(store, AsyncLogStore)
            batches.append((store, state.batch))
        try:
            results: list[int | LogError] = await self._appender.append_many(batches)
        except LogError as exc:
            results = [exc] * len(due)
        self.rounds += 1
        self.batches += len(due)
        now = trio.current_time()
        for (journal, state), result in zip(due, results, strict=True):
            if journal.released:
                continue  # abandoned meanwhile: nobody waits for these any more
            if isinstance(result, LogError):
                self._failed(journal, state, result, now)
                continue
            if result:
                # The batch is the journal's oldest waiting entries, so this is exactly what was written.
                journal.written(result)
                del state.batch[:result]
            if state.failing_since is not None and not state.batch:
                waited = now - state.failing_since
                logger.warning("log %s: written again after %.1f s", journal.name, waited)
                state.failing_since = None
            state.backoff = _BACKOFF_MIN_S
            state.next_try = -math.inf

    def _failed(self, journal: Journal, state: _Writing, exc: LogError, now: float) -> None:
        if state.failing_since is None:
            state.failing_since = now
            first, last = state.batch[0].entry.seq, state.batch[-1].entry.seq
            logger.warning(
                "log %s: cannot write seqs %d-%d yet: %s; retrying", journal.name, first, last, exc
            )
        journal.write_trouble = str(exc)
        diverged = isinstance(exc, LogDiverged)  # this log cannot go on: no point in waiting
        if self._on_trouble is not None and not diverged:
            self._on_trouble(str(exc))  # the store itself is in trouble (readiness)
        if (diverged or now - state.failing_since >= self._grace_s) and not journal.failing:
            journal.storage_failed(
                f"{exc} (for {now - state.failing_since:.1f} s; the entries wait in memory and are written "
                "first when the store works again)"
            )
        state.next_try = now + state.backoff
        state.backoff = min(state.backoff * 2, self._retry_max_s)
