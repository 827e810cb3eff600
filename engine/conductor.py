"""The session conductor: the one sans-IO place that decides a turn's life.

A session is driven by :class:`Conductor` the way an h11 ``Connection`` drives HTTP: it does no I/O, reads
no clock and imports no trio. The runtime (:mod:`engine.runtime.session`) feeds it what happened and does
what it says. Everything it knows is the session's fold (:class:`engine.fold.SessionFold`: the log folded)
plus a plain record of the agent process and of the turn being served.

What comes in, what it decides, what goes out::

    in (command / observation, with "now")   decides                               out: entries; actions
    submit(prompt)                            accept or refuse (stopped, queue full) turn.requested
    interrupt(stream)                         drop a waiting turn, or ask the CLI    interrupt.requested,
                                                                                     [stream.ended]; Write
    stop(reason) / shutdown(reason)           end every turn; close the process at   session.stop_requested
                                              once when a turn runs (SIGTERM), else  / session.shutdown;
                                              by stdin EOF first                     Retire; later Finish
    spawned / spawn_failed                    the turn's process is here (or not)    process.spawned /
                                                                                     process.spawn_failed
    prompt_written / stdin_broken             the prompt reached the CLI             prompt.written
    output appended (poll)                    (the fold moved; deadlines move)       —
    exited(rc, stderr)                        expected or a crash; the turn's end    process.exited
    time is now T (poll)                      a timeout, a stall notice, escalation  timeout, stream.stalled,
                                                                                     interrupt.escalated;
                                                                                     Retire, CancelSpawn
    (a turn ended)                            keep, recycle or close its process;    Retire; Spawn / Write
                                              serve the next turn (spawn, --resume)  (the next prompt)

The terminal entry of a stream follows from evidence: the fold ends a stream on a ``result``, a process
exit, a timeout, an escalated interrupt, a stop or a shutdown, and :meth:`Conductor.settle` (the journal
calls it after every batch) writes its ``stream.ended`` with the reason — saying so plainly when a
``--resume`` failed. A few ends have no evidence entry (a turn interrupted before it reached the CLI, a
storage failure, a bug): those ``stream.ended`` entries carry the timing at their own time, so a replay of
the log gives every turn the same timing the live session wrote.

Every call takes ``now`` (the session's clock, the one that stamps its log entries) and returns a
:class:`Step`: entries to append (in order) and :data:`Action` values to carry out. After appending, the
driver calls :meth:`Conductor.poll` until it returns an empty step; :attr:`Conductor.wake_at` says when
to poll again if nothing happens. ``tests/engine/test_conductor_replay.py`` feeds recorded logs through a
conductor and checks that it asks for the entries the live session wrote.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeAlias

import msgspec

from turnstile.engine.errors import QueueFull, StreamNotFound
from turnstile.engine.errors import SessionStopped as SessionStoppedError
from turnstile.engine.fold import SessionFold, StreamView
from turnstile.engine.log import (
    Entry,
    InterruptEscalated,
    InterruptRequested,
    Outcome,
    ProcessExited,
    ProcessSpawned,
    ProcessSpawnFailed,
    PromptWritten,
    SessionRecovered,
    SessionShutdown,
    SessionStopped,
    SessionStopRequested,
    Stderr,
    StreamEnded,
    StreamStalled,
    Timeout,
    TimeoutKind,
    TurnRequested,
)
from turnstile.engine.protocol import Message, encode_stdin, interrupt_request, user_input

__all__ = [
    "Action",
    "CancelSpawn",
    "Conductor",
    "Finish",
    "Limits",
    "ProcessRecord",
    "Retire",
    "Spawn",
    "Step",
    "Write",
]

NO_CONVERSATION: Final = "No conversation found"
"""What the CLI says when ``--resume`` names a conversation it does not have."""

_INF: Final = float("inf")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The timeouts and policies the conductor applies (``RuntimeConfig.limits()`` builds them)."""

    interrupt_grace_s: float = 3.0
    spawn_timeout_s: float | None = 30.0
    first_event_timeout_s: float | None = 60.0
    idle_timeout_s: float | None = 600.0
    stall_notice_s: float | None = 30.0
    stall_timeout_s: float | None = 180.0
    turn_timeout_s: float | None = 3600.0
    max_queued_turns: int = 8
    one_shot: bool = False
    warm: bool = True
    max_turns: int = 50
    max_turns_jitter: float = 0.2
    max_age_s: float | None = 3600.0


# --- actions: what the driver does -------------------------------------------------------------------------


class Spawn(NamedTuple):
    """Get a process: a warm one from the pool when ``warm`` (and there is one), else spawn one cold with
    ``--resume resume`` when given. Report :meth:`Conductor.spawned` or :meth:`Conductor.spawn_failed`."""

    resume: str | None
    warm: bool


class CancelSpawn(NamedTuple):
    """Abandon the spawn in flight (it timed out, or the session is going down): report nothing."""


class Write(NamedTuple):
    """Write ``data`` to the stdin of process ``pid``, after what is already queued for it. For a prompt
    (``stream`` set) report :meth:`Conductor.prompt_written` once written (or :meth:`stdin_broken`)."""

    pid: int
    data: bytes
    stream: str | None = None


class Retire(NamedTuple):
    """Close process ``pid``: stdin EOF and the close grace first when ``graceful`` (an idle CLI exits at
    EOF; a busy one ignores it), then SIGTERM to its group, then SIGKILL. Report each signal sent
    (:meth:`Conductor.signalled`) and the exit (:meth:`Conductor.exited`)."""

    pid: int
    graceful: bool


class Finish(NamedTuple):
    """The session is stopped or shut down and has no process: the driver's task may end."""


Action: TypeAlias = Spawn | CancelSpawn | Write | Retire | Finish


class Step(NamedTuple):
    """Entries to append (seq and ts are the journal's; ts is the ``now`` of the call) and actions."""

    entries: list[Entry]
    actions: list[Action]

    def __bool__(self) -> bool:
        return bool(self.entries or self.actions)


def _step() -> Step:
    return Step([], [])


# --- the plain record --------------------------------------------------------------------------------------


@dataclass(eq=False)
class ProcessRecord:
    """The session's agent process as the conductor knows it."""

    pid: int
    warm: bool
    resume: str | None
    spawned_at: float
    max_turns: int
    turns: int = 0
    successes: int = 0
    #: Why we decided to end it (the reason of its ``process.exited``); None while it may serve.
    retiring: str | None = None
    #: Why it must not serve another turn (timed out, ignored an interrupt, storage failed).
    doomed: str | None = None
    exited: bool = False
    returncode: int | None = None
    stderr: deque[str] = field(default_factory=lambda: deque(maxlen=20))


@dataclass(eq=False)
class _Turn:
    """The turn being served: taken from the queue until its stream ended and its process was decided."""

    stream: str
    taken_at: float
    process: ProcessRecord | None = None
    prompt_at: float | None = None
    escalated: bool = False


@dataclass(eq=False)
class _Spawning:
    started_at: float
    resume: str | None


# --- the conductor -----------------------------------------------------------------------------------------


class Conductor:
    """Decides a session's entries and actions from its fold and a plain record (module docstring).

    It is also the journal's folder (:meth:`apply`, :meth:`settle`): every entry of the log goes through it.
    Commands raise :class:`engine.errors.TurnstileError` subclasses for what the caller must hear about
    (a stopped session, a full queue, an unknown stream); everything else is data.
    """

    def __init__(self, fold: SessionFold, limits: Limits | None = None, session_id: str = "") -> None:
        self.fold = fold
        self.limits = limits if limits is not None else Limits()
        self.session_id = session_id
        self.process: ProcessRecord | None = None
        self.turn: _Turn | None = None
        self.spawning: _Spawning | None = None
        #: The CLI session id whose ``--resume`` failed; later turns start a new conversation.
        self.resume_failed: str | None = None
        self.stop_reason: str | None = None
        self.closing: str | None = None
        self.failure: str | None = None
        self.finished = False
        self._prompts: dict[str, str | list[dict[str, Any]]] = {}
        self._fold_apply = fold.apply
        self._first_of: str | None = None
        self._dirty = True
        self._wake_at = -_INF

    # --- the journal's folder ---------------------------------------------------------------------------

    def apply(self, entry: Entry, view: Message | None) -> object:
        """Fold one entry (the journal calls this for every entry it appends)."""
        changes = self._fold_apply(entry, view)
        if changes:
            self._dirty = True
        elif entry.stream is not None and entry.stream == self._first_of:
            # The served turn's first line: its first-event deadline gives way to the idle and stall
            # ones, which may come sooner (the only deadline that moves earlier without a state change).
            self._first_of = None
            self._dirty = True
        if type(entry) is Stderr and entry.text and self.process is not None:
            self.process.stderr.append(entry.text)
        return changes

    def settle(self) -> list[Entry]:
        """A ``stream.ended`` for every stream the evidence ended (outcome, reason, timing from the fold)."""
        out: list[Entry] = []
        for view in self.fold.unended():
            if view.ended:
                continue
            outcome: Outcome = view.outcome or "failed"
            out.append(
                StreamEnded(
                    seq=0,
                    ts=None,
                    stream=view.id,
                    outcome=outcome,
                    reason=self._reason_for(view, outcome, view.reason or ""),
                    timing=view.timing,
                    exit_status=view.exit_status,
                )
            )
        return out

    # --- what the driver reads -----------------------------------------------------------------------------

    @property
    def active_stream(self) -> str | None:
        """The stream of the turn being served (taken from the queue, not ended)."""
        t = self.turn
        if t is None:
            return None
        view = self.fold.streams.get(t.stream)
        return t.stream if view is not None and not view.terminal else None

    @property
    def waiting(self) -> int:
        """Turns waiting behind the one being served."""
        current = self.active_stream
        return sum(1 for v in self.fold.queued() if v.id != current)

    @property
    def accepting(self) -> bool:
        """Whether a new turn would be taken."""
        return not (self.finished or self.stop_reason or self.closing or self.failure)

    @property
    def wake_at(self) -> float:
        """When to :meth:`poll` if nothing else happens first (``inf``: never)."""
        return self._wake_at

    def stream_for_output(self, pid: int) -> str | None:
        """The stream the output of process ``pid`` belongs to: the served turn's, while it is open."""
        t = self.turn
        if t is None or t.process is None or t.process.pid != pid:
            return None
        view = self.fold.streams.get(t.stream)
        return t.stream if view is not None and not view.terminal else None

    # --- commands ------------------------------------------------------------------------------------------

    def submit(self, prompt: str | list[dict[str, Any]], now: float) -> tuple[str, Step]:
        """Accept a turn: its stream id and ``turn.requested``. Raises :class:`SessionStopped`,
        :class:`QueueFull`."""
        if not self.accepting:
            raise SessionStoppedError(
                f"session {self.session_id} is stopped; create a new session for more turns"
            )
        waiting = self.waiting
        if (waiting or self.active_stream is not None) and waiting >= self.limits.max_queued_turns:
            raise QueueFull(
                f"session {self.session_id} already has {waiting} turns queued "
                f"(max_queued_turns={self.limits.max_queued_turns}); wait for one to finish, then retry"
            )
        stream = self._new_stream_id()
        self._prompts[stream] = prompt
        self._dirty = True
        return stream, Step([TurnRequested(seq=0, ts=None, stream=stream, prompt=prompt)], [])

    def interrupt(self, stream: str, by: str, request_id: str, now: float) -> Step:
        """Interrupt ``stream``: a waiting turn ends ``cancelled`` at once; a running one gets an interrupt
        request on stdin and, unanswered after ``interrupt_grace_s``, SIGTERM. Idempotent; a no-op for a
        stream that ended. Raises :class:`StreamNotFound`."""
        view = self.fold.streams.get(stream)
        if view is None:
            raise StreamNotFound(f"session {self.session_id} has no stream {stream!r}")
        if view.terminal or view.interrupt_by is not None:
            return _step()
        asked = InterruptRequested(seq=0, ts=None, stream=stream, by=by, request_id=request_id)
        self._dirty = True
        t = self.turn
        if t is None or t.stream != stream:
            return Step([asked, self._end(view, "cancelled", "interrupted before it started", now)], [])
        if t.prompt_at is None or t.process is None:
            why = "interrupted before the prompt reached the agent"
            return Step([asked, self._end(view, "cancelled", why, now)], [])
        data = encode_stdin(interrupt_request(request_id))
        return Step([asked], [Write(t.process.pid, data)])

    def stop(self, reason: str, now: float) -> Step:
        """Stop the session: every turn ends ``cancelled`` with ``reason``; the process is closed (at once
        when a turn runs); ``session.stopped`` follows its exit."""
        if self.stop_reason is not None or self.finished:
            return _step()
        self.stop_reason = reason
        self._dirty = True
        return Step([SessionStopRequested(seq=0, ts=None, reason=reason)], self._close(reason))

    def shutdown(self, reason: str, now: float) -> Step:
        """The server shuts down: every turn ends ``cancelled`` with ``reason`` (``session.shutdown``) and
        the process is closed; the session is not stopped (after a restart it goes on)."""
        if self.finished or self.closing is not None:
            return _step()
        self.closing = reason
        self._dirty = True
        entries: list[Entry] = []
        alive = self.process is not None or self.spawning is not None
        if self.stop_reason is None and (self.fold.open_streams or alive):
            entries.append(SessionShutdown(seq=0, ts=None, reason=reason))
        return Step(entries, self._close(reason))

    def fail(self, failure: str, now: float) -> Step:
        """A bug broke the session's task: its turns end ``failed`` with ``failure``; no more turns."""
        if self.failure is None:
            self.failure = failure
        self._dirty = True
        return Step(self.end_open("failed", self.failure, now), [])

    def storage_failed(self, reason: str, now: float) -> Step:
        """The log cannot be written: every turn ends ``failed`` (its end waits in memory with the rest)
        and the process is retired (nothing it prints could be logged)."""
        why = f"storage failed: {reason}; the turn was ended because its output could not be written"
        self._dirty = True
        actions: list[Action] = []
        proc = self.process
        if proc is not None and not proc.exited and proc.retiring is None:
            proc.doomed = proc.retiring = "retired: the log cannot be written (storage failed)"
            actions.append(Retire(proc.pid, graceful=False))
        return Step(self.end_open("failed", why, now), actions)

    def recover(self, *, stopped: bool) -> Step:
        """A log read back after a restart: ``session.recovered`` (the fold ends what was open, "server
        restarted") for a session that was not stopped. Then :meth:`end_unended`."""
        self._dirty = True
        if stopped:
            self.finished = True
            return _step()
        open_streams = self.fold.open_streams
        # Also those an earlier recovery or the evidence ended but whose terminal entry was lost.
        lost = [v.id for v in self.fold.unended() if v.id not in open_streams]
        return Step([SessionRecovered(seq=0, ts=None, ended=[*open_streams, *lost])], [])

    def end_unended(self, reason: str, now: float) -> Step:
        """A ``stream.ended`` (``failed``, ``reason``) for every stream the log has none for."""
        out: list[Entry] = []
        for view in self.fold.streams.values():
            if not view.ended:
                outcome: Outcome = view.outcome or "failed"
                out.append(self._end(view, outcome, view.reason or reason, now))
        return Step(out, [])

    def end_open(self, outcome: Outcome, reason: str, now: float) -> list[Entry]:
        """A ``stream.ended`` for every open stream (none of them has evidence of its end)."""
        return [self._end(self.fold.streams[s], outcome, reason, now) for s in self.fold.open_streams]

    def start(self, *, prewarm: bool, now: float) -> Step:
        """The session's task starts: with ``prewarm``, get its first process ahead of the first turn."""
        self._dirty = True
        if prewarm and self.process is None and self.spawning is None and self.accepting:
            return Step([], [self._spawn(now)])
        return _step()

    # --- observations ---------------------------------------------------------------------------------

    def spawned(self, pid: int, argv: list[str], *, warm: bool, resume: str | None, now: float) -> Step:
        """A process is up (spawned, or checked out warm from the pool)."""
        self.spawning = None
        self._dirty = True
        lim = self.limits
        # Jitter from the ids, not a random source: a replay decides the same recycling.
        spread = zlib.crc32(f"{self.session_id}:{pid}".encode()) / 0xFFFFFFFF * 2 - 1
        max_turns = max(1, round(lim.max_turns * (1 + spread * lim.max_turns_jitter)))
        proc = ProcessRecord(pid=pid, warm=warm, resume=resume, spawned_at=now, max_turns=max_turns)
        self.process = proc
        t = self.turn
        stream = None
        view = self.fold.streams.get(t.stream) if t is not None else None
        if t is not None and t.process is None and view is not None and not view.terminal:
            t.process = proc  # its output belongs to the turn from the first byte
            stream = t.stream
        entry = ProcessSpawned(seq=0, ts=None, stream=stream, pid=pid, argv=argv, warm=warm, resume=resume)
        return Step([entry], [])

    def spawn_failed(self, error: str, now: float) -> Step:
        """The process could not be started: the turns waiting for it fail (the fold ends them)."""
        self.spawning = None
        self._dirty = True
        stream = self.active_stream
        return Step([ProcessSpawnFailed(seq=0, ts=None, stream=stream, error=error)], [])

    def prompt_written(self, stream: str, pid: int, nbytes: int, now: float) -> Step:
        """The prompt of ``stream`` is on the CLI's stdin."""
        proc = self.process
        if proc is not None and proc.pid == pid:
            proc.turns += 1
        view = self.fold.streams.get(stream)
        if view is None or view.ended:
            return _step()
        return Step([PromptWritten(seq=0, ts=None, stream=stream, pid=pid, bytes=nbytes)], [])

    def stdin_broken(self, pid: int, now: float) -> Step:
        """A write to ``pid`` failed: the process is going; its exit ends the turn."""
        return _step()

    def signalled(self, pid: int, signal: str, now: float) -> Step:
        """The driver sent ``signal`` (``SIGTERM``, ``SIGKILL``) while retiring ``pid``."""
        proc = self.process
        if proc is not None and proc.pid == pid and proc.retiring is not None and signal == "SIGKILL":
            proc.retiring += " (SIGKILL)"
        return _step()

    def exited(self, pid: int, returncode: int | None, stderr_tail: list[str], now: float) -> Step:
        """Process ``pid`` ended: ``process.exited`` (expected when we retired it)."""
        proc = self.process
        if proc is None or proc.pid != pid:
            proc = ProcessRecord(pid=pid, warm=False, resume=None, spawned_at=now, max_turns=1)
        proc.exited = True
        proc.returncode = returncode
        proc.stderr.extend(stderr_tail)
        if self.process is proc:
            self.process = None
        self._dirty = True
        t = self.turn
        stream = t.stream if t is not None and t.process is proc else None
        if stream is not None and self.fold.streams[stream].terminal:
            stream = None
        reason = proc.retiring or " | ".join(stderr_tail[-3:])
        entry = ProcessExited(
            seq=0,
            ts=None,
            stream=stream,
            pid=pid,
            returncode=returncode,
            expected=proc.retiring is not None,
            reason=reason,
            stderr_tail=list(stderr_tail),
        )
        return Step([entry], [])

    # --- time and consequences -------------------------------------------------------------------------

    def poll(self, now: float) -> Step:
        """What must happen now: a deadline that passed, the end of a turn, the next turn. Call after
        every step was carried out, until it returns an empty step (cheap when nothing changed)."""
        if not self._dirty and now < self._wake_at:
            return _EMPTY
        entries: list[Entry] = []
        actions: list[Action] = []
        self._deadlines(now, entries, actions)
        if not entries:
            self._advance(now, entries, actions)
        if entries or actions:
            self._dirty = True  # what they change is seen on the next poll
            return Step(entries, actions)
        self._dirty = False
        self._wake_at = self._next_deadline()
        return _EMPTY

    def _deadlines(self, now: float, entries: list[Entry], actions: list[Action]) -> None:
        due = [d for d in self._pending_deadlines() if d[0] <= now]
        if not due:
            return
        _at, what, after = min(due, key=lambda d: d[0])
        t = self.turn
        proc = self.process
        lim = self.limits
        if what == "spawn":
            self.spawning = None
            actions.append(CancelSpawn())
            if t is not None and t.process is None and not self.fold.streams[t.stream].terminal:
                entries.append(Timeout(seq=0, ts=None, stream=t.stream, which="spawn", after_s=after))
            else:
                error = f"the agent process did not start within {after:g} s"
                entries.append(ProcessSpawnFailed(seq=0, ts=None, error=error))
            return
        assert t is not None
        if what == "stall_notice":
            view = self.fold.streams[t.stream]
            since = self._progress_since(t, view)
            entries.append(StreamStalled(seq=0, ts=None, stream=t.stream, after_s=after, since=since))
            return
        if what == "escalate":
            t.escalated = True
            entries.append(InterruptEscalated(seq=0, ts=None, stream=t.stream, signal="SIGTERM"))
            if t.process is not None and not t.process.exited:
                why = f"interrupt not honoured within {lim.interrupt_grace_s:g} s: SIGTERM"
                t.process.doomed = why
                if t.process.retiring is None:
                    t.process.retiring = why
                    actions.append(Retire(t.process.pid, graceful=False))
            return
        which: TimeoutKind = what  # type: ignore[assignment]
        entries.append(Timeout(seq=0, ts=None, stream=t.stream, which=which, after_s=after))
        target = t.process if t.process is not None else proc
        if target is not None and not target.exited and target.doomed is None:
            target.doomed = f"replaced after a {which} timeout"

    def _pending_deadlines(self) -> list[tuple[float, str, float]]:
        out: list[tuple[float, str, float]] = []
        lim = self.limits
        sp = self.spawning
        if sp is not None and lim.spawn_timeout_s is not None:
            out.append((sp.started_at + lim.spawn_timeout_s, "spawn", lim.spawn_timeout_s))
        t = self.turn
        if t is None:
            return out
        view = self.fold.streams.get(t.stream)
        if view is None or view.terminal:
            return out
        if lim.turn_timeout_s is not None:
            out.append((t.taken_at + lim.turn_timeout_s, "turn", lim.turn_timeout_s))
        if t.prompt_at is None:
            return out
        if (
            view.interrupt_at is not None
            and not t.escalated
            and t.process is not None
            and not t.process.exited
        ):
            out.append((view.interrupt_at + lim.interrupt_grace_s, "escalate", lim.interrupt_grace_s))
        first, last = view.first_line_at, view.last_line_at
        if first is None or last is None:
            if lim.first_event_timeout_s is not None:
                deadline = t.prompt_at + lim.first_event_timeout_s
                out.append((deadline, "first_event", lim.first_event_timeout_s))
            return out
        if lim.idle_timeout_s is not None:
            out.append((last + lim.idle_timeout_s, "idle", lim.idle_timeout_s))
        if (
            view.state != "tool_running"
        ):  # a tool may run silently for minutes; the model API is not waited on
            since = self._progress_since(t, view)
            if lim.stall_notice_s is not None and view.stall_since != since:
                out.append((since + lim.stall_notice_s, "stall_notice", lim.stall_notice_s))
            if lim.stall_timeout_s is not None:
                out.append((since + lim.stall_timeout_s, "stall", lim.stall_timeout_s))
        return out

    @staticmethod
    def _progress_since(t: _Turn, view: StreamView) -> float:
        assert t.prompt_at is not None
        progress = view.last_progress_at
        return t.prompt_at if progress is None or progress < t.prompt_at else progress

    def _next_deadline(self) -> float:
        deadlines = self._pending_deadlines()
        return min(d[0] for d in deadlines) if deadlines else _INF

    def _advance(self, now: float, entries: list[Entry], actions: list[Action]) -> None:
        t = self.turn
        if t is not None and self.fold.streams[t.stream].terminal:
            self._after_turn(t, now, actions)
            self.turn = None
            if actions:
                return
        proc = self.process
        if proc is not None and not proc.exited and proc.doomed and proc.retiring is None:
            proc.retiring = proc.doomed
            actions.append(Retire(proc.pid, graceful=False))
            return
        if not self.accepting:
            self._wind_down(entries, actions)
            return
        if self.turn is None:
            waiting = self.fold.queued()
            if not waiting:
                return
            self.turn = _Turn(waiting[0].id, taken_at=now)
        self._serve(self.turn, now, actions)

    def _after_turn(self, t: _Turn, now: float, actions: list[Action]) -> None:
        """Keep, recycle or close the process that served ``t``."""
        self._prompts.pop(t.stream, None)
        proc = t.process
        if proc is None or proc.exited or proc is not self.process:
            return
        view = self.fold.streams[t.stream]
        if view.outcome == "completed":
            proc.successes += 1
        if proc.retiring is not None:
            return
        lim = self.limits
        graceful = True
        if proc.doomed:
            reason, graceful = proc.doomed, False
        elif lim.one_shot:
            reason = "one-shot mode: the turn is done"
        elif proc.turns >= proc.max_turns:
            reason = f"recycled after {proc.turns} turns"
        elif lim.max_age_s is not None and now - proc.spawned_at >= lim.max_age_s:
            reason = f"recycled after {lim.max_age_s:g} s"
        else:
            return
        proc.retiring = reason
        actions.append(Retire(proc.pid, graceful=graceful))

    def _serve(self, t: _Turn, now: float, actions: list[Action]) -> None:
        """Bring the turn's prompt to a process: write it, or get a process first."""
        if t.prompt_at is not None or self.fold.streams[t.stream].terminal:
            return
        proc = self.process
        if proc is not None:
            if proc.exited or proc.retiring is not None:
                return  # the old process is on its way out; the next one comes after its exit
            t.process = proc
            t.prompt_at = now
            self._first_of = t.stream
            prompt = self._prompts.get(t.stream, "")
            actions.append(Write(proc.pid, encode_stdin(user_input(prompt)), t.stream))
            return
        if self.spawning is None:
            actions.append(self._spawn(now))

    def _spawn(self, now: float) -> Spawn:
        cli = self.fold.cli_session_id
        resume = None if cli is None or cli == self.resume_failed else str(cli)
        self.spawning = _Spawning(started_at=now, resume=resume)
        return Spawn(resume=resume, warm=resume is None and self.limits.warm)

    def _close(self, reason: str) -> list[Action]:
        """Close the process for good (stop, shutdown): at once (SIGTERM) when a turn runs."""
        actions: list[Action] = []
        if self.spawning is not None:
            self.spawning = None
            actions.append(CancelSpawn())
        proc = self.process
        if proc is not None and not proc.exited and proc.retiring is None:
            proc.retiring = reason
            busy = self.fold.session_state in ("busy", "interrupting")
            actions.append(Retire(proc.pid, graceful=not busy))
        return actions

    def _wind_down(self, entries: list[Entry], actions: list[Action]) -> None:
        if self.finished:
            return
        proc = self.process
        if proc is not None and not proc.exited:
            if proc.retiring is None:
                actions.extend(self._close(self.stop_reason or self.closing or self.failure or ""))
            return
        if self.spawning is not None:
            return
        if self.stop_reason is not None and self.fold.session_state != "stopped":
            entries.append(SessionStopped(seq=0, ts=None, reason=self.stop_reason))
            return
        self.finished = True
        actions.append(Finish())

    # --- helpers ------------------------------------------------------------------------------------------

    def _new_stream_id(self) -> str:
        streams = self.fold.streams
        n = len(streams) + 1
        while f"t{n}" in streams:
            n += 1
        return f"t{n}"

    def _end(self, view: StreamView, outcome: Outcome, reason: str, now: float) -> StreamEnded:
        """A ``stream.ended`` with no evidence entry before it: its timing is taken at ``now``, the time
        the entry is stamped with, so that a replay of the log gives the same timing."""
        return StreamEnded(
            seq=0,
            ts=None,
            stream=view.id,
            outcome=outcome,
            reason=reason,
            timing=view.timing_at(now),
            exit_status=view.exit_status,
        )

    def _reason_for(self, view: StreamView, outcome: Outcome, reason: str) -> str:
        """Say plainly when a failure is a failed ``--resume`` (and start afresh next turn)."""
        t = self.turn
        proc = t.process if t is not None and t.stream == view.id else None
        if outcome != "failed" or proc is None or proc.resume is None or proc.successes:
            return reason
        # The CLI says it on stdout (the result's errors, in the fold's reason) and on stderr.
        if NO_CONVERSATION not in reason and not any(NO_CONVERSATION in line for line in proc.stderr):
            return reason
        self.resume_failed = proc.resume
        return (
            f"could not resume the agent's conversation {proc.resume} ({reason}); "
            "the next turn starts a new conversation"
        )


_EMPTY: Final = Step([], [])
