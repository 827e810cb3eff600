"""The session actor: one conversation, one agent process at a time, turns one after another.

A :class:`Session` runs as one task (:meth:`Session.run`) that owns a nursery; everything of the session
lives in it — the turn runner, the process supervisor (stdout reader, stderr reader, exit watcher), the
per-turn watchdog (layered timeouts) and interrupt deliveries. Nothing of a session outlives that nursery.

Turn lifecycle::

    submit()        turn.requested appended (durably) -> queued in memory
    runner          take the next turn; get a process (hot, warm from the pool, or cold with --resume)
                    write the prompt (prompt.written), then wait for the stream to end
    reader          every stdout chunk is framed and appended before anything acts on it; the fold turns
                    evidence (result, process exit, timeout, escalated interrupt) into stream.ended at once
    after the turn  replace the process if it timed out, was killed, or is due for recycling; in one-shot
                    mode (pool size 0) close it

**The terminal entry is always written.** Appends are synchronous (:mod:`engine.runtime.journal`), so the
``finally`` of a turn writes its ``stream.ended`` even while being cancelled; teardown of the process
(stdin EOF, SIGTERM, SIGKILL to the process group, reaping) runs after, shielded and time-bounded.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import trio

from turnstile.engine.errors import (
    AgentBinaryNotFound,
    QueueFull,
    SpawnError,
    StorageUnavailable,
    StreamNotFound,
)
from turnstile.engine.errors import SessionStopped as SessionStoppedError
from turnstile.engine.fold import SessionFold, StreamView
from turnstile.engine.framing import Frame, LineFramer
from turnstile.engine.log import (
    Entry,
    InterruptEscalated,
    InterruptRequested,
    Outcome,
    ProcessExited,
    ProcessSpawned,
    ProcessSpawnFailed,
    PromptWritten,
    Record,
    SessionStopped,
    SessionStopRequested,
    SessionTitled,
    Stderr,
    StreamEnded,
    Timeout,
    TurnRequested,
)
from turnstile.engine.protocol import Message, encode_stdin, interrupt_request, user_input
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig
from turnstile.engine.runtime.info import SessionInfo, TurnInfo
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.runtime.priming import PrimedProcess
from turnstile.engine.runtime.process import AgentProcess, Launcher
from turnstile.engine.runtime.stderr import StderrCapture

if TYPE_CHECKING:
    from turnstile.engine.runtime.pool import Pool

__all__ = ["Session", "SessionFolder"]

# How long the supervisor lets the readers drain the pipes after the process exited.
_DRAIN_S = 1.0
_NO_CONVERSATION = "No conversation found"

TimeoutKind = Literal["spawn", "first_event", "idle", "turn"]


class SessionFolder:
    """Adapts :class:`engine.fold.SessionFold` to the journal: fold, and end streams the evidence ended."""

    def __init__(
        self, fold: SessionFold, journal_ended: dict[str, int], session: Session | None = None
    ) -> None:
        self.fold = fold
        self._ended = journal_ended
        self._session = session
        #: Fold an entry; truthy (the changes) when something changed. The fold's own method: the journal
        #: calls it for every entry, so no wrapper call in between.
        self.apply: Callable[[Entry, Message | None], object] = fold.apply

    def settle(self) -> list[Entry]:
        """A ``stream.ended`` for every stream terminal by evidence but not ended yet."""
        out: list[Entry] = []
        for view in self.fold.unended():
            if view.id in self._ended:
                continue
            outcome: Outcome = view.outcome or "failed"
            reason = view.reason or ""
            if self._session is not None:
                reason = self._session._reason_for(view, outcome, reason)
            out.append(
                StreamEnded(
                    seq=0,
                    ts=None,
                    stream=view.id,
                    outcome=outcome,
                    reason=reason,
                    timing=view.timing,
                    exit_status=view.exit_status,
                )
            )
        return out


@dataclass(eq=False)
class _Slot:
    """The session's current agent process and what the supervisor knows about it."""

    proc: AgentProcess
    warm: bool
    resume: str | None
    spawned_at: float
    max_turns: int
    framer: LineFramer
    stderr: StderrCapture
    stdin_lock: trio.Lock = field(default_factory=trio.Lock)
    turns: int = 0
    successes: int = 0
    #: Set when we decided to end this process (the reason goes into process.exited).
    retiring: str | None = None
    #: Set when the process must not serve another turn (timed out, killed): replaced after the turn.
    doomed: str | None = None
    exited: trio.Event = field(default_factory=trio.Event)
    exit_logged: bool = False
    stdout_eof: trio.Event = field(default_factory=trio.Event)
    stderr_eof: trio.Event = field(default_factory=trio.Event)
    supervised: bool = False


@dataclass(eq=False)
class _Turn:
    id: str
    prompt: str | list[dict[str, Any]]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    slot: _Slot | None = None
    cancel_reason: str | None = None
    started_at: float | None = None
    dispatch_at: float | None = None
    first_event_at: float | None = None
    last_event_at: float | None = None
    interrupt_requested: bool = False
    changed: trio.Event = field(default_factory=trio.Event)

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class Session:
    """One conversation with an agent. Created and run by :class:`engine.runtime.runtime.Runtime`.

    Read-only attributes are safe to use from anywhere (``id``, ``agent``, ``pool_key``, ``journal``,
    ``fold``, :attr:`state`, :attr:`pid`); actions go through the runtime.
    """

    def __init__(
        self,
        session_id: str,
        agent: AgentConfig,
        *,
        journal: Journal,
        fold: SessionFold,
        config: RuntimeConfig,
        launcher: Launcher,
        pool: Pool | None = None,
        created_at: float | None = None,
    ) -> None:
        self.id = session_id
        self.agent = agent
        self.pool_key = agent.pool_key()
        self.journal = journal
        self.fold = fold
        self.created_at = created_at if created_at is not None else time.time()
        self._config = config
        self._launcher = launcher
        self._pool = pool
        self._queue: deque[_Turn] = deque()
        self._queue_changed = trio.Event()
        self._active: _Turn | None = None
        self._slot: _Slot | None = None
        self._proc_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._stop_reason = "session stopped"
        self._end_reason = "server shutting down"
        #: Set when the session's task failed with a bug: why its streams failed.
        self._failure: str | None = None
        self._done = trio.Event()
        self._scope = trio.CancelScope()
        self._stopped = False
        self._interrupts = 0
        #: The CLI session id whose ``--resume`` failed; later turns start a new conversation.
        self.resume_failed: str | None = None
        self._ended_events: dict[str, trio.Event] = {}
        # Folded, not written: the turn runner must see its stream end even while the log cannot be written.
        journal.add_folded_hook(self._on_records)
        journal.add_failure_hook(self._on_storage_failed)

    # --- what the runtime and APIs read ----------------------------------------------------------------

    @property
    def state(self) -> str:
        """The session machine's state (``starting``, ``idle``, ``busy``, ... ``stopped``)."""
        return str(self.fold.session_state)

    @property
    def pid(self) -> int | None:
        """The pid of the current agent process, if any."""
        slot = self._slot
        return slot.proc.pid if slot is not None and slot.proc.returncode is None else None

    @property
    def stopped(self) -> bool:
        """Whether the session is over (or stopping): no new turns."""
        return self._stopping or self._stopped

    @property
    def stop_requested(self) -> bool:
        """Whether someone asked this session to stop (as opposed to a server shutdown)."""
        return self._stopping

    @property
    def queued(self) -> int:
        """Turns waiting behind the running one."""
        return len(self._queue)

    @property
    def active_stream(self) -> str | None:
        """The id of the running turn's stream."""
        return self._active.id if self._active is not None else None

    def streams(self) -> dict[str, StreamView]:
        """Every stream of the session, by id (the fold's views)."""
        return dict(self.fold.streams)

    def info(self) -> SessionInfo:
        """A snapshot of the session for APIs (cheap: no I/O)."""
        turns = [
            TurnInfo(
                id=v.id,
                state=v.state,
                outcome=v.outcome,
                reason=v.reason,
                ended=v.ended,
                timing=v.timing,
                exit_status=v.exit_status,
            )
            for v in self.fold.streams.values()
        ]
        return SessionInfo(
            id=self.id,
            state=self.state,
            agent=self.agent.public(),
            pool_key=self.pool_key,
            pid=self.pid,
            cli_session_id=self.fold.cli_session_id,
            created_at=self.created_at,
            last_seq=self.journal.last_seq,
            active_stream=self.active_stream,
            queued=len(self._queue),
            turns=turns,
            resume_failed=self.resume_failed,
            log_error=self.journal.write_error,
            title=self.fold.title,
            first_prompt=self.fold.first_prompt,
            last_activity=self.fold.now,
            restarted=self.fold.restarted,
        )

    def mark_stopped(self) -> None:
        """For a session read back from a log that shows it stopped: no task will run it."""
        self._stopped = True
        self._done.set()

    def ended_event(self, stream: str) -> trio.Event:
        """An event set once ``stream`` has its ``stream.ended`` entry (already set if it has)."""
        ev = self._ended_events.get(stream)
        if ev is None:
            ev = self._ended_events[stream] = trio.Event()
            if stream in self.journal.stream_end:
                ev.set()
        return ev

    # --- actions (called by the runtime) ----------------------------------------------------------------

    def submit(self, prompt: str | list[dict[str, Any]]) -> str:
        """Accept a turn: append ``turn.requested`` (durable before returning) and queue it.

        Raises :class:`SessionStopped`, :class:`QueueFull`, or :class:`StorageUnavailable` when the log
        cannot be written (no turn is accepted then).
        """
        if self.stopped:
            raise SessionStoppedError(f"session {self.id} is stopped; create a new session for more turns")
        if not self.journal.retry():
            raise StorageUnavailable(
                f"session {self.id} cannot write its log ({self.journal.write_error}); no turn taken: "
                "retry when the storage works again (see /readyz)"
            )
        if (self._queue or self._active is not None) and len(self._queue) >= self._config.max_queued_turns:
            raise QueueFull(
                f"session {self.id} already has {len(self._queue)} turns queued "
                f"(max_queued_turns={self._config.max_queued_turns}); wait for one to finish, then retry"
            )
        stream = self._new_stream_id()
        self.journal.append(TurnRequested(seq=0, ts=None, stream=stream, prompt=prompt))
        if self.journal.failing:
            # Not written, so not taken: its request and end wait in memory with the rest of the episode.
            self._end_stream(stream, "failed", f"storage failed: {self.journal.write_error}")
            raise StorageUnavailable(
                f"session {self.id} cannot write its log ({self.journal.write_error}); no turn taken: "
                "retry when the storage works again (see /readyz)"
            )
        self._queue.append(_Turn(stream, prompt))
        self._wake_runner()
        return stream

    def set_title(self, title: str) -> None:
        """Log ``session.titled``. Raises :class:`SessionStopped` once the log is closed, :class:`LogError`
        when it cannot be written (:class:`StorageUnavailable`)."""
        if self.journal.closed:
            raise SessionStoppedError(
                f"session {self.id} is stopped and its log is closed, so its title cannot change"
            )
        self.journal.append(SessionTitled(seq=0, ts=None, title=title))
        if self.journal.write_error:
            raise StorageUnavailable(f"session {self.id} cannot write its log ({self.journal.write_error})")

    def interrupt(self, stream: str, by: str = "client") -> None:
        """Interrupt ``stream``: dropped if queued; if running, an interrupt request to the agent, escalated
        to SIGTERM/SIGKILL of its process group when not honoured in time. The stream ends ``cancelled``.

        Idempotent; a no-op for a stream that already ended. Raises :class:`StreamNotFound`.
        """
        if stream not in self.journal.stream_start and stream not in self.fold.streams:
            raise StreamNotFound(f"session {self.id} has no stream {stream!r}")
        if stream in self.journal.stream_end:
            return
        for queued in self._queue:
            if queued.id == stream:
                self._queue.remove(queued)
                self.journal.append(InterruptRequested(seq=0, ts=None, stream=stream, by=by))
                self._end_stream(stream, "cancelled", "interrupted before it started")
                return
        turn = self._active
        if turn is None or turn.id != stream or turn.interrupt_requested:
            return
        turn.interrupt_requested = True
        self._interrupts += 1
        request_id = f"req_{self._interrupts}_{os.urandom(4).hex()}"
        self.journal.append(InterruptRequested(seq=0, ts=None, stream=stream, by=by, request_id=request_id))
        if turn.dispatch_at is None or turn.slot is None:
            # The prompt has not reached the agent: nothing to tell it, just drop the turn.
            turn.cancel_reason = "interrupted before the prompt reached the agent"
            turn.scope.cancel()
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._deliver_interrupt, turn, turn.slot, request_id)

    async def stop(self, reason: str = "session stopped") -> None:
        """Stop the session: queued and running turns end ``cancelled`` with ``reason``, the process is
        closed (stdin EOF, then SIGTERM, then SIGKILL), ``session.stopped`` is appended.

        Returns when the session is down. Cancellation: the stop goes on in the session's own task.
        """
        if not self._stopping and not self._stopped:
            self._stopping = True
            self._stop_reason = reason
            self._end_reason = reason
            self.journal.append(SessionStopRequested(seq=0, ts=None, reason=reason))
            self._cancel_all(reason)
            self._wake_runner()
        await self._done.wait()

    # --- the session task -------------------------------------------------------------------------------

    async def run(
        self, *, prewarm: bool = False, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the session until it is stopped or cancelled. Start with ``nursery.start``.

        Cancellation (of the session, the server, the root nursery): every open stream gets its terminal
        entry (``cancelled``, "server shutting down"), then the process is closed and reaped, shielded and
        bounded by ``close_grace_s + 2 * kill_after_s`` plus a second.
        """
        with self._scope:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started()
                    if prewarm:
                        nursery.start_soon(self._prepare)
                    await self._runner()
                    # An orderly stop: close the process while its supervisor still logs its last output.
                    self._cancel_all(self._end_reason)
                    with trio.CancelScope(shield=True), trio.move_on_after(self._teardown_bound()):
                        await self._close_process()
                    nursery.cancel_scope.cancel()
            except Exception as exc:
                # A bug in the session itself: its turns fail (plainly, not "shutting down") and it takes
                # no more turns; the runtime logs the traceback and the other sessions go on.
                self._note_failure(exc)
                raise
            finally:
                # From this instant no new turn is accepted: nothing would run it.
                self._stopped = True
                # Terminal entries first (synchronous: cannot be interrupted), then the process.
                self._cancel_all(self._end_reason)
                with trio.CancelScope(shield=True), trio.move_on_after(self._teardown_bound()):
                    await self._close_process()
                if self._stopping and not self.journal.closed:
                    self.journal.append(SessionStopped(seq=0, ts=None, reason=self._stop_reason))
                self._stopped = True
                self._nursery = None
                self._done.set()

    def _note_failure(self, exc: BaseException) -> None:
        """Remember the first bug that broke this session (its streams will fail with it)."""
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        if self._failure is None:
            self._failure = f"internal error in the session: {type(exc).__name__}: {exc}"
            self._stopped = True  # no new turn: nothing would run it

    @contextlib.asynccontextmanager
    async def _failing_on_bug(self) -> AsyncIterator[None]:
        """Record a bug *before* the nursery's cancellation makes other tasks end their turns."""
        try:
            yield
        except Exception as exc:
            self._note_failure(exc)
            raise

    async def shutdown(self, reason: str = "server shutting down") -> None:
        """Cancel the session's task: open streams end ``cancelled`` with ``reason``, the process is closed
        and reaped; no ``session.stopped`` is logged (after a restart the session goes on). Returns when done.
        """
        if not self._done.is_set():
            if not self._stopping:
                self._end_reason = reason
            self._scope.cancel()
            await self._done.wait()

    def _teardown_bound(self) -> float:
        return self._config.close_grace_s + 2 * self._config.kill_after_s + _DRAIN_S + 1.0

    async def _close_process(self) -> None:
        slot = self._slot
        if slot is not None:
            await self._retire(slot, self._end_reason, graceful=True)

    def close_log(self) -> None:
        """Close the log (subscribers end after what they have). Called by the runtime when done with it."""
        self.journal.close()

    async def _runner(self) -> None:
        while True:
            while not self._queue:
                if self._stopping:
                    return
                self._queue_changed = trio.Event()
                await self._queue_changed.wait()
            if self._stopping:
                return
            turn = self._queue.popleft()
            if turn.id in self.journal.stream_end:
                continue
            await self._run_turn(turn)
            await self._after_turn(turn)

    def _wake_runner(self) -> None:
        self._queue_changed.set()

    def _cancel_all(self, reason: str) -> None:
        """End every queued and running stream (synchronous): ``cancelled``, or ``failed`` after a bug."""
        outcome: Outcome = "failed" if self._failure is not None else "cancelled"
        reason = self._failure or reason
        while self._queue:
            self._end_stream(self._queue.popleft().id, outcome, reason)
        turn = self._active
        if turn is not None:
            turn.cancel_reason = turn.cancel_reason or reason
            self._end_stream(turn.id, outcome, turn.cancel_reason)
            turn.scope.cancel()

    # --- one turn ---------------------------------------------------------------------------------------

    async def _run_turn(self, turn: _Turn) -> None:
        self._active = turn
        turn.started_at = trio.current_time()
        try:
            with turn.scope:
                slot = await self._ensure_process(turn)
                if slot is None:
                    return
                turn.slot = slot
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watchdog, turn)
                    await self._write_prompt(turn, slot)
                    await self.ended_event(turn.id).wait()
                    nursery.cancel_scope.cancel()
        finally:
            # Synchronous: the terminal entry is written even while this task is being cancelled.
            if turn.id not in self.journal.stream_end:
                if self._failure is not None:
                    self._end_stream(turn.id, "failed", self._failure)
                else:
                    self._end_stream(turn.id, "cancelled", turn.cancel_reason or self._end_reason)
            self._active = None

    async def _write_prompt(self, turn: _Turn, slot: _Slot) -> None:
        data = encode_stdin(user_input(turn.prompt))
        turn.dispatch_at = trio.current_time()
        turn.poke()
        async with slot.stdin_lock:
            try:
                await slot.proc.send(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The process is gone; its exit (process.exited) ends the stream. Wait for that.
                return
        slot.turns += 1
        if turn.id not in self.journal.stream_end:
            self.journal.append(
                PromptWritten(seq=0, ts=None, stream=turn.id, pid=slot.proc.pid, bytes=len(data))
            )

    async def _watchdog(self, turn: _Turn) -> None:
        """Layered timeouts: first event, idle gap, whole turn. The first to fire ends the stream."""
        cfg = self._config
        assert turn.started_at is not None
        while True:
            deadlines: list[tuple[float, TimeoutKind, float]] = []
            if cfg.turn_timeout_s is not None:
                deadlines.append((turn.started_at + cfg.turn_timeout_s, "turn", cfg.turn_timeout_s))
            if turn.dispatch_at is not None:
                if turn.first_event_at is None:
                    if cfg.first_event_timeout_s is not None:
                        at = turn.dispatch_at + cfg.first_event_timeout_s
                        deadlines.append((at, "first_event", cfg.first_event_timeout_s))
                elif cfg.idle_timeout_s is not None and turn.last_event_at is not None:
                    deadlines.append((turn.last_event_at + cfg.idle_timeout_s, "idle", cfg.idle_timeout_s))
            changed = turn.changed
            if not deadlines:
                await changed.wait()
                continue
            at, which, after = min(deadlines)
            if trio.current_time() >= at:
                self._time_out(turn, which, after)
                return
            with trio.move_on_at(at):
                await changed.wait()

    def _time_out(self, turn: _Turn, which: TimeoutKind, after: float) -> None:
        self.journal.append(Timeout(seq=0, ts=None, stream=turn.id, which=which, after_s=after))
        self._end_stream(turn.id, "timed_out", f"no {_WHAT[which]} within {after:g} s")
        if turn.slot is not None:
            turn.slot.doomed = f"replaced after a {which} timeout"

    async def _after_turn(self, turn: _Turn) -> None:
        """Make the turn's end durable, then keep, recycle or close its process."""
        await self.journal.flush()
        slot = turn.slot
        if slot is None or slot.exited.is_set():
            return
        view = self.fold.streams.get(turn.id)
        if view is not None and view.outcome == "completed":
            slot.successes += 1
        cfg = self._config
        if slot.doomed:
            await self._retire(slot, slot.doomed, graceful=False)
        elif cfg.pool_size == 0:
            await self._retire(slot, "one-shot mode: the turn is done", graceful=True)
        elif slot.turns >= slot.max_turns:
            await self._retire(slot, f"recycled after {slot.turns} turns", graceful=True)
        elif cfg.pool_max_age_s is not None and trio.current_time() - slot.spawned_at >= cfg.pool_max_age_s:
            await self._retire(slot, f"recycled after {cfg.pool_max_age_s:g} s", graceful=True)

    # --- interrupts -------------------------------------------------------------------------------------

    async def _deliver_interrupt(self, turn: _Turn, slot: _Slot, request_id: str) -> None:
        """Write the interrupt request out-of-band; escalate to signals when it is not honoured in time."""
        cfg = self._config
        ended = self.ended_event(turn.id)
        deadline = trio.current_time() + cfg.interrupt_grace_s
        with trio.move_on_at(deadline):
            # The stdin lock may be held by a prompt write stuck on a full pipe: bounded by the grace.
            async with slot.stdin_lock:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await slot.proc.send(encode_stdin(interrupt_request(request_id)))
            await ended.wait()
        if ended.is_set() or slot.exited.is_set():
            return
        slot.doomed = slot.retiring = f"interrupt not honoured within {cfg.interrupt_grace_s:g} s: SIGTERM"
        self.journal.append(InterruptEscalated(seq=0, ts=None, stream=turn.id, signal="SIGTERM"))
        self._end_stream(turn.id, "cancelled", f"interrupt not honoured within {cfg.interrupt_grace_s:g} s")
        slot.proc.signal(signal.SIGTERM)
        with trio.move_on_after(cfg.kill_after_s):
            await slot.exited.wait()
        if not slot.exited.is_set():
            slot.retiring += ", then SIGKILL"
            slot.proc.signal(signal.SIGKILL)

    # --- processes --------------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Get the first process ahead of the first turn (warm from the pool, or cold) — in the background."""
        await self._ensure_process(None)

    def _resume_id(self) -> str | None:
        cli = self.fold.cli_session_id
        if cli is None or cli == self.resume_failed:
            return None
        return str(cli)

    async def _ensure_process(self, turn: _Turn | None) -> _Slot | None:
        """The session's live process, spawning or checking one out when needed; None if that failed
        (the turn's stream is then ended ``failed`` or ``timed_out``)."""
        async with self._proc_lock:
            slot = self._slot
            if (
                slot is not None
                and not slot.exited.is_set()
                and slot.proc.returncode is None
                and not slot.doomed
            ):
                return slot
            if slot is not None:
                await self._retire(slot, slot.doomed or "replaced", graceful=False)
            stream = turn.id if turn is not None else None
            resume = self._resume_id()
            proc: AgentProcess | None = None
            warm = False
            if resume is None and self._pool is not None:
                proc = self._pool.checkout(self.agent, self.id)
                warm = proc is not None
            if proc is None:
                timeout = self._config.spawn_timeout_s
                try:
                    with trio.move_on_after(timeout if timeout is not None else float("inf")) as cs:
                        proc = await self._launcher.spawn(self.agent, resume=resume, session=self.id)
                except (AgentBinaryNotFound, SpawnError) as exc:
                    self.journal.append(ProcessSpawnFailed(seq=0, ts=None, stream=stream, error=str(exc)))
                    if stream is not None:
                        self._end_stream(stream, "failed", str(exc))
                    return None
                if proc is None:
                    assert cs.cancelled_caught and timeout is not None
                    if stream is not None:
                        self.journal.append(
                            Timeout(seq=0, ts=None, stream=stream, which="spawn", after_s=timeout)
                        )
                        self._end_stream(
                            stream, "timed_out", f"the agent process did not start within {timeout:g} s"
                        )
                    else:
                        error = f"the agent process did not start within {timeout:g} s"
                        self.journal.append(ProcessSpawnFailed(seq=0, ts=None, error=error))
                    return None
            slot = self._new_slot(proc, warm=warm, resume=resume)
            if turn is not None:
                # Attribute the process's output to the turn from its very first byte.
                turn.slot = slot
            self.journal.append(
                ProcessSpawned(
                    seq=0,
                    ts=None,
                    stream=stream,
                    pid=proc.pid,
                    argv=list(proc.argv),
                    warm=warm,
                    resume=resume,
                )
            )
            if isinstance(proc, PrimedProcess):
                # The pool's priming answers: logged first, as lines of no turn (not its first event).
                frames = slot.framer.feed(proc.take_preamble())
                if frames:
                    self.journal.append_frames(frames, None)
            assert self._nursery is not None
            self._nursery.start_soon(self._supervise, slot)
            return slot

    def _new_slot(self, proc: AgentProcess, *, warm: bool, resume: str | None) -> _Slot:
        cfg = self._config
        jitter = 1.0 + random.uniform(-cfg.pool_max_turns_jitter, cfg.pool_max_turns_jitter)
        slot = _Slot(
            proc=proc,
            warm=warm,
            resume=resume,
            spawned_at=trio.current_time(),
            max_turns=max(1, round(cfg.pool_max_turns * jitter)),
            framer=LineFramer(max_line=cfg.max_line),
            stderr=StderrCapture(
                max_line=cfg.stderr_max_line,
                rate=cfg.stderr_lines_per_s,
                burst=cfg.stderr_burst,
                tail=cfg.stderr_tail_lines,
            ),
        )
        self._slot = slot
        return slot

    async def _supervise(self, slot: _Slot) -> None:
        """Read the process's stdout and stderr into the log and watch for its exit."""
        slot.supervised = True
        try:
            async with self._failing_on_bug(), trio.open_nursery() as nursery:
                nursery.start_soon(self._read_stdout, slot)
                nursery.start_soon(self._read_stderr, slot)
                rc = await slot.proc.wait()
                # What the process wrote before dying is still in the pipes: let the readers take it.
                with trio.move_on_after(_DRAIN_S):
                    await slot.stdout_eof.wait()
                    await slot.stderr_eof.wait()
                nursery.cancel_scope.cancel()
            self._log_exit(slot, rc)
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await slot.proc.aclose()
        finally:
            slot.supervised = False

    async def _read_stdout(self, slot: _Slot) -> None:
        while True:
            chunk = await slot.proc.receive_stdout()
            if not chunk:
                break
            frames = slot.framer.feed(chunk)
            if frames:
                self._on_frames(slot, frames)
        slot.stdout_eof.set()

    async def _read_stderr(self, slot: _Slot) -> None:
        while True:
            chunk = await slot.proc.receive_stderr()
            if not chunk:
                break
            self._on_stderr(slot, slot.stderr.feed(chunk, trio.current_time()))
        slot.stderr_eof.set()

    def _turn_of(self, slot: _Slot) -> _Turn | None:
        """The open turn this process works on (output is attributed to it), if any."""
        turn = self._active
        if turn is not None and turn.slot is slot and turn.id not in self.journal.stream_end:
            return turn
        return None

    def _on_frames(self, slot: _Slot, frames: Sequence[Frame]) -> None:
        turn = self._turn_of(slot)
        appended = self.journal.append_frames(frames, turn.id if turn is not None else None)
        if turn is not None and appended:
            now = trio.current_time()
            if turn.first_event_at is None:
                turn.first_event_at = now
                turn.poke()
            turn.last_event_at = now

    def _on_stderr(self, slot: _Slot, lines: list[tuple[str, int]]) -> None:
        if not lines:
            return
        turn = self._turn_of(slot)
        stream = turn.id if turn is not None else None
        self.journal.extend(Stderr(seq=0, ts=None, stream=stream, text=text, dropped=n) for text, n in lines)

    def _log_exit(self, slot: _Slot, rc: int | None) -> None:
        """Append what is left of the output and ``process.exited``; end the turn it was working on."""
        if slot.exit_logged:
            return
        slot.exit_logged = True
        tail = slot.framer.eof()
        if tail:
            self._on_frames(slot, tail)
        self._on_stderr(slot, slot.stderr.eof(trio.current_time()))
        turn = self._turn_of(slot)
        expected = slot.retiring is not None
        # Unexpected: the reason is what the agent last said on stderr (the fold puts it after the status).
        reason = slot.retiring or " | ".join(list(slot.stderr.tail)[-3:])
        self.journal.append(
            ProcessExited(
                seq=0,
                ts=None,
                stream=turn.id if turn is not None else None,
                pid=slot.proc.pid,
                returncode=rc,
                expected=expected,
                reason=reason,
                stderr_tail=list(slot.stderr.tail),
            )
        )
        if turn is not None:
            # The fold ends the stream on this evidence; this is the safety net if it did not.
            tail_text = "; ".join(list(slot.stderr.tail)[-3:])
            why = f"the agent process exited mid-turn ({_describe_exit(rc)})" + (
                f": {tail_text}" if tail_text else ""
            )
            self._end_stream(turn.id, "failed", why, exit_status=rc)
        if self._slot is slot:
            self._slot = None
        slot.exited.set()

    async def _retire(self, slot: _Slot, reason: str, *, graceful: bool) -> None:
        """Close a process: stdin EOF (if ``graceful``) and ``close_grace_s``, then SIGTERM and
        ``kill_after_s``, then SIGKILL; wait for it and log its exit. Call shielded when it must finish."""
        cfg = self._config
        if slot.retiring is None:
            slot.retiring = reason
        if slot.proc.returncode is None and not slot.exited.is_set():
            if graceful:
                with trio.move_on_after(cfg.close_grace_s):
                    await slot.proc.close_stdin()
                    await slot.proc.wait()
            if slot.proc.returncode is None:
                slot.proc.signal(signal.SIGTERM)
                with trio.move_on_after(cfg.kill_after_s):
                    await slot.proc.wait()
            if slot.proc.returncode is None:
                slot.retiring += " (SIGKILL)"
                slot.proc.signal(signal.SIGKILL)
                with trio.move_on_after(cfg.kill_after_s):
                    await slot.proc.wait()
        if slot.supervised and not slot.exit_logged:
            # The supervisor is draining the pipes and will log the exit; give it a moment.
            with trio.move_on_after(_DRAIN_S + 0.5):
                await slot.exited.wait()
        if not slot.exit_logged:
            self._log_exit(slot, slot.proc.returncode)
            await slot.proc.aclose()
        if self._slot is slot:
            self._slot = None

    # --- log bookkeeping --------------------------------------------------------------------------------

    def _new_stream_id(self) -> str:
        n = len(self.journal.stream_start) + 1
        while f"t{n}" in self.journal.stream_start or f"t{n}" in self.fold.streams:
            n += 1
        return f"t{n}"

    def _end_stream(self, stream: str, outcome: Outcome, reason: str, exit_status: int | None = None) -> None:
        """Append ``stream.ended`` unless the stream already has one (synchronous)."""
        if stream in self.journal.stream_end or self.journal.closed:
            return
        view = self.fold.streams.get(stream)
        timing = view.timing if view is not None else None
        self.journal.append(
            StreamEnded(
                seq=0,
                ts=None,
                stream=stream,
                outcome=outcome,
                reason=reason,
                timing=timing,
                exit_status=exit_status,
            )
        )

    def _on_records(self, records: Sequence[Record]) -> None:
        for rec in records:
            entry = rec.entry
            if type(entry) is StreamEnded and entry.stream is not None:
                ev = self._ended_events.pop(entry.stream, None)
                if ev is not None:
                    ev.set()

    def _on_storage_failed(self, reason: str) -> None:
        """The log cannot be written (journal failure hook): nothing a turn does can be logged or sent.

        Every queued and running turn ends ``failed`` with the reason (its ``stream.ended`` waits in
        memory and is written first when the storage works again), and the agent process is retired —
        its output meanwhile is kept in memory within the journal's bound, never dropped silently.
        """
        why = f"storage failed: {reason}; the turn was ended because its output could not be written"
        while self._queue:
            self._end_stream(self._queue.popleft().id, "failed", why)
        turn = self._active
        if turn is not None:
            turn.cancel_reason = why
            self._end_stream(turn.id, "failed", why)
            turn.scope.cancel()
        slot = self._slot
        if slot is not None and not slot.exited.is_set() and not slot.doomed:
            slot.doomed = "retired: the log cannot be written (storage failed)"
            if (turn is None or turn.slot is not slot) and self._nursery is not None:
                # No turn will retire it afterwards: do it now (a running turn's _after_turn does it).
                self._nursery.start_soon(self._retire_doomed, slot)

    async def _retire_doomed(self, slot: _Slot) -> None:
        async with self._proc_lock:
            if slot.doomed:
                await self._retire(slot, slot.doomed, graceful=False)

    def _reason_for(self, view: StreamView, outcome: Outcome, reason: str) -> str:
        """Say plainly when a failure is a failed ``--resume`` (and start afresh next turn)."""
        turn = self._active
        slot = turn.slot if turn is not None and turn.id == view.id else None
        if outcome != "failed" or slot is None or slot.resume is None or slot.successes:
            return reason
        # The CLI says it on stdout (the result's errors, in the fold's reason) and on stderr.
        if _NO_CONVERSATION not in reason and not any(_NO_CONVERSATION in line for line in slot.stderr.tail):
            return reason
        self.resume_failed = slot.resume
        return (
            f"could not resume the agent's conversation {slot.resume} ({reason}); "
            "the next turn starts a new conversation"
        )


_WHAT = {
    "spawn": "agent process",
    "first_event": "first event from the agent",
    "idle": "event from the agent",
    "turn": "end of the turn",
}


def _describe_exit(rc: int | None) -> str:
    if rc is None:
        return "exit status unknown"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"
