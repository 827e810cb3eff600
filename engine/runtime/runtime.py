"""The runtime: sessions, the pool and recovery under one nursery. Open it with :func:`open_runtime`.

::

    async with open_runtime(RuntimeConfig(data_dir="/var/lib/turnstile")) as rt:
        info = await rt.create_session()
        stream = await rt.start_turn(info.id, "hello")
        async with rt.subscribe(info.id, stream=stream) as sub:
            async for batch in sub:          # catch-up, then live; ends after stream.ended
                ...

Lifetimes: :func:`open_runtime` owns the root nursery. In it run the pool, one task per session (each
with its own nursery: process, readers, timers), and the recovery of logs found in the data directory.
Leaving the ``async with`` — normally, by an exception, or by cancellation — ends every open stream with
its terminal entry (``cancelled``, "server shutting down"), closes and reaps every agent process, drains
the pool and closes the logs, shielded and bounded by ``shutdown_timeout_s``.

Startup never waits on the pool or on recovery: leftover processes of a crashed predecessor are reaped
from the ledger (quick), then the pool warms and old logs are folded in the background. Until recovery is
done :meth:`Runtime.readiness` says so, and calls that need a session wait for it. Recovery ends every
turn that has no ``stream.ended`` in its log, whatever earlier recoveries wrote; a log that cannot be read
back (damaged before its last line) makes that one session answer :class:`SessionDamaged`.

When a log cannot be written (disk full), its entries wait in memory (:mod:`engine.runtime.journal`) and a
task retries them every ``storage_retry_s``; meanwhile new sessions and turns get
:class:`StorageUnavailable` and readiness says why, until the backlog is written.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import trio

from turnstile.engine.errors import (
    ConfigError,
    LogError,
    RuntimeClosed,
    SessionDamaged,
    SessionExists,
    SessionNotFound,
    StorageUnavailable,
    StreamNotFound,
    TurnstileError,
)
from turnstile.engine.fold import SessionFold
from turnstile.engine.log import CliLine, Entry, Record, SessionCreated, SessionStopped, StreamEnded
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig
from turnstile.engine.runtime.info import (
    TIMING_BUCKETS_MS,
    MetricsSnapshot,
    Readiness,
    SessionInfo,
    TimingHistogram,
    TimingSummary,
)
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.runtime.ledger import ProcessLedger
from turnstile.engine.runtime.pool import Pool
from turnstile.engine.runtime.process import Launcher, SubprocessLauncher
from turnstile.engine.runtime.session import Session
from turnstile.engine.runtime.subscription import Subscription
from turnstile.engine.runtime.watch import SessionWatch
from turnstile.engine.stores import LogStore
from turnstile.engine.stores.file import FileLogRepository, validate_session_id
from turnstile.engine.stores.memory import MemoryLogStore

__all__ = ["Runtime", "open_runtime"]

logger = logging.getLogger("turnstile.runtime")

_CHECK_TTL_S = 5.0
_TIMINGS_KEPT = 1000


@asynccontextmanager
async def open_runtime(
    config: RuntimeConfig | None = None, *, launcher: Launcher | None = None
) -> AsyncIterator[Runtime]:
    """Start a runtime; on exit every stream gets its terminal entry and every child is reaped.

    ``launcher`` replaces the real subprocess launcher (any :class:`engine.runtime.process.Launcher`; the
    test suite's in-memory one is ``tests/scripted.py``). Exceptions from the body come out of trio's
    nursery, i.e. wrapped in an ``ExceptionGroup``.
    """
    rt = Runtime(config or RuntimeConfig(), launcher)
    try:
        async with trio.open_nursery() as nursery:
            rt._nursery = nursery
            try:
                await nursery.start(rt._run_pool)
                rt.pool.want(rt.config.default_agent)
                nursery.start_soon(rt._recover)
                nursery.start_soon(rt._retry_storage)
                yield rt
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(rt.config.shutdown_timeout_s):
                    await rt._shutdown()
                # Whatever did not finish in time is cancelled; its own shielded teardown still runs.
                nursery.cancel_scope.cancel()
    finally:
        # Every task is done: nothing can append any more. End what is still open, close the logs.
        rt._close_logs()


class RuntimeClock:
    """The runtime's one clock: wall-clock seconds (log timestamps) that run with trio's clock.

    Anchored to ``time.time()`` once, then advanced by ``trio.current_time()``: a session's entries are
    stamped with the same clock its timers sleep on, so the times in a log are the times its deadlines
    were computed from (and under trio's mock clock, tests' virtual minutes show in the log). Outside a
    trio run it reads the wall clock.
    """

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._trio0: float | None = None

    def __call__(self) -> float:
        try:
            t = trio.current_time()
        except RuntimeError:
            return time.time()
        if self._trio0 is None:
            self._trio0 = t
        return self._wall0 + (t - self._trio0)

    def to_trio(self, at: float) -> float:
        """The trio time at which this clock reads ``at``."""
        now = self()
        return trio.current_time() + (at - now)


class Runtime:
    """Sessions, turns, subscriptions, readiness and metrics. Get one from :func:`open_runtime`."""

    def __init__(self, config: RuntimeConfig, launcher: Launcher | None = None) -> None:
        self.config = config
        self.clock = RuntimeClock()
        self._repo: FileLogRepository | None = None
        ledger_path: Path | None = None
        if config.data_dir is not None:
            self._repo = FileLogRepository(config.data_dir, fsync=config.fsync)
            try:
                self._repo.ensure()
                self._repo.remove_stray_probes()
                ledger_path = Path(config.data_dir) / "processes.json"
            except LogError as exc:
                # Not fatal here: readiness reports it, and creating a session raises it.
                logger.error("%s", exc)
        self.ledger = ProcessLedger(ledger_path)
        self.reaped = self.ledger.reap_leftovers()
        for entry in self.reaped:
            logger.warning("killed leftover agent process %d from a previous run: %s", entry.pid, entry.argv)
        self.launcher: Launcher = launcher if launcher is not None else SubprocessLauncher(self.ledger)
        self.pool = Pool(config, self.launcher)
        self._sessions: dict[str, Session] = {}
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._recovered = trio.Event()
        #: Session logs that could not be read back at startup (session id -> why): damaged sessions.
        self.recovery_errors: dict[str, str] = {}
        self._storage_trouble = trio.Event()  # set when a log's storage starts failing
        self._outcomes: Counter[str] = Counter()
        self._timings: deque[tuple[float | None, float | None]] = deque(maxlen=_TIMINGS_KEPT)
        # Histograms over every ended turn (the deque above keeps only recent ones, for percentiles).
        self._hist_total = _Histogram()
        self._hist_ttfe = _Histogram()
        self._checks: dict[str, tuple[float, str | None]] = {}
        self._watches: set[SessionWatch] = set()

    # --- sessions ---------------------------------------------------------------------------------------

    async def create_session(
        self, agent: AgentConfig | None = None, session_id: str | None = None
    ) -> SessionInfo:
        """Create a session (``session.created`` is logged) and start it. Returns at once: its process is
        taken warm from the pool or spawned cold in the background (never waited for here).

        Raises :class:`SessionExists`, :class:`ConfigError` (bad id), :class:`LogError`,
        :class:`RuntimeClosed`. Cancellation: only while waiting for start-up recovery, before anything
        is created.
        """
        self._check_open()
        await self._recovered.wait()
        agent = agent if agent is not None else self.config.default_agent
        sid = session_id if session_id is not None else f"s-{uuid.uuid4().hex[:12]}"
        try:
            validate_session_id(sid)
        except LogError as exc:
            raise ConfigError(str(exc)) from exc
        self._raise_if_damaged(sid)
        if sid in self._sessions or (self._repo is not None and self._repo.exists(sid)):
            raise SessionExists(
                f"session {sid!r} already exists; pick another id or use the existing session"
            )
        self.check_storage()
        session = self._new_session(sid, agent, self._open_new_log(sid))
        session.journal.append(
            SessionCreated(
                seq=0,
                ts=None,
                session_id=sid,
                agent=agent.agent,
                config=msgspec.to_builtins(agent),
                pool_key=agent.pool_key(),
            )
        )
        if session.journal.failing:
            # Not written: no session. Leave no empty log behind (the id stays free).
            reason = session.journal.write_error
            session.journal.abandon(quiet=True)
            if self._repo is not None:
                _remove_if_empty(self._repo.path_for(sid))
            raise StorageUnavailable(
                f"cannot create session {sid!r}: {reason}; free space in the data directory and retry"
            )
        self._sessions[sid] = session
        self._mark(sid)
        # Shielded (it returns at once): a session is either created and running, or not created at all.
        with trio.CancelScope(shield=True):
            await self._start_session(session, prewarm=self.config.pool_size > 0)
        return session.info()

    def _open_new_log(self, sid: str) -> LogStore:
        if self._repo is None:
            return MemoryLogStore()
        try:
            return self._repo.open(sid)
        except LogError as exc:
            raise StorageUnavailable(
                f"cannot create the log of session {sid!r}: {exc}; check the data directory and retry"
            ) from exc

    def session(self, sid: str) -> Session:
        """The session with id ``sid``; raises :class:`SessionNotFound` or :class:`SessionDamaged`."""
        session = self._sessions.get(sid)
        if session is not None:
            return session
        self._raise_if_damaged(sid)
        raise SessionNotFound(f"no session {sid!r}; list sessions to find it, or create it first")

    def _raise_if_damaged(self, sid: str) -> None:
        """Raise :class:`SessionDamaged` if ``sid``'s log could not be read back and is still there."""
        why = self.recovery_errors.get(sid)
        if why is None:
            return
        if self._repo is not None and not self._repo.path_for(sid).exists():
            # Moved aside by the operator: the id is free again.
            del self.recovery_errors[sid]
            return
        raise SessionDamaged(
            f"session {sid!r} exists but its log cannot be read back: {why}. Nothing of the session can be "
            "shown or continued (the other sessions work); move the file aside (keep it for inspection) to "
            "free the id, or restore it from a backup and restart the server"
        )

    def check_storage(self, sid: str | None = None) -> None:
        """Raise :class:`StorageUnavailable` while a log of this runtime (``sid``'s, or any when None)
        cannot be written: a new session, turn or live subscription would fail at once."""
        sessions = [self.session(sid)] if sid is not None else list(self._sessions.values())
        for session in sessions:
            if session.journal.failing:
                raise StorageUnavailable(
                    f"the log of session {session.id} cannot be written: {session.journal.write_error}; "
                    f"{session.journal.pending} entries wait in memory and are written first when the "
                    f"storage works again (retried every {self.config.storage_retry_s:g} s; see /readyz)"
                )

    async def wait_recovered(self) -> None:
        """Wait until the logs found in the data directory at startup are loaded (at once afterwards)."""
        await self._recovered.wait()

    def sessions(self) -> list[SessionInfo]:
        """Every session (also stopped ones, whose logs stay readable), oldest first."""
        return [s.info() for s in sorted(self._sessions.values(), key=lambda s: s.created_at)]

    async def start_turn(self, sid: str, prompt: str | list[dict[str, Any]]) -> str:
        """Queue a turn; return its stream id. ``turn.requested`` is in the log (durably) on return.

        Raises :class:`SessionNotFound`, :class:`SessionDamaged`, :class:`SessionStopped`,
        :class:`QueueFull`, :class:`StorageUnavailable`. Cancellation: a cancelled call has not started a
        turn; a call that started one returns its id.
        """
        self._check_open()
        await self._recovered.wait()
        # Cancellation is taken here, before the turn is accepted; accepting it and returning its id is
        # one synchronous step, so a caller never loses a turn it started.
        await trio.lowlevel.checkpoint()
        session = self.session(sid)
        if session.journal.retry():
            self.check_storage()  # another log of the data directory fails: the disk is full for all
        stream = session.submit(prompt)
        # turn.requested is durable before the caller hears of the turn: fsync in a worker thread (a slow
        # disk never stalls other streams), shielded so that the accepted turn's id is always returned.
        with trio.CancelScope(shield=True):
            await session.journal.flush()
        return stream

    async def interrupt(self, sid: str, stream_id: str, *, by: str = "client") -> None:
        """Interrupt a turn (out-of-band: never queued behind the agent's stdin). The stream ends
        ``cancelled``: at once if queued; when the agent honours the interrupt request; or after
        ``interrupt_grace_s`` by SIGTERM (then SIGKILL) to its process group. Returns without waiting.

        A no-op for an ended stream. Raises :class:`SessionNotFound`, :class:`StreamNotFound`.
        """
        await self._recovered.wait()
        await trio.lowlevel.checkpoint()
        self.session(sid).interrupt(stream_id, by=by)

    async def stop_session(self, sid: str, reason: str = "session stopped") -> None:
        """Stop a session: its open streams end ``cancelled``, its process is closed and reaped,
        ``session.stopped`` is logged and its subscribers end. Idempotent. Returns when done (bounded by
        ``close_grace_s + 2 * kill_after_s`` and a few seconds); cancelling the wait does not cancel the stop.
        """
        await self._recovered.wait()
        session = self.session(sid)
        await session.stop(reason)
        session.close_log()

    async def delete_session(self, sid: str, reason: str = "session deleted") -> None:
        """Stop the session (as :meth:`stop_session`), then forget it and remove its log: it is listed no
        more and its id can be used again. Raises :class:`SessionNotFound`, :class:`LogError` (the log
        file could not be removed: the session is stopped but stays listed)."""
        await self.stop_session(sid, reason)
        if self._sessions.get(sid) is None:
            return  # deleted meanwhile by another caller
        if self._repo is not None:
            self._repo.delete(sid)
        del self._sessions[sid]
        self._mark(sid)

    async def set_title(self, sid: str, title: str) -> SessionInfo:
        """Name a session (``session.titled`` is logged, durably); ``""`` goes back to no title (lists
        show the first prompt). Raises :class:`SessionNotFound`, :class:`SessionStopped` (a stopped
        session's log is closed), :class:`LogError`."""
        await self._recovered.wait()
        await trio.lowlevel.checkpoint()
        session = self.session(sid)
        session.set_title(title)
        with trio.CancelScope(shield=True):
            await session.journal.flush()
        return session.info()

    def watch_sessions(self) -> SessionWatch:
        """Watch which sessions change (:class:`SessionWatch`); close it (or use it as a context manager)
        when done. Marks: an engine entry appended, a CLI line that moves a machine, a session created,
        read back or deleted."""
        watch = SessionWatch(self._watches.discard)
        self._watches.add(watch)
        return watch

    def subscribe(
        self, sid: str, *, after: int = 0, stream: str | None = None
    ) -> AbstractAsyncContextManager[Subscription]:
        """Subscribe to a session's log after seq ``after``: catch-up from the store, then live.

        With ``stream=`` only that stream's entries, ending after its ``stream.ended``. Raises (when
        entered) :class:`SessionNotFound` / :class:`SessionDamaged` / :class:`StreamNotFound`; the
        iteration raises :class:`engine.errors.Lagged` when the subscriber falls ``subscriber_buffer``
        entries behind, and :class:`engine.errors.StorageFailed` (after every written entry) when the
        log cannot be written.
        """
        return self._subscribe(sid, after, stream)

    @asynccontextmanager
    async def _subscribe(self, sid: str, after: int, stream: str | None) -> AsyncIterator[Subscription]:
        if sid not in self._sessions:
            await self._recovered.wait()
        session = self.session(sid)
        if (
            stream is not None
            and stream not in session.journal.stream_start
            and stream not in session.fold.streams
        ):
            raise StreamNotFound(f"session {sid} has no stream {stream!r}")
        sub = Subscription(session.journal, after=after, stream=stream, buffer=self.config.subscriber_buffer)
        try:
            yield sub
        finally:
            sub.close()

    # --- health ---------------------------------------------------------------------------------------------

    def readiness(self) -> Readiness:
        """Can this server take work? Never blocks (checks are cached for a few seconds).

        Not ready while closing or recovering, when the data directory is not writable, when the default
        agent's binary cannot be found, or when a session's log cannot be written. The pool's state is
        reported but a cold or degraded pool does not make the server unready.
        """
        reasons: list[str] = []
        if self._closing:
            reasons.append("the runtime is shutting down")
        recovering = not self._recovered.is_set()
        if recovering:
            reasons.append("reading session logs back after a restart")
        if self._repo is not None:
            problem = self._cached("data_dir", self._repo.writable)
            if problem:
                reasons.append(problem)
        problem = self._cached("agent", lambda: self.launcher.check(self.config.default_agent))
        if problem:
            reasons.append(problem)
        broken = [s for s in self._sessions.values() if s.journal.failing]
        if broken:
            reasons.append(
                f"{len(broken)} session log(s) cannot be written (e.g. {broken[0].id}: "
                f"{broken[0].journal.write_error})"
            )
        unsynced = [s for s in self._sessions.values() if s.journal.sync_error]
        if unsynced:
            error = unsynced[0].journal.sync_error
            reasons.append(f"{len(unsynced)} session log(s) cannot be synced: {error}")
        return Readiness(
            ready=not reasons,
            reasons=reasons,
            pool=self.pool.status(),
            recovering=recovering,
            damaged=dict(self.recovery_errors),
        )

    def metrics(self) -> MetricsSnapshot:
        """Counts at this instant: sessions by state, streams by outcome, pool, subscribers, timings."""
        states: Counter[str] = Counter(s.state for s in self._sessions.values())
        streams_open = sum(len(s.fold.open_streams) for s in self._sessions.values())
        subscribers = sum(len(s.journal.subscriptions) for s in self._sessions.values())
        lagged = sum(s.journal.lagged_total for s in self._sessions.values())
        procs = sum(1 for s in self._sessions.values() if s.pid is not None)
        status = self.pool.status()
        return MetricsSnapshot(
            sessions_by_state=dict(states),
            streams_open=streams_open,
            streams_by_outcome=dict(self._outcomes),
            pool=status,
            pool_spawns=self.pool.spawns,
            agent_processes=procs + status.ready + status.warming,
            subscribers=subscribers,
            lagged_subscribers=lagged,
            turn_timings=self._timing_summary(),
            total_histogram=self._hist_total.snapshot(),
            ttfe_histogram=self._hist_ttfe.snapshot(),
            damaged_logs=len(self.recovery_errors),
        )

    def _cached(self, name: str, check: Callable[[], str | None]) -> str | None:
        now = time.monotonic()
        hit = self._checks.get(name)
        if hit is None or now - hit[0] > _CHECK_TTL_S:
            result: str | None = check()
            hit = self._checks[name] = (now, result)
        return hit[1]

    def _timing_summary(self) -> TimingSummary:
        totals = sorted(t for t, _ in self._timings if t is not None)
        ttfes = sorted(f for _, f in self._timings if f is not None)
        return TimingSummary(
            count=len(self._timings),
            total_p50_ms=_pct(totals, 50),
            total_p95_ms=_pct(totals, 95),
            total_max_ms=totals[-1] if totals else None,
            ttfe_p50_ms=_pct(ttfes, 50),
            ttfe_p95_ms=_pct(ttfes, 95),
        )

    # --- internals ------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing or self._nursery is None:
            raise RuntimeClosed("the runtime is shutting down; nothing new can start")

    def _new_session(
        self, sid: str, agent: AgentConfig, store: LogStore, created_at: float | None = None
    ) -> Session:
        fold = SessionFold(sid)
        # fsyncs go to the process-wide default syncer; the session's entries are stamped by the runtime's
        # clock, on which its timers run too
        journal = Journal(sid, store, clock=self.clock, backlog_bytes=self.config.storage_backlog_bytes)
        journal.add_failure_hook(self._on_storage_failed)
        session = Session(
            sid,
            agent,
            journal=journal,
            fold=fold,
            config=self.config,
            launcher=self.launcher,
            pool=self.pool if self.config.pool_size > 0 else None,
            created_at=created_at,
            clock=self.clock,
            to_trio=self.clock.to_trio,
        )
        journal.add_listener(self._count)
        journal.add_listener(lambda records: self._changed(sid, records))
        journal.on_change = lambda: self._mark(sid)  # a machine moved (a turn's state, the session's)
        return session

    def _changed(self, sid: str, records: Sequence[Record]) -> None:
        """Mark ``sid`` for the session watchers when a batch carries an engine entry (CLI lines count
        only when they move a machine: see ``journal.on_change``)."""
        if not self._watches:
            return
        for rec in records:
            if type(rec.entry) is not CliLine:
                self._mark(sid)
                return

    def _mark(self, sid: str) -> None:
        if not self._watches:
            return
        for watch in self._watches:
            watch.mark(sid)

    def _count(self, records: Sequence[Record]) -> None:
        for rec in records:
            if type(rec.entry) is StreamEnded:
                self._count_end(rec.entry)

    def _count_end(self, entry: StreamEnded) -> None:
        self._outcomes[entry.outcome] += 1
        if entry.timing is not None:
            self._timings.append((entry.timing.total_ms, entry.timing.ttfe_ms))
            self._hist_total.add(entry.timing.total_ms)
            self._hist_ttfe.add(entry.timing.ttfe_ms)

    async def _start_session(self, session: Session, *, prewarm: bool) -> None:
        assert self._nursery is not None
        await self._nursery.start(self._run_session, session, prewarm)

    async def _run_session(self, session: Session, prewarm: bool, task_status: trio.TaskStatus[None]) -> None:
        try:
            await session.run(prewarm=prewarm, task_status=task_status)
        except Exception:
            # A bug in one session must not take the others down; its run() already ended its streams.
            logger.exception("session %s failed", session.id)
        finally:
            if session.stop_requested:
                session.close_log()

    def _on_storage_failed(self, reason: str) -> None:
        self._storage_trouble.set()
        self._checks.pop("data_dir", None)  # readiness looks again at once

    async def _retry_storage(self) -> None:
        """While any log cannot be written, retry its waiting entries every ``storage_retry_s`` — a timer,
        not the session's next append, so readiness recovers by itself once there is space again."""
        while True:
            await self._storage_trouble.wait()
            self._storage_trouble = trio.Event()
            while True:
                await trio.sleep(self.config.storage_retry_s)
                failing = [s for s in self._sessions.values() if s.journal.failing]
                if not failing:
                    break
                healed = [s for s in failing if s.journal.retry()]
                if healed:
                    self._checks.pop("data_dir", None)
                for session in healed:
                    await session.journal.flush()  # the backlog's lifecycle entries (a turn's end) too

    async def _run_pool(self, task_status: trio.TaskStatus[None]) -> None:
        try:
            await self.pool.run(task_status=task_status)
        except Exception:
            logger.exception("the pool failed; sessions get cold processes from now on")

    async def _recover(self) -> None:
        """Fold every log in the data directory; end streams left open by a crash ("server restarted")."""
        try:
            if self._repo is not None:
                for sid in self._repo.list_ids():
                    if sid in self._sessions:
                        continue
                    try:
                        await self._load(sid)
                    except (TurnstileError, OSError, msgspec.MsgspecError) as exc:
                        self.recovery_errors[sid] = str(exc)
                        logger.error("cannot recover session %s: %s", sid, exc)
                    except Exception as exc:
                        # Whatever one log holds, it must not keep the server (and the others) down.
                        self.recovery_errors[sid] = f"cannot read its log back: {type(exc).__name__}: {exc}"
                        logger.exception("cannot recover session %s", sid)
        finally:
            self._recovered.set()

    async def _load(self, sid: str) -> None:
        assert self._repo is not None
        store = self._repo.open(sid)
        created: list[SessionCreated] = []
        stopped: list[SessionStopped] = []

        def observe(entry: Entry) -> None:
            if isinstance(entry, SessionCreated) and not created:
                created.append(entry)
            elif isinstance(entry, SessionStopped):
                stopped.append(entry)
            elif isinstance(entry, StreamEnded):
                self._count_end(entry)

        agent = self.config.default_agent
        session = self._new_session(sid, agent, store)
        try:
            await session.journal.replay(observe=observe)
        except BaseException:
            store.close()
            raise
        if created:
            try:
                agent = msgspec.convert(created[0].config, AgentConfig)
            except msgspec.ValidationError:
                logger.warning("session %s: unreadable agent config in its log; using the default", sid)
            session.agent = agent
            session.pool_key = agent.pool_key()
            session.created_at = created[0].ts or session.created_at
        else:
            session.created_at = _mtime(self._repo.path_for(sid))
        self._sessions[sid] = session
        self._mark(sid)
        # Every turn without a stream.ended in the log ends now: those left open and those an earlier
        # recovery or the evidence ended but whose terminal entry was lost (a torn last line cut off by
        # the repair). A stopped session stays readable.
        now = self.clock()
        session._feed(session.conductor.recover(stopped=bool(stopped)), now)
        session._feed(session.conductor.end_unended("server restarted", now), now)
        if stopped:
            session.mark_stopped()
            session.close_log()
            return
        if self._closing:
            return
        await self._start_session(session, prewarm=False)

    async def close(self) -> None:
        """End every open stream (``cancelled``, "server shutting down"), stop every process and the pool,
        and close the logs — while the caller's front-ends still run, so subscribers receive the terminal
        entries. Idempotent; shielded and bounded by ``shutdown_timeout_s``. Leaving :func:`open_runtime`
        does the same; call this first when listeners must outlive the runtime's work (servers)."""
        with trio.CancelScope(shield=True), trio.move_on_after(self.config.shutdown_timeout_s):
            await self._shutdown()
        self._close_logs()

    async def _shutdown(self) -> None:
        """End every stream, stop every session's process and the pool, in parallel, bounded."""
        if self._closing:
            return  # close() already did it (or is doing it)
        self._closing = True
        for watch in list(self._watches):
            watch.close()  # live session lists end; the server is going away
        async with trio.open_nursery() as nursery:
            for session in list(self._sessions.values()):
                nursery.start_soon(session.shutdown)
            nursery.start_soon(self.pool.drain)

    def _close_logs(self) -> None:
        for session in self._sessions.values():
            if not session.journal.closed:
                # Anything a cancelled session did not get to end still ends here (synchronously).
                session.end_all("server shutting down")
                session.close_log()
            if session.journal.failing:
                # The last try failed too: what still waits was sent to nobody, so it may be lost.
                session.journal.abandon()


class _Histogram:
    """Cumulative bucket counts of durations in milliseconds (unknown durations are not counted)."""

    def __init__(self) -> None:
        self.counts = [0] * len(TIMING_BUCKETS_MS)
        self.count = 0
        self.sum_ms = 0.0

    def add(self, ms: float | None) -> None:
        if ms is None:
            return
        self.count += 1
        self.sum_ms += ms
        for i, bound in enumerate(TIMING_BUCKETS_MS):
            if ms <= bound:
                self.counts[i] += 1

    def snapshot(self) -> TimingHistogram:
        return TimingHistogram(counts=list(self.counts), count=self.count, sum_ms=self.sum_ms)


def _pct(values: list[float], p: int) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))
    return values[index]


def _remove_if_empty(path: Path) -> None:
    try:
        if path.stat().st_size == 0:
            path.unlink()
    except OSError:
        pass


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return time.time()
