"""The session's driver: trio tasks that carry out what its conductor decides.

Every decision about a turn — when it starts, what its process is, when it times out, how it ends, what
happens to the process afterwards — is made by :class:`engine.conductor.Conductor`, sans-IO. This module
only does the I/O around it, in one nursery per session (nothing of a session outlives it):

* **readers**: each stdout chunk is framed and appended (the conductor says which turn it belongs to);
  stderr is framed, rate-limited and appended; the process's exit is reported;
* **writer**: one task per process writes prompts and interrupt requests to stdin, in order;
* **spawner** and **retirer**: get a process (warm from the pool, or cold) and close one
  (:func:`engine.runtime.process.retire`: stdin EOF, SIGTERM, SIGKILL to the process group);
* **one timer**: sleeps until :attr:`Conductor.wake_at` and polls.

Each of them hands what happened to the conductor and feeds its answer back through :meth:`Session._feed`:
append the entries (one synchronous step), then carry out the actions. The time given to the conductor is
the journal's clock, and the entries of one step are stamped with it.

**The terminal entry is always written.** Appends are synchronous (:mod:`engine.runtime.journal`): when
the session's task is cancelled its ``finally`` asks the conductor to shut down, which ends every open
turn at once, before the process is touched; closing the process then runs shielded and time-bounded.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from turnstile.engine.conductor import (
    CancelSpawn,
    Conductor,
    Finish,
    Retire,
    Spawn,
    Step,
    Write,
)
from turnstile.engine.errors import AgentBinaryNotFound, SpawnError, StorageUnavailable
from turnstile.engine.errors import SessionStopped as SessionStoppedError
from turnstile.engine.fold import SessionFold, StreamView
from turnstile.engine.framing import Frame, LineFramer
from turnstile.engine.log import Record, SessionTitled, Stderr, StreamEnded
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig
from turnstile.engine.runtime.info import SessionInfo, TurnInfo
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.runtime.priming import PrimedProcess
from turnstile.engine.runtime.process import AgentProcess, Launcher, retire
from turnstile.engine.runtime.stderr import StderrCapture

if TYPE_CHECKING:
    from turnstile.engine.runtime.pool import Pool

__all__ = ["Session"]

# How long the supervisor lets the readers drain the pipes after the process exited.
_DRAIN_S = 1.0


@dataclass(eq=False)
class _Live:
    """The driver's side of the running process: its pipes' framers and its stdin queue."""

    proc: AgentProcess
    framer: LineFramer
    stderr: StderrCapture
    writes: deque[Write] = field(default_factory=deque)
    wrote: trio.Event = field(default_factory=trio.Event)
    exited: trio.Event = field(default_factory=trio.Event)
    exit_logged: bool = False
    stdout_eof: trio.Event = field(default_factory=trio.Event)
    stderr_eof: trio.Event = field(default_factory=trio.Event)


class Session:
    """One conversation with an agent. Created and run by :class:`engine.runtime.runtime.Runtime`.

    Read-only attributes are safe to use from anywhere (``id``, ``agent``, ``pool_key``, ``journal``,
    ``fold``, ``conductor``, :attr:`state`, :attr:`pid`); actions go through the runtime.
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
        clock: Callable[[], float] = time.time,
        to_trio: Callable[[float], float] | None = None,
    ) -> None:
        self.id = session_id
        self.agent = agent
        self.pool_key = agent.pool_key()
        self.journal = journal
        self.fold = fold
        self.created_at = created_at if created_at is not None else time.time()
        self.conductor = Conductor(fold, config.limits(), session_id)
        journal.folder = self.conductor
        self._config = config
        self._launcher = launcher
        self._pool = pool
        self._clock = clock
        self._to_trio = to_trio or (lambda t: trio.current_time() + (t - clock()))
        self._live: _Live | None = None
        self._nursery: trio.Nursery | None = None
        self._spawn_scope: trio.CancelScope | None = None
        self._retire_now: bool | None = None  # a Retire asked for while no nursery runs (teardown)
        self._timer_changed = trio.Event()
        self._finished = trio.Event()
        self._done = trio.Event()
        self._scope = trio.CancelScope()
        self._steps: deque[Step] = deque()
        self._feeding = False
        self._interrupts = 0
        self._ended_events: dict[str, trio.Event] = {}
        # Folded, not written: waiters must see a stream end even while the log cannot be written.
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
        live = self._live
        return live.proc.pid if live is not None and live.proc.returncode is None else None

    @property
    def stopped(self) -> bool:
        """Whether the session takes no more turns (stopped, stopping, shut down or broken)."""
        return not self.conductor.accepting

    @property
    def stop_requested(self) -> bool:
        """Whether someone asked this session to stop (as opposed to a server shutdown)."""
        return self.conductor.stop_reason is not None

    @property
    def resume_failed(self) -> str | None:
        """The CLI session id whose ``--resume`` failed (later turns start a new conversation)."""
        return self.conductor.resume_failed

    @property
    def queued(self) -> int:
        """Turns waiting behind the running one."""
        return self.conductor.waiting

    @property
    def active_stream(self) -> str | None:
        """The id of the running turn's stream."""
        return self.conductor.active_stream

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
            queued=self.queued,
            turns=turns,
            resume_failed=self.resume_failed,
            log_error=self.journal.write_error,
            title=self.fold.title,
            first_prompt=self.fold.first_prompt,
            last_activity=self.fold.now,
            restarted=self.fold.restarted,
        )

    def ended_event(self, stream: str) -> trio.Event:
        """An event set once ``stream`` has its ``stream.ended`` entry (already set if it has)."""
        ev = self._ended_events.get(stream)
        if ev is None:
            ev = self._ended_events[stream] = trio.Event()
            if stream in self.journal.stream_end:
                ev.set()
        return ev

    # --- commands (called by the runtime) --------------------------------------------------------------

    def submit(self, prompt: str | list[dict[str, Any]]) -> str:
        """Accept a turn: append ``turn.requested`` and queue it (the runtime makes it durable).

        Raises :class:`SessionStopped`, :class:`QueueFull`, or :class:`StorageUnavailable` when the log
        cannot be written (no turn is accepted then).
        """
        if not self.journal.retry():
            raise self._unwritable()
        now = self._clock()
        stream, step = self.conductor.submit(prompt, now)
        self._feed(step, now)
        if self.journal.failing:
            # Not written, so not taken: its request and its end (the failure ended it) wait in memory.
            raise self._unwritable()
        return stream

    def _unwritable(self) -> StorageUnavailable:
        return StorageUnavailable(
            f"session {self.id} cannot write its log ({self.journal.write_error}); no turn taken: "
            "retry when the storage works again (see /readyz)"
        )

    def set_title(self, title: str) -> None:
        """Log ``session.titled``. Raises :class:`SessionStopped` once the log is closed,
        :class:`StorageUnavailable` when it cannot be written."""
        if self.journal.closed:
            raise SessionStoppedError(
                f"session {self.id} is stopped and its log is closed, so its title cannot change"
            )
        self.journal.append(SessionTitled(seq=0, ts=None, title=title), self._clock())
        if self.journal.write_error:
            raise StorageUnavailable(f"session {self.id} cannot write its log ({self.journal.write_error})")

    def interrupt(self, stream: str, by: str = "client") -> None:
        """Interrupt ``stream`` (see :meth:`Conductor.interrupt`); the stream ends ``cancelled``.
        Idempotent; raises :class:`StreamNotFound`."""
        self._interrupts += 1
        request_id = f"req_{self._interrupts}_{os.urandom(4).hex()}"
        now = self._clock()
        self._feed(self.conductor.interrupt(stream, by, request_id, now), now)

    async def stop(self, reason: str = "session stopped") -> None:
        """Stop the session: its turns end ``cancelled`` with ``reason``, the process is closed (at once
        when a turn runs), ``session.stopped`` is appended. Returns when the session is down.
        Cancellation: the stop goes on in the session's own task."""
        now = self._clock()
        self._feed(self.conductor.stop(reason, now), now)
        await self._done.wait()

    async def shutdown(self, reason: str = "server shutting down") -> None:
        """The server goes down: open turns end ``cancelled`` with ``reason``, the process is closed and
        reaped; no ``session.stopped`` (after a restart the session goes on). Returns when done."""
        if not self._done.is_set():
            now = self._clock()
            self._feed(self.conductor.shutdown(reason, now), now)
            await self._done.wait()

    def mark_stopped(self) -> None:
        """For a session read back from a log that shows it stopped: no task will run it."""
        self.conductor.recover(stopped=True)
        self._done.set()

    def end_all(self, reason: str) -> None:
        """End every open stream now (synchronously): the runtime's last word for a session whose task
        is gone."""
        now = self._clock()
        self._feed(self.conductor.shutdown(reason, now), now)
        self._feed(Step(self.conductor.end_open("cancelled", reason, now), []), now)

    def close_log(self) -> None:
        """Close the log (subscribers end after what they have). Called by the runtime when done with it."""
        self.journal.close()

    # --- the session task -------------------------------------------------------------------------------

    async def run(
        self, *, prewarm: bool = False, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the session until it is stopped, shut down or cancelled. Start with ``nursery.start``.

        Cancellation (of the session, the server, the root nursery): every open stream gets its terminal
        entry (``cancelled``, "server shutting down"), then the process is closed and reaped, shielded and
        bounded by ``close_grace_s + 2 * kill_after_s`` plus a few seconds.
        """
        failure: str | None = None
        with self._scope:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        task_status.started()
                        nursery.start_soon(self._timer)
                        now = self._clock()
                        self._feed(self.conductor.start(prewarm=prewarm, now=now), now)
                        await self._finished.wait()
                    finally:
                        self._nursery = None  # closed to new tasks: what is left, the teardown does
                    nursery.cancel_scope.cancel()
            except Exception as exc:
                # A bug in the session itself: its turns fail (plainly, not "shutting down"), it takes no
                # more turns; the runtime logs the traceback and the other sessions go on.
                failure = _failure_text(exc)
                raise
            finally:
                self._nursery = None
                with trio.CancelScope(shield=True), trio.move_on_after(self._teardown_bound()):
                    await self._teardown(failure)
                self._done.set()

    async def _teardown(self, failure: str | None) -> None:
        now = self._clock()
        if failure is not None:
            self._feed(self.conductor.fail(failure, now), now)
        # Terminal entries first (synchronous: cannot be interrupted), then the process.
        self._feed(self.conductor.shutdown(failure or "server shutting down", now), now)
        live = self._live
        if live is not None:
            graceful = self._retire_now if self._retire_now is not None else False
            await self._retire(live, graceful, term_sent=False)
            if not live.exit_logged:
                self._log_exit(live, live.proc.returncode)
                await live.proc.aclose()
        now = self._clock()
        self._feed(self.conductor.poll(now), now)  # session.stopped, when a stop was asked for

    def _teardown_bound(self) -> float:
        return self._config.close_grace_s + 2 * self._config.kill_after_s + _DRAIN_S + 1.0

    async def _timer(self) -> None:
        """The one timer: poll the conductor when its next deadline comes."""
        while True:
            changed = self._timer_changed
            wake_at = self.conductor.wake_at
            if math.isinf(wake_at):
                await changed.wait()
                continue
            with trio.move_on_at(self._to_trio(wake_at)):
                await changed.wait()
                continue
            now = self._clock()
            self._feed(self.conductor.poll(now), now)

    # --- feeding the conductor ------------------------------------------------------------------------------

    def _feed(self, step: Step, now: float) -> None:
        """Carry out ``step`` (append, then act), then whatever the conductor decides next — synchronously.

        Re-entrant calls (an append that hits a storage failure runs a hook that feeds a step) queue their
        step behind the one being carried out.
        """
        if step:
            self._steps.append(step)
        if self._feeding:
            return
        self._feeding = True
        try:
            while True:
                while self._steps:
                    step = self._steps.popleft()
                    if step.entries and not self.journal.closed:
                        self.journal.extend(step.entries, now)
                    for action in step.actions:
                        self._act(action)
                step = self.conductor.poll(now)
                if not step:
                    break
                self._steps.append(step)
        finally:
            self._feeding = False
        self._timer_changed.set()
        self._timer_changed = trio.Event()

    def _act(self, action: Any) -> None:
        nursery = self._nursery
        live = self._live
        if type(action) is Write:
            if live is not None and live.proc.pid == action.pid:
                live.writes.append(action)
                live.wrote.set()
        elif type(action) is Retire:
            if live is not None and live.proc.pid == action.pid:
                if nursery is None:
                    self._retire_now = action.graceful  # the teardown does it, inline
                    return
                if not action.graceful:
                    # At once, in this step: a busy CLI ignores stdin EOF; nothing waits for a flush.
                    live.proc.signal(signal.SIGTERM)
                nursery.start_soon(self._retire, live, action.graceful)
        elif type(action) is Spawn:
            if nursery is not None:
                self._spawn_scope = trio.CancelScope()
                nursery.start_soon(self._spawn, action, self._spawn_scope)
        elif type(action) is CancelSpawn:
            if self._spawn_scope is not None:
                self._spawn_scope.cancel()
        elif type(action) is Finish:
            self._finished.set()

    # --- processes --------------------------------------------------------------------------------------

    async def _spawn(self, action: Spawn, scope: trio.CancelScope) -> None:
        """Get a process (warm from the pool, or cold) and report it."""
        # Let whoever started this (create_session, a turn's submit) finish its step first.
        await trio.lowlevel.checkpoint()
        proc: AgentProcess | None = None
        warm = False
        if action.warm and self._pool is not None:
            proc = self._pool.checkout(self.agent, self.id)
            warm = proc is not None
        if proc is None:
            with scope:
                try:
                    proc = await self._launcher.spawn(self.agent, resume=action.resume, session=self.id)
                except (AgentBinaryNotFound, SpawnError) as exc:
                    now = self._clock()
                    self._feed(self.conductor.spawn_failed(str(exc), now), now)
                    return
        if proc is None:
            return  # cancelled: the conductor abandoned this spawn (timeout, stop)
        cfg = self._config
        live = _Live(
            proc=proc,
            framer=LineFramer(max_line=cfg.max_line),
            stderr=StderrCapture(
                max_line=cfg.stderr_max_line,
                rate=cfg.stderr_lines_per_s,
                burst=cfg.stderr_burst,
                tail=cfg.stderr_tail_lines,
            ),
        )
        self._live = live
        now = self._clock()
        self._feed(
            self.conductor.spawned(proc.pid, list(proc.argv), warm=warm, resume=action.resume, now=now), now
        )
        if isinstance(proc, PrimedProcess):
            # The pool's priming answers: logged first, as lines of no turn (not its first event).
            frames = live.framer.feed(proc.take_preamble())
            if frames:
                self.journal.append_frames(frames, None, now)
        assert self._nursery is not None
        self._nursery.start_soon(self._supervise, live)

    async def _supervise(self, live: _Live) -> None:
        """Read the process's stdout and stderr into the log, write its stdin, and report its exit."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_stdout, live)
            nursery.start_soon(self._read_stderr, live)
            nursery.start_soon(self._write, live)
            rc = await live.proc.wait()
            # What the process wrote before dying is still in the pipes: let the readers take it.
            with trio.move_on_after(_DRAIN_S):
                await live.stdout_eof.wait()
                await live.stderr_eof.wait()
            nursery.cancel_scope.cancel()
        self._log_exit(live, rc)
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await live.proc.aclose()

    async def _read_stdout(self, live: _Live) -> None:
        while True:
            chunk = await live.proc.receive_stdout()
            if not chunk:
                break
            frames = live.framer.feed(chunk)
            if frames:
                self._on_frames(live, frames)
        live.stdout_eof.set()

    async def _read_stderr(self, live: _Live) -> None:
        while True:
            chunk = await live.proc.receive_stderr()
            if not chunk:
                break
            self._on_stderr(live, live.stderr.feed(chunk, trio.current_time()))
        live.stderr_eof.set()

    async def _write(self, live: _Live) -> None:
        """Write what the conductor asked for to stdin, in order (a prompt after its turn's predecessor
        is durable). A write to a process that is gone is reported; its exit ends the turn."""
        while True:
            while not live.writes:
                live.wrote = trio.Event()
                await live.wrote.wait()
            action = live.writes.popleft()
            if action.stream is not None:
                await self.journal.flush()
            try:
                await live.proc.send(action.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                now = self._clock()
                self._feed(self.conductor.stdin_broken(action.pid, now), now)
                continue
            if action.stream is not None:
                now = self._clock()
                self._feed(
                    self.conductor.prompt_written(action.stream, action.pid, len(action.data), now), now
                )

    def _on_frames(self, live: _Live, frames: Sequence[Frame]) -> None:
        now = self._clock()
        # Deadlines that passed before these lines came fire first, as a replay of the log sees them.
        self._feed(self.conductor.poll(now), now)
        stream = self.conductor.stream_for_output(live.proc.pid)
        self.journal.append_frames(frames, stream, now)
        self._feed(self.conductor.poll(now), now)

    def _on_stderr(self, live: _Live, lines: list[tuple[str, int]]) -> None:
        if not lines:
            return
        now = self._clock()
        stream = self.conductor.stream_for_output(live.proc.pid)
        self.journal.extend((Stderr(seq=0, ts=None, stream=stream, text=t, dropped=n) for t, n in lines), now)

    def _log_exit(self, live: _Live, rc: int | None) -> None:
        """Append what is left of the output, then report the exit (the conductor ends the turn)."""
        if live.exit_logged:
            return
        live.exit_logged = True
        tail = live.framer.eof()
        if tail:
            self._on_frames(live, tail)
        self._on_stderr(live, live.stderr.eof(trio.current_time()))
        if self._live is live:
            self._live = None
        now = self._clock()
        self._feed(self.conductor.exited(live.proc.pid, rc, list(live.stderr.tail), now), now)
        live.exited.set()

    async def _retire(self, live: _Live, graceful: bool, *, term_sent: bool = True) -> None:
        """Close a process (:func:`retire`): gracefully once the log durably holds what came before (a
        recycled process's last turn); else SIGTERM was sent already. Its supervisor logs the exit."""
        if graceful:
            await self.journal.flush()
        pid = live.proc.pid

        def signalled(sig: str) -> None:
            now = self._clock()
            self._feed(self.conductor.signalled(pid, sig, now), now)

        cfg = self._config
        await retire(
            live.proc,
            grace=cfg.close_grace_s if graceful else None,
            kill_after=cfg.kill_after_s,
            on_signal=signalled,
            term_sent=term_sent and not graceful,
        )
        if self._nursery is not None and not live.exit_logged:
            # The supervisor is draining the pipes and will log the exit; give it a moment.
            with trio.move_on_after(_DRAIN_S + 0.5):
                await live.exited.wait()

    # --- journal hooks ----------------------------------------------------------------------------------

    def _on_records(self, records: Sequence[Record]) -> None:
        for rec in records:
            entry = rec.entry
            if type(entry) is StreamEnded and entry.stream is not None:
                ev = self._ended_events.pop(entry.stream, None)
                if ev is not None:
                    ev.set()

    def _on_storage_failed(self, reason: str) -> None:
        """The log cannot be written (journal failure hook): the turns end, the process is retired."""
        now = self._clock()
        self._feed(self.conductor.storage_failed(reason, now), now)


def _failure_text(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"internal error in the session: {type(exc).__name__}: {exc}"
