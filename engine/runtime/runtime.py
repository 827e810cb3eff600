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

Where the logs are comes from the configuration (:class:`engine.stores.Repository`): the data directory,
memory, or — with ``redis_url`` — Redis Streams shared by several servers (``docs/scaling.md``). Then each
log is written behind by a writer task (:mod:`engine.runtime.writer`), this runtime runs the sessions it
created (its ``node_id`` owns them) and serves every other session of the database read-only
(:mod:`engine.runtime.followers`); a turn, interrupt or stop for one of those raises
:class:`SessionOwnedElsewhere`. A health task pings Redis every ``storage_retry_s`` for readiness.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec
import trio

from turnstile.engine.errors import (
    ConfigError,
    LogCorrupted,
    LogError,
    RuntimeClosed,
    SessionDamaged,
    SessionExists,
    SessionNotFound,
    SessionOwnedElsewhere,
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
from turnstile.engine.runtime.writer import WriteBehind
from turnstile.engine.stores import AnyLogStore, Repository
from turnstile.engine.stores.file import validate_session_id
from turnstile.engine.stores.repository import FileRepository, MemoryRepository

if TYPE_CHECKING:
    from turnstile.engine.runtime.followers import Follower, Followers
    from turnstile.engine.stores.redis import RedisRepository

__all__ = ["Reader", "Runtime", "open_runtime"]

Reader: TypeAlias = "Session | Follower"
"""What the read side of the API serves: a session this runtime runs, or one another node runs."""

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
        async with rt._repo.connected(), trio.open_nursery() as nursery:
            rt._nursery = nursery
            try:
                await nursery.start(rt._run_pool)
                rt.pool.want(rt.config.default_agent)
                if rt.followers is not None and rt.writer is not None:
                    nursery.start_soon(rt._watch_repository)
                    await nursery.start(rt.writer.run)
                    await nursery.start(rt.followers.run)
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
        #: This server's name when it shares a Redis log with others (``node_id``), else None.
        self.node: str | None = None
        self._shared: RedisRepository | None = None
        #: Sessions other nodes run, read from the shared log (None without one).
        self.followers: Followers | None = None
        ledger_path: Path | None = None
        if config.redis_url is not None:
            from turnstile.engine.runtime.followers import Followers
            from turnstile.engine.stores.redis import RedisRepository

            self._shared = RedisRepository(config.redis_settings())
            self._repo: Repository = self._shared
            self.node = self._shared.node
            self.followers = Followers(self._shared, retry_max_s=max(config.storage_retry_s, 1.0))
            #: The one task that writes every log of this runtime to Redis (in pipelined rounds).
            self.writer: WriteBehind | None = WriteBehind(
                self._shared,
                grace_s=config.storage_grace_s,
                retry_max_s=max(config.storage_retry_s, 1.0),
                on_trouble=self._on_store_trouble,
            )
            if config.data_dir is not None:  # only the process ledger lives there
                try:
                    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
                    ledger_path = Path(config.data_dir) / "processes.json"
                except OSError as exc:
                    logger.error("cannot create %s for the process ledger: %s", config.data_dir, exc.strerror)
        elif config.data_dir is not None:
            files = FileRepository(config.data_dir, fsync=config.fsync)
            self._repo = files
            try:
                files.prepare()
                ledger_path = Path(config.data_dir) / "processes.json"
            except LogError as exc:
                # Not fatal here: readiness reports it, and creating a session raises it.
                logger.error("%s", exc)
        else:
            self._repo = MemoryRepository()
        if self._shared is None:
            self.writer = None
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
        self._recovery_blocked: str | None = None  # why recovery cannot read the logs (it keeps trying)
        self._recovery_changed = trio.Event()
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
        await self.wait_recovered()
        agent = agent if agent is not None else self.config.default_agent
        sid = session_id if session_id is not None else f"s-{uuid.uuid4().hex[:12]}"
        try:
            validate_session_id(sid)
        except LogError as exc:
            raise ConfigError(str(exc)) from exc
        self._raise_if_damaged(sid)
        self._check_shared()
        if sid in self._sessions or not await self._claim(sid):
            raise SessionExists(
                f"session {sid!r} already exists; pick another id or use the existing session"
            )
        try:
            self.check_storage()
            store = await self._open_new_log(sid)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._release(sid)
            raise
        session = self._new_session(sid, agent, store)
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
        if session.journal.writes_behind:
            # Written behind (Redis): a session is created once its session.created is written. Shielded
            # and bounded by storage_grace_s: either created and running, or not created at all.
            with trio.CancelScope(shield=True):
                await session.journal.flush()
        if session.journal.failing or session.journal.last_seq == 0:
            # Not written: no session. Leave no empty log behind (the id stays free).
            reason = session.journal.write_error or session.journal.write_trouble
            session.journal.abandon(quiet=True)
            with trio.CancelScope(shield=True):
                await self._release(sid)
            raise StorageUnavailable(
                f"cannot create session {sid!r}: {reason}; "
                + (
                    "retry when Redis answers (see /readyz)"
                    if self._shared
                    else "free space in the data directory and retry"
                )
            )
        self._sessions[sid] = session
        self._mark(sid)
        # Shielded (it returns at once): a session is either created and running, or not created at all.
        with trio.CancelScope(shield=True):
            await self._start_session(session, prewarm=self.config.pool_size > 0)
        return self.info_of(session)

    async def _open_new_log(self, sid: str) -> AnyLogStore:
        try:
            return await self._repo.open(sid)
        except LogError as exc:
            raise StorageUnavailable(
                f"cannot create the log of session {sid!r}: {exc}; check the {self._repo.description} "
                "and retry"
            ) from exc

    async def _claim(self, sid: str) -> bool:
        try:
            return await self._repo.claim(sid)
        except LogError as exc:
            raise StorageUnavailable(
                f"cannot create session {sid!r}: {exc}; retry when it answers (see /readyz)"
            ) from exc

    async def _release(self, sid: str) -> None:
        try:
            await self._repo.release(sid)
        except LogError as exc:
            logger.warning("session %s was not created; its id stays taken: %s", sid, exc)

    def _check_shared(self) -> None:
        """Raise :class:`StorageUnavailable` while the shared log (Redis) is known to be unreachable."""
        problem = self._repo.problem() if self._shared is not None else None
        if problem is not None:
            raise StorageUnavailable(
                f"the shared log cannot be written: {problem}; nothing new can start until it answers "
                "(retried every {:g} s; see /readyz)".format(self.config.storage_retry_s)
            )

    async def _local(self, sid: str) -> Session:
        """The session ``sid`` if this runtime runs it; else :class:`SessionOwnedElsewhere` (another node
        runs it), :class:`SessionDamaged` or :class:`SessionNotFound`."""
        session = self._sessions.get(sid)
        if session is not None:
            return session
        self._raise_if_damaged(sid)
        if self._shared is not None and self.node is not None:
            try:
                owner = await self._shared.owner(validate_session_id(sid))
            except LogError as exc:
                raise StorageUnavailable(f"cannot look up session {sid!r}: {exc}") from exc
            if owner is not None:
                raise SessionOwnedElsewhere(sid, owner, self.node)
        raise SessionNotFound(f"no session {sid!r}; list sessions to find it, or create it first")

    async def reader(self, sid: str) -> Reader:
        """The session ``sid`` to read: one this runtime runs, or (sharing a Redis log) one another node
        runs, folded from the shared log and brought up to date. Raises :class:`SessionNotFound`,
        :class:`SessionDamaged`, :class:`StorageUnavailable`."""
        session = self._sessions.get(sid)
        if session is not None:
            return session
        await self.wait_recovered()
        session = self._sessions.get(sid)
        if session is not None:
            return session
        self._raise_if_damaged(sid)
        if self.followers is not None:
            try:
                validate_session_id(sid)
            except LogError:
                raise SessionNotFound(f"no session {sid!r}; session ids are letters, digits, '_-.'") from None
            return await self.followers.get(sid)
        raise SessionNotFound(f"no session {sid!r}; list sessions to find it, or create it first")

    def info_of(self, reader: Reader) -> SessionInfo:
        """``reader``'s info, naming the node that runs it when servers share a log."""
        info = reader.info()
        if info.node is None and self.node is not None:
            info = msgspec.structs.replace(info, node=self.node)
        return info

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
        if not self._repo.present(sid):
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
        if sid is not None and sid not in self._sessions and self._shared is not None:
            self._check_shared()  # a session another node runs: only the shared log matters here
            return
        sessions = [self.session(sid)] if sid is not None else list(self._sessions.values())
        for session in sessions:
            if session.journal.failing:
                raise StorageUnavailable(
                    f"the log of session {session.id} cannot be written: {session.journal.write_error}; "
                    f"{session.journal.pending} entries wait in memory and are written first when the "
                    f"storage works again (retried every {self.config.storage_retry_s:g} s; see /readyz)"
                )

    async def wait_recovered(self) -> None:
        """Wait until the logs found in the data directory at startup are loaded (at once afterwards).

        Raises :class:`StorageUnavailable` while recovery cannot read them (Redis unreachable): it keeps
        trying, and readiness says why."""
        while not self._recovered.is_set():
            if self._recovery_blocked is not None:
                raise StorageUnavailable(f"{self._recovery_blocked}; retry when it answers (see /readyz)")
            await self._recovery_changed.wait()

    def _recovery_news(self, blocked: str | None) -> None:
        self._recovery_blocked = blocked
        self._recovery_changed.set()
        self._recovery_changed = trio.Event()

    def sessions(self) -> list[SessionInfo]:
        """Every session this runtime runs (also stopped ones, whose logs stay readable), oldest first."""
        return [self.info_of(s) for s in sorted(self._sessions.values(), key=lambda s: s.created_at)]

    async def list_sessions(self) -> list[SessionInfo]:
        """Every session, oldest first: with a shared log also those other nodes run (read from Redis)."""
        await self.wait_recovered()
        infos = {s.id: self.info_of(s) for s in self._sessions.values()}
        if self._shared is not None and self.followers is not None:
            try:
                ids = await self._shared.all_ids()
            except LogError as exc:
                raise StorageUnavailable(f"cannot list the sessions: {exc}") from exc
            for sid in ids:
                if sid in infos or sid in self.recovery_errors:
                    continue
                try:
                    infos[sid] = (await self.followers.get(sid)).info()
                except (SessionNotFound, LogCorrupted):
                    continue  # being created, or gone (expired) since the index was read
        return sorted(infos.values(), key=lambda i: i.created_at)

    async def start_turn(self, sid: str, prompt: str | list[dict[str, Any]]) -> str:
        """Queue a turn; return its stream id. ``turn.requested`` is in the log (durably) on return.

        Raises :class:`SessionNotFound`, :class:`SessionDamaged`, :class:`SessionStopped`,
        :class:`QueueFull`, :class:`StorageUnavailable`. Cancellation: a cancelled call has not started a
        turn; a call that started one returns its id.
        """
        self._check_open()
        await self.wait_recovered()
        if sid not in self._sessions:
            await self._local(sid)  # raises: not ours (another node runs it), damaged, or no such session
        self._check_shared()
        # Cancellation is taken here, before the turn is accepted; accepting it and returning its id is
        # one synchronous step, so a caller never loses a turn it started.
        await trio.lowlevel.checkpoint()
        session = self.session(sid)
        if session.journal.retry():
            self.check_storage()  # another log of the data directory fails: the disk is full for all
        stream = session.submit(prompt)
        # turn.requested is durable before the caller hears of the turn: fsync in a worker thread (a slow
        # disk never stalls other streams) or written to Redis, shielded so that the accepted turn's id
        # is always returned.
        with trio.CancelScope(shield=True):
            await session.journal.flush()
        requested = session.journal.stream_start.get(stream, 0)
        if session.journal.writes_behind and session.journal.last_seq < requested:
            # Redis did not take it within the grace: the session ended the turn (failed), and both wait
            # in memory to be written first. As when the disk is full: no turn taken.
            raise StorageUnavailable(
                f"session {sid} cannot write its log ({session.journal.write_error}); no turn taken: "
                "retry when the storage works again (see /readyz)"
            )
        return stream

    async def interrupt(self, sid: str, stream_id: str, *, by: str = "client") -> None:
        """Interrupt a turn (out-of-band: never queued behind the agent's stdin). The stream ends
        ``cancelled``: at once if queued; when the agent honours the interrupt request; or after
        ``interrupt_grace_s`` by SIGTERM (then SIGKILL) to its process group. Returns without waiting.

        A no-op for an ended stream. Raises :class:`SessionNotFound`, :class:`StreamNotFound`.
        """
        await self.wait_recovered()
        session = await self._local(sid)
        await trio.lowlevel.checkpoint()
        session.interrupt(stream_id, by=by)

    async def stop_session(self, sid: str, reason: str = "session stopped") -> None:
        """Stop a session: its open streams end ``cancelled``, its process is closed and reaped,
        ``session.stopped`` is logged and its subscribers end. Idempotent. Returns when done (bounded by
        ``close_grace_s + 2 * kill_after_s`` and a few seconds); cancelling the wait does not cancel the stop.
        """
        await self.wait_recovered()
        session = await self._local(sid)
        await session.stop(reason)
        session.close_log()
        if session.journal.writes_behind:
            with trio.CancelScope(shield=True):
                await session.journal.flush()  # session.stopped is written (or waits: see /readyz)

    async def delete_session(self, sid: str, reason: str = "session deleted") -> None:
        """Stop the session (as :meth:`stop_session`), then forget it and remove its log: it is listed no
        more and its id can be used again. Raises :class:`SessionNotFound`, :class:`LogError` (the log
        could not be removed: the session is stopped but stays listed)."""
        await self.stop_session(sid, reason)
        if self._sessions.get(sid) is None:
            return  # deleted meanwhile by another caller
        await self._repo.delete(sid)
        del self._sessions[sid]
        self._mark(sid)

    async def set_title(self, sid: str, title: str) -> SessionInfo:
        """Name a session (``session.titled`` is logged, durably); ``""`` goes back to no title (lists
        show the first prompt). Raises :class:`SessionNotFound`, :class:`SessionStopped` (a stopped
        session's log is closed), :class:`LogError`."""
        await self.wait_recovered()
        session = await self._local(sid)
        await trio.lowlevel.checkpoint()
        session.set_title(title)
        with trio.CancelScope(shield=True):
            await session.journal.flush()
        return self.info_of(session)

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
        session = await self.reader(sid)
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
        if self._recovery_blocked is not None and recovering:
            reasons.append(self._recovery_blocked)
        problem = self._repo.problem()
        if problem:
            reasons.append(problem if not self._shared else f"the shared log cannot be written: {problem}")
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
        if self.followers is not None:
            subscribers += self.followers.subscribers()
            lagged += self.followers.lagged()
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
        self, sid: str, agent: AgentConfig, store: AnyLogStore, created_at: float | None = None
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
        if journal.writes_behind:
            assert self.writer is not None
            self.writer.add(journal)
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
        if isinstance(self._repo, FileRepository):
            self._repo.forget_check()  # readiness looks again at once

    def _on_store_trouble(self, reason: str) -> None:
        if self._shared is not None:
            self._shared.note_trouble(reason)

    async def _watch_repository(self) -> None:
        """Ask the shared log how it is every ``storage_retry_s`` (readiness reads the answer)."""
        while True:
            await self._repo.check()
            await trio.sleep(self.config.storage_retry_s)

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
                if healed and isinstance(self._repo, FileRepository):
                    self._repo.forget_check()
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
            for sid in await self._recoverable():
                if sid in self._sessions:
                    continue
                while True:
                    try:
                        await self._load(sid)
                    except LogError as exc:
                        if self._shared is None or isinstance(exc, LogCorrupted):
                            self.recovery_errors[sid] = str(exc)
                            logger.error("cannot recover session %s: %s", sid, exc)
                            break
                        # Redis went away meanwhile: not the log's fault. Try again.
                        self._recovery_news(f"cannot read session {sid} back from Redis: {exc}")
                        await trio.sleep(self.config.storage_retry_s)
                        continue
                    except (TurnstileError, OSError, msgspec.MsgspecError) as exc:
                        self.recovery_errors[sid] = str(exc)
                        logger.error("cannot recover session %s: %s", sid, exc)
                    except Exception as exc:
                        # Whatever one log holds, it must not keep the server (and the others) down.
                        self.recovery_errors[sid] = f"cannot read its log back: {type(exc).__name__}: {exc}"
                        logger.exception("cannot recover session %s", sid)
                    break
        finally:
            self._recovered.set()
            self._recovery_news(None)

    async def _recoverable(self) -> list[str]:
        """The sessions to read back, once the repository answers (trying again while it does not)."""
        pause = 0.1
        while True:
            try:
                ids = await self._repo.session_ids()
            except LogError as exc:
                where = self._repo.description
                self._recovery_news(f"cannot list the sessions to recover from {where}: {exc}")
                await trio.sleep(pause)
                pause = min(pause * 2, max(self.config.storage_retry_s, 1.0))
                continue
            self._recovery_news(None)
            return ids

    async def _load(self, sid: str) -> None:
        store = await self._repo.open(sid)
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
            session.journal.abandon(quiet=True)  # closes the store (and ends its writer task)
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
            session.created_at = self._repo.created_at(sid) or time.time()
        self._sessions[sid] = session
        self._mark(sid)
        # Every turn without a stream.ended in the log ends now: those left open and those an earlier
        # recovery or the evidence ended but whose terminal entry was lost (a torn last line cut off by
        # the repair). A stopped session stays readable.
        now = self.clock()
        session._feed(session.conductor.recover(stopped=bool(stopped)), now)
        session._feed(session.conductor.end_unended("server restarted", now), now)
        if session.journal.writes_behind:
            await session.journal.flush()  # recovered means written, as with a file log
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
        # Written behind (Redis): the turns' terminal entries are written before the writers stop.
        async with trio.open_nursery() as nursery:
            for session in list(self._sessions.values()):
                if session.journal.writes_behind:
                    nursery.start_soon(session.journal.flush)

    def _close_logs(self) -> None:
        if self.followers is not None:
            # Readers of sessions other nodes run end here (they resume on another node).
            for follower in self.followers.all():
                self.followers.forget(follower.id)
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
