"""Group commit for log files: one long-lived thread fsyncs every log that is waiting, in batches.

A turn's lifecycle entries are made durable before the runtime acts on them (``turn.requested`` before
``start_turn`` returns, a turn's end before its process is kept). With many sessions those fsyncs come in
bursts — a hundred turns ending within a few milliseconds. One ``trio.to_thread`` call per fsync meant a
thread hand-off (and up to a hundred threads contending for the GIL) per turn end, on the event loop
that delivers every other stream's events. Here a request costs the loop one queue put and, later, one
callback; the thread takes whatever is queued when it wakes and fsyncs each log once for the lot.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Protocol

import trio

from turnstile.engine.errors import LogError

__all__ = ["Syncable", "Syncer", "default_syncer"]

log = logging.getLogger("turnstile.syncer")


class Syncable(Protocol):
    """A store whose appended lines may still need an fsync (see ``FileLogStore``)."""

    @property
    def sync_pending(self) -> bool:
        """True while something appended is not yet covered by a finished fsync."""
        ...

    def sync(self) -> None:
        """fsync what was appended; raises :class:`LogError`. Safe from a worker thread."""
        ...


@dataclass(eq=False)
class _Request:
    store: Syncable
    token: trio.lowlevel.TrioToken
    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None


class Syncer:
    """fsyncs stores in batches on one daemon thread (started on first use, idle while nothing waits).

    Safe to share between journals, runtimes and trio runs: each request carries its run's token.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: Batches run and fsync requests served (requests > batches when bursts were grouped).
        self.batches = 0
        self.requests = 0

    async def sync(self, store: Syncable) -> None:
        """Return once ``store``'s pending lines are on disk. Raises :class:`LogError` if the fsync failed.

        Cancellation: a cancelled call stops waiting; the fsync it asked for still happens.
        """
        if not store.sync_pending:
            await trio.lowlevel.checkpoint()
            return
        request = _Request(store, trio.lowlevel.current_trio_token())
        self._ensure_thread()
        self._queue.put(request)
        await request.done.wait()
        if request.error is not None:
            raise LogError(request.error)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="turnstile-fsync", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._serve(batch)

    def _serve(self, batch: list[_Request]) -> None:
        errors: dict[int, str | None] = {}
        for request in batch:
            key = id(request.store)
            if key not in errors:  # one fsync per store per batch covers every request for it
                try:
                    request.store.sync()
                    errors[key] = None
                except LogError as exc:
                    errors[key] = str(exc)
                except Exception as exc:  # a bug in a store must not kill the thread every log needs
                    log.exception("fsync failed")
                    errors[key] = f"cannot sync log: {type(exc).__name__}: {exc}"
            request.error = errors[key]
        self.batches += 1
        self.requests += len(batch)
        by_token: dict[trio.lowlevel.TrioToken, list[trio.Event]] = {}
        for request in batch:
            by_token.setdefault(request.token, []).append(request.done)
        for token, events in by_token.items():
            with contextlib.suppress(trio.RunFinishedError):  # that run is over: nobody waits any more
                token.run_sync_soon(_set_all, events)


def _set_all(events: list[trio.Event]) -> None:
    for event in events:
        event.set()


default_syncer = Syncer()
"""The process-wide syncer that journals use unless given another."""
