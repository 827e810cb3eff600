"""State is a fold over the log: feed entries in order, get machine state changes out (sans-IO).

:class:`SessionFold` folds one session's log into its session machine and one stream machine model per
turn (see ``specs/session.toml`` and ``specs/stream.toml``); :class:`PoolFold` folds the pool's log into
the pool machine. The runtime feeds entries live as it appends them; ``turnstile replay`` feeds a
recorded file. Both get the same states, because both run the same fold — the log is the only input.

Each entry fires **at most one trigger per machine**, and only lifecycle entries fire any:

=============================================  ==================  ====================================
entry                                          stream trigger      session trigger
=============================================  ==================  ====================================
``turn.requested``                             (new model: queued)
``prompt.written`` (stream still queued)       ``dispatch``        ``turn_started``
``message_start``; thinking block start/line   ``think``
text block start; text ``assistant`` line      ``respond``
``assistant`` line with a tool_use block       ``call_tool``
``user`` tool_result of the last pending tool  ``tool_result``
``result``                                     by its outcome      ``turn_ended`` (if no other turn)
``interrupt.requested``                        (evidence only)     ``interrupt_requested``
``interrupt.escalated``                        ``cancel``          ``interrupt_escalated``
``timeout``                                    ``time_out``
``stream.ended`` (stream still open)           by its outcome
``process.exited``                             ``fail``/``cancel`` ``process_exited``
``process.spawned`` / ``.spawn_failed``        — / ``fail`` queued ``process_spawned`` / ``..._failed``
``session.*``                                  ``fail`` open       ``stop_requested`` / ...
=============================================  ==================  ====================================

Token deltas (``content_block_delta``) are counted, never transitioned: a turn has thousands of them and
a trigger costs ~10 us. An entry whose trigger is illegal in the current state never raises; it is
recorded as a :class:`Violation` with its ``seq`` and the machine stays where it was.

**Outcomes** come from all the evidence, because CLI versions disagree (an interrupted turn is
``is_error`` false in 2.1.29 and true in 2.1.220): a ``result`` with subtype ``success``, ``is_error``
false and no sign of an interrupt completes the stream; an interrupt requested, a ``terminal_reason``
``aborted_*``, an ``assistant`` line marked ``aborted`` or the CLI's "[Request interrupted by user]"
notice cancels it; any other result fails it (reason: the CLI's ``errors``, its text, or its subtype).
A process exit with the stream open fails it with the exit status (cancels it, if an interrupt was
asked for); ``interrupt.escalated`` cancels it; a ``timeout`` times it out.

**Raw CLI transcripts** carry no engine entries and no stream ids. Until the first engine entry (or
stream id) is seen, the fold infers turns: a stream ``t1``, ``t2``, ... opens at the first line of a turn
(``system/init``, ``system/status``, a user, assistant, stream or result line) when none is open, and
the ``result`` ends it. Lines that belong to no turn (control responses, rate-limit events, background
task notifications between turns) stay session-level.

The live view is read from :attr:`SessionFold.streams` (:class:`StreamView`); :meth:`SessionFold.unended`
lists the streams that are terminal by evidence but have no ``stream.ended`` entry yet — the runtime
appends one for each, so every stream has exactly one.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import msgspec

from turnstile.engine.errors import SpecError
from turnstile.engine.log import (
    AnyEntry,
    CliDecodeError,
    CliLine,
    CliOversized,
    InterruptEscalated,
    InterruptRequested,
    Outcome,
    PoolCheckout,
    PoolDegraded,
    PoolDrainRequested,
    PoolProcessLost,
    PoolProcessReady,
    PoolSpawnFailed,
    PoolSpawnStarted,
    PoolStarted,
    PoolStopped,
    ProcessExited,
    ProcessSpawned,
    ProcessSpawnFailed,
    PromptWritten,
    SessionCreated,
    SessionRecovered,
    SessionShutdown,
    SessionStopped,
    SessionStopRequested,
    SessionTitled,
    StreamEnded,
    StreamStalled,
    Timeout,
    TurnRequested,
    describe_exit,
    view_of,
)
from turnstile.engine.machines import MachineKind, Model, pool_machine, session_machine, stream_machine
from turnstile.engine.protocol import (
    ApiRetry,
    AssistantMessage,
    ContentBlockDelta,
    ContentBlockStart,
    ConversationReset,
    KeepAlive,
    LineError,
    Message,
    MessageStart,
    Ping,
    RedactedThinkingBlock,
    ResultMessage,
    ServerToolUseBlock,
    SignatureDelta,
    StreamEvent,
    SystemInit,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ThinkingDelta,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from turnstile.engine.timing import StateClock, TurnTiming, tokens_of, turn_cost

__all__ = [
    "NEW",
    "POOL_ENTRIES",
    "Change",
    "PoolFold",
    "SessionFold",
    "StreamView",
    "Violation",
    "result_outcome",
]

NEW: Final = "new"
"""The ``trigger`` of a :class:`Change` that adds a model to its machine (``source`` is empty)."""

INTERRUPT_NOTICE: Final = "[Request interrupted by user"
"""How the CLI's user line after an interrupt begins (also "... for tool use]" in tool results)."""

_OUTCOME_TRIGGER: Final[dict[str, str]] = {
    "completed": "complete",
    "failed": "fail",
    "cancelled": "cancel",
    "timed_out": "time_out",
}
_STREAM_TRIGGERS: Final = (
    "dispatch",
    "think",
    "respond",
    "call_tool",
    "tool_result",
    "stall",
    *_OUTCOME_TRIGGER.values(),
)
_SESSION_TRIGGERS: Final = (
    "process_spawned",
    "process_spawn_failed",
    "process_exited",
    "process_retired",
    "turn_started",
    "turn_ended",
    "interrupt_requested",
    "interrupt_escalated",
    "session_recovered",
    "stop_requested",
    "session_stopped",
)
_POOL_TRIGGERS: Final = (
    "start",
    "spawn_started",
    "process_ready",
    "process_gone",
    "spawn_failed",
    "degrade",
    "drain",
    "stop",
)
# system subtypes that belong to a turn (and so open one in a raw transcript); task, hook and state
# notices can arrive between turns and stay session-level.
_TURN_SYSTEM_SUBTYPES: Final = frozenset(
    {"init", "status", "compact_boundary", "api_retry", "thinking_tokens"}
)
_REASON_MAX: Final = 300
# The views a stream's line hands to the session (a tuple, built once: ``A | B`` is rebuilt per call).
_SESSION_VIEWS: Final = (SystemMessage, ConversationReset)


class Change(NamedTuple):
    """One state change of one model, caused by the entry ``seq``.

    ``trigger`` is :data:`NEW` (and ``source`` empty) when the entry added the model to its machine.
    """

    machine: str
    id: str
    trigger: str
    source: str
    dest: str
    seq: int


# Builds a Change without the Python-level ``__new__`` that NamedTuple generates (a fold makes one per move).
_change: Final = tuple.__new__


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """An entry whose trigger the machine's spec does not allow in the model's state (nothing moved)."""

    seq: int
    machine: str
    id: str
    trigger: str
    state: str
    message: str


class _Now:
    """The latest timestamp the fold has seen (shared with the stream views for live timing)."""

    __slots__ = ("ts",)

    def __init__(self) -> None:
        self.ts: float | None = None


class StreamView:
    """One stream (turn) as the fold sees it. Read-only for everyone but the fold."""

    __slots__ = (
        "_aborted",
        "_clock",
        "_cost",
        "_deltas",
        "_dispatched",
        "_ended",
        "_ended_seq",
        "_exit_status",
        "_first_line",
        "_id",
        "_input_tokens",
        "_interrupt_at",
        "_interrupt_by",
        "_last_line",
        "_last_progress",
        "_model",
        "_now",
        "_output_tokens",
        "_pending_tools",
        "_pid",
        "_reason",
        "_requested_seq",
        "_stall_since",
        "_tool_ids",
    )

    def __init__(
        self, sid: str, model: Model, clock: StateClock, now: _Now, requested_seq: int | None
    ) -> None:
        self._id = sid
        self._model = model
        self._clock = clock
        self._now = now
        self._requested_seq = requested_seq
        self._ended = False
        self._ended_seq: int | None = None
        self._exit_status: int | None = None
        self._reason = ""
        self._dispatched = False
        self._pid: int | None = None
        self._interrupt_by: str | None = None
        self._interrupt_at: float | None = None
        self._first_line: float | None = None
        self._last_line: float | None = None
        self._last_progress: float | None = None
        self._stall_since: float | None = None
        self._aborted: str | None = None
        self._pending_tools: set[str] = set()
        self._tool_ids: set[str] = set()
        self._deltas = 0
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._cost: float | None = None

    @property
    def id(self) -> str:
        """The stream id (from the log, or ``t1``, ``t2``, ... inferred from a raw transcript)."""
        return self._id

    @property
    def state(self) -> str:
        """The stream machine's state."""
        return self._model.state

    @property
    def terminal(self) -> bool:
        """Whether the stream reached its (one, absorbing) terminal state."""
        return self._model.state in _TERMINAL

    @property
    def outcome(self) -> Outcome | None:
        """``completed``, ``failed``, ``cancelled`` or ``timed_out`` once terminal, else None."""
        return _TERMINAL.get(self._model.state)

    @property
    def reason(self) -> str:
        """Why the stream ended the way it did (empty for a plain completion or an open stream)."""
        return self._reason

    @property
    def ended(self) -> bool:
        """Whether the log holds this stream's ``stream.ended`` entry."""
        return self._ended

    @property
    def dispatched(self) -> bool:
        """Whether the prompt reached the CLI (the stream left ``queued`` for a non-terminal state)."""
        return self._dispatched

    @property
    def timing(self) -> TurnTiming:
        """Where the turn's time went: up to its terminal state, or (live) up to the last entry seen."""
        return self._clock.timing(
            self._now.ts,
            tool_calls=len(self._tool_ids),
            input_tokens=self._input_tokens,
            output_tokens=self._output_tokens,
            cost_usd=self._cost,
        )

    def timing_at(self, ts: float | None) -> TurnTiming:
        """The timing as a ``stream.ended`` stamped ``ts`` would end it (for a stream still open); the
        final timing once the stream is terminal."""
        return self._clock.timing(
            ts if ts is not None else self._now.ts,
            tool_calls=len(self._tool_ids),
            input_tokens=self._input_tokens,
            output_tokens=self._output_tokens,
            cost_usd=self._cost,
        )

    @property
    def tool_calls(self) -> int:
        """Tool calls the model made in this turn (top-level ones; sub-agent calls are not counted)."""
        return len(self._tool_ids)

    @property
    def deltas(self) -> int:
        """Token deltas seen (counted, never transitioned)."""
        return self._deltas

    @property
    def requested_seq(self) -> int | None:
        """The ``seq`` of the entry that opened the stream."""
        return self._requested_seq

    @property
    def ended_seq(self) -> int | None:
        """The ``seq`` of its ``stream.ended`` entry, once logged."""
        return self._ended_seq

    @property
    def exit_status(self) -> int | None:
        """The process's exit status when a process exit ended the stream."""
        return self._exit_status

    @property
    def pid(self) -> int | None:
        """The process the prompt was dispatched to, when known."""
        return self._pid

    @property
    def interrupt_by(self) -> str | None:
        """Who asked for an interrupt of this stream (None: nobody)."""
        return self._interrupt_by

    @property
    def interrupt_at(self) -> float | None:
        """When the interrupt was asked for (the ``interrupt.requested`` entry's time)."""
        return self._interrupt_at

    @property
    def first_line_at(self) -> float | None:
        """When the CLI printed the stream's first line (None: no line yet)."""
        return self._first_line

    @property
    def last_line_at(self) -> float | None:
        """When the CLI printed the stream's last line, keep-alives included (its last sign of life)."""
        return self._last_line

    @property
    def last_progress_at(self) -> float | None:
        """When the stream last made progress: a line with content (tokens, messages, tool results,
        retry notices), not a keep-alive ping. None: none yet."""
        return self._last_progress

    @property
    def stall_since(self) -> float | None:
        """The ``since`` of the last ``stream.stalled`` entry (the stall it announced), if any."""
        return self._stall_since

    def __repr__(self) -> str:
        return f"<StreamView {self._id} {self.state}{' ended' if self._ended else ''}>"


_TERMINAL: Final[dict[str, Outcome]] = {
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "timed_out": "timed_out",
}
"""The stream's terminal states are its outcomes (checked against ``specs/stream.toml`` on first use)."""


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _REASON_MAX else flat[: _REASON_MAX - 1] + "…"


def result_outcome(
    result: ResultMessage, *, interrupt_by: str | None, aborted: str | None
) -> tuple[Outcome, str]:
    """The outcome of a turn from its ``result`` and the stream's evidence of an interrupt.

    ``interrupt_by`` says who asked for an interrupt (None if nobody); ``aborted`` is what the CLI showed
    of one (an ``aborted`` assistant line, the interrupt notice), if anything.
    """
    terminal_reason = result.terminal_reason or ""
    cli_aborted = terminal_reason.startswith("aborted")
    if result.subtype == "success" and not result.is_error and not cli_aborted and aborted is None:
        return "completed", ""
    if cli_aborted or aborted is not None or interrupt_by is not None:
        evidence = [
            f"interrupt requested by {interrupt_by}" if interrupt_by is not None else "",
            f"terminal_reason {terminal_reason}" if cli_aborted else "",
            aborted or "",
        ]
        return "cancelled", "interrupted: " + "; ".join(e for e in evidence if e)
    return "failed", _one_line(_error_text(result))


def _error_text(result: ResultMessage) -> str:
    # The same preference as the official SDK's error text: errors, then the result text, then the
    # subtype, then the HTTP status.
    if result.errors:
        return "; ".join(result.errors)
    if result.result:
        return result.result
    if result.subtype != "success":
        return result.subtype
    if result.api_error_status is not None:
        return f"API error (HTTP {result.api_error_status})"
    return "error result"


def _exit_text(entry: ProcessExited) -> str:
    text = describe_exit(entry.returncode)
    detail = entry.reason or (entry.stderr_tail[-1] if entry.stderr_tail else "")
    return _one_line(f"{text}: {detail}" if detail else text)


class _Release:
    """Takes a fold's live models out of their machines when the fold is closed or collected."""

    __slots__ = ("live",)

    def __init__(self) -> None:
        self.live: dict[Model, MachineKind] = {}

    def __call__(self) -> None:
        for model, kind in self.live.items():
            kind.remove(model)
        self.live.clear()


class SessionFold:
    """The session machine and its streams' machines, folded from one session's log.

    Feed every entry, in ``seq`` order, to :meth:`apply`. The fold never raises on any entry sequence;
    what a spec forbids is recorded in :attr:`violations`.
    """

    def __init__(self, session_id: str | None = None) -> None:
        self._sk = session_machine()
        self._tk = stream_machine()
        self._sk.require(
            triggers=_SESSION_TRIGGERS, states=("busy", "interrupting"), user="turnstile.engine.fold"
        )
        self._tk.require(
            triggers=_STREAM_TRIGGERS, states=(*_OUTCOME_TRIGGER, "queued"), user="turnstile.engine.fold"
        )
        if self._tk.terminal != set(_TERMINAL):
            raise SpecError(
                f"specs/stream.toml must have exactly the terminal states {sorted(_TERMINAL)} "
                f"(the outcomes), not {sorted(self._tk.terminal)}"
            )
        self._phases = {name: state.phase or "waiting" for name, state in self._tk.spec.states.items()}
        self.session_id = session_id
        self.cli_session_id: str | None = None
        #: The title someone gave the session (``session.titled``); None: lists show the first prompt.
        self.title: str | None = None
        #: The start of the first turn's prompt (at most :data:`PROMPT_PREVIEW` characters).
        self.first_prompt: str | None = None
        #: True while the session has no process only because the server restarted (``session.recovered``
        #: and no process since): not a crash — the next turn resumes the conversation.
        self.restarted = False
        self.streams: dict[str, StreamView] = {}
        self.violations: list[Violation] = []
        self._open: dict[str, StreamView] = {}
        self._active_view: StreamView | None = None  # the oldest dispatched open stream (kept current)
        self._unended: dict[str, StreamView] = {}
        self._now = _Now()
        self._infer = True
        self._turns = 0
        self._pid: int | None = None
        self._cost_base: float | None = None
        self._release = _Release()
        self._finalizer = weakref.finalize(self, self._release)
        self._session = Model()
        self._sk.add(self._session)
        self._release.live[self._session] = self._sk

    # -- the read side ------------------------------------------------------------------------------------

    @property
    def session_state(self) -> str:
        """The session machine's current state."""
        return self._session.state

    @property
    def open_streams(self) -> list[str]:
        """Ids of the streams that are not terminal, oldest first."""
        return list(self._open)

    @property
    def active_stream(self) -> str | None:
        """The stream the CLI's lines currently belong to: the oldest dispatched, open stream (or None)."""
        view = self._active()
        return view.id if view is not None else None

    def queued(self) -> list[StreamView]:
        """Open streams whose prompt has not reached the CLI, oldest first (the turns waiting)."""
        return [s for s in self._open.values() if not s._dispatched]

    def unended(self) -> list[StreamView]:
        """Streams terminal by evidence (a result, an exit, a timeout...) with no ``stream.ended`` yet.

        In the order they ended. The runtime appends one ``stream.ended`` for each (outcome, reason,
        timing, exit status from the view); folding it marks the stream ended and drops it from here.
        """
        return list(self._unended.values())

    @property
    def now(self) -> float | None:
        """The latest timestamp seen in the log (None when no entry had one)."""
        return self._now.ts

    def close(self) -> None:
        """Take the fold's live models out of the shared machines (also done when the fold is collected)."""
        self._finalizer()

    # -- the write side -----------------------------------------------------------------------------------

    def apply(self, entry: AnyEntry, view: Message | LineError | None = None) -> list[Change]:
        """Fold one entry; return the state changes it caused (often none).

        ``view`` is the typed CLI message of a ``cli`` entry; it is decoded from the entry when None.
        Never raises on any entry sequence.
        """
        ts = entry.ts
        if ts is not None:
            now = self._now
            if now.ts is None or ts > now.ts:
                now.ts = ts
        if type(entry) is CliLine:
            # Token deltas — most lines — of a known stream: counted, nothing else (see _on_cli).
            if type(view) is StreamEvent and type(view.event) is ContentBlockDelta:
                sid = entry.stream
                s = self._active_view if sid is None else self.streams.get(sid)
                # (A stream's first line, and a token after a stall, take the general path.)
                if s is not None and s._first_line is not None and s._model.state != "stalled":
                    if sid is not None:
                        self._infer = False
                    s._deltas += 1
                    s._last_line = s._last_progress = ts
                    return []
            changes: list[Change] = []
            self._on_cli(entry, view, changes)
            return changes
        changes = []
        handler = _HANDLERS.get(type(entry))
        if handler is not None:  # None: stderr, pool and store entries, unknown kinds — nothing to fold
            handler(self, entry, changes)
        return changes

    # -- machines --------------------------------------------------------------------------------------------

    def _violation(self, seq: int, machine: str, mid: str, trigger: str, state: str, message: str) -> None:
        self.violations.append(
            Violation(seq=seq, machine=machine, id=mid, trigger=trigger, state=state, message=message)
        )

    def _fire_session(self, trigger: str, seq: int, changes: list[Change]) -> None:
        model = self._session
        source = model.state
        dest = self._sk.fire(model, trigger)
        sid = self.session_id or "session"
        if dest is None:
            self._violation(
                seq, "session", sid, trigger, source, f"{trigger!r} is not allowed in state {source!r}"
            )
            return
        if dest != source:
            changes.append(_change(Change, ("session", sid, trigger, source, dest, seq)))
            if dest in self._sk.terminal:
                self._sk.remove(model)
                self._release.live.pop(model, None)

    def _fire_stream(
        self,
        s: StreamView,
        trigger: str,
        entry: AnyEntry,
        changes: list[Change],
        reason: str = "",
        at: float | None = None,
    ) -> bool:
        model = s._model
        source = model.state
        if source in _TERMINAL:
            self._violation(
                entry.seq,
                "stream",
                s._id,
                trigger,
                source,
                f"stream {s._id} already ended as {source}; {trigger!r} ignored (terminal is absorbing)",
            )
            return False
        dest = self._tk.fire(model, trigger)
        if dest is None:
            self._violation(
                entry.seq, "stream", s._id, trigger, source, f"{trigger!r} is not allowed in state {source!r}"
            )
            return False
        if dest == source:
            return True
        changes.append(_change(Change, ("stream", s._id, trigger, source, dest, entry.seq)))
        s._clock.enter(dest, entry.ts if at is None else at)
        if dest in _TERMINAL:
            s._reason = reason
            s._pending_tools.clear()
            del self._open[s._id]
            if self._active_view is s:
                self._active_view = self._find_active()
            self._tk.remove(model)
            self._release.live.pop(model, None)
            if not s._ended:
                self._unended[s._id] = s
        elif not s._dispatched:
            s._dispatched = True
            # The oldest dispatched stream is active; a stream requested earlier can be dispatched later.
            self._active_view = self._find_active()
            if s._pid is None:
                s._pid = self._pid
            self._fire_session("turn_started", entry.seq, changes)
        return True

    def _new_stream(self, sid: str, entry: AnyEntry, changes: list[Change]) -> StreamView:
        model = Model()
        self._tk.add(model)
        self._release.live[model] = self._tk
        s = StreamView(sid, model, StateClock(model.state, entry.ts, self._phases), self._now, entry.seq)
        self.streams[sid] = s
        self._open[sid] = s
        changes.append(_change(Change, ("stream", sid, NEW, "", model.state, entry.seq)))
        return s

    def _active(self) -> StreamView | None:
        return self._active_view

    def _find_active(self) -> StreamView | None:
        for s in self._open.values():
            if s._dispatched:
                return s
        return None

    def _target(self, sid: str | None) -> StreamView | None:
        """The stream an engine entry names, or else the active one."""
        if sid is not None:
            return self.streams.get(sid)
        return self._active()

    def _end_open(self, entry: AnyEntry, changes: list[Change], reason: str, *, cancel: bool = False) -> None:
        """Fail (or cancel: if asked, or if an interrupt was asked for) every open stream."""
        for s in list(self._open.values()):
            trigger = "cancel" if cancel or s._interrupt_by is not None else "fail"
            self._fire_stream(s, trigger, entry, changes, reason)

    def _engine_entry(self) -> None:
        # Engine entries mean a Turnstile log: turns come from `turn.requested`, not from inference.
        self._infer = False

    # -- engine entries ----------------------------------------------------------------------------------

    def _on_session_created(self, entry: SessionCreated, changes: list[Change]) -> None:
        self._engine_entry()
        if self.session_id is None:
            self.session_id = entry.session_id

    def _on_turn_requested(self, entry: TurnRequested, changes: list[Change]) -> None:
        self._engine_entry()
        if self.first_prompt is None:
            self.first_prompt = _prompt_preview(entry.prompt)
        sid = entry.stream
        if sid is None:
            sid = self._fresh_id()
        elif sid in self.streams:
            state = self.streams[sid].state
            self._violation(entry.seq, "stream", sid, NEW, state, f"turn.requested for existing stream {sid}")
            return
        self._new_stream(sid, entry, changes)

    def _on_prompt_written(self, entry: PromptWritten, changes: list[Change]) -> None:
        self._engine_entry()
        s = self.streams.get(entry.stream) if entry.stream is not None else self._oldest_queued()
        if s is None:
            self._violation(
                entry.seq, "stream", entry.stream or "?", "dispatch", "", "prompt.written for no stream"
            )
            return
        if entry.pid:
            s._pid = entry.pid
        # Written after the CLI already answered (a benign race between reader and writer): not an event.
        if s.state == "queued":
            self._fire_stream(s, "dispatch", entry, changes)

    def _oldest_queued(self) -> StreamView | None:
        for s in self._open.values():
            if not s._dispatched:
                return s
        return None

    def _on_interrupt_requested(self, entry: InterruptRequested, changes: list[Change]) -> None:
        self._engine_entry()
        s = self._target(entry.stream)
        if s is None or s.terminal:
            return  # the turn ended as the interrupt was asked for: nothing to interrupt
        s._interrupt_by = entry.by or "client"
        s._interrupt_at = entry.ts
        if s._dispatched and self._session.state in ("busy", "interrupting"):
            self._fire_session("interrupt_requested", entry.seq, changes)

    def _on_interrupt_escalated(self, entry: InterruptEscalated, changes: list[Change]) -> None:
        self._engine_entry()
        s = self._target(entry.stream)
        if s is not None and not s.terminal:
            self._fire_stream(s, "cancel", entry, changes, f"interrupted: escalated to {entry.signal}")
        self._fire_session("interrupt_escalated", entry.seq, changes)

    def _on_timeout(self, entry: Timeout, changes: list[Change]) -> None:
        self._engine_entry()
        s = self._target(entry.stream)
        if s is None and entry.which == "spawn":
            s = self._oldest_queued()
        if s is None:
            return
        if entry.which == "stall":
            reason = f"no progress for {entry.after_s:g} s (the model API stalled)"
        else:
            reason = f"{entry.which} timeout after {entry.after_s:g} s"
        if s.terminal:
            self._fire_stream(s, "time_out", entry, changes)  # records the violation
            return
        self._fire_stream(s, "time_out", entry, changes, reason)

    def _on_stream_ended(self, entry: StreamEnded, changes: list[Change]) -> None:
        self._engine_entry()
        s = self.streams.get(entry.stream) if entry.stream is not None else None
        trigger = _OUTCOME_TRIGGER.get(entry.outcome, "fail")
        if s is None:
            self._violation(
                entry.seq,
                "stream",
                entry.stream or "?",
                trigger,
                "",
                "stream.ended for a stream never opened",
            )
            return
        if s._ended:
            self._violation(
                entry.seq, "stream", s._id, trigger, s.state, f"a second stream.ended for stream {s._id}"
            )
            return
        if not s.terminal:
            if entry.exit_status is not None:
                s._exit_status = entry.exit_status
            self._fire_stream(s, trigger, entry, changes, entry.reason)
        elif s.outcome != entry.outcome:
            self._violation(
                entry.seq,
                "stream",
                s._id,
                trigger,
                s.state,
                f"stream.ended says {entry.outcome} but stream {s._id} already ended as {s.outcome}",
            )
        elif entry.reason:
            # The terminal entry is the record clients saw: its (often fuller) reason is the stream's.
            s._reason = entry.reason
        s._ended = True
        s._ended_seq = entry.seq
        self._unended.pop(s._id, None)

    def _on_process_spawned(self, entry: ProcessSpawned, changes: list[Change]) -> None:
        self._engine_entry()
        self.restarted = False
        self._pid = entry.pid
        self._cost_base = None  # the CLI's running cost total starts again with each process
        self._fire_session("process_spawned", entry.seq, changes)

    def _on_process_spawn_failed(self, entry: ProcessSpawnFailed, changes: list[Change]) -> None:
        self._engine_entry()
        self.restarted = False
        reason = _one_line(f"spawn failed: {entry.error}")
        for s in list(self._open.values()):
            if not s._dispatched:
                self._fire_stream(s, "fail", entry, changes, reason)
        self._fire_session("process_spawn_failed", entry.seq, changes)

    def _on_process_exited(self, entry: ProcessExited, changes: list[Change]) -> None:
        self._engine_entry()
        reason = _exit_text(entry)
        for s in list(self._open.values()):
            # Streams dispatched to this process (or to an unknown one); queued ones wait for the next.
            if s._dispatched and (s._pid is None or not entry.pid or s._pid == entry.pid):
                s._exit_status = entry.returncode
                trigger = "cancel" if s._interrupt_by is not None else "fail"
                why = f"interrupted: {reason}" if trigger == "cancel" else reason
                self._fire_stream(s, trigger, entry, changes, why)
        if self._pid is None or not entry.pid or entry.pid == self._pid:
            self._pid = None
            self._cost_base = None
            self._fire_session("process_retired" if entry.expected else "process_exited", entry.seq, changes)

    def _on_session_recovered(self, entry: SessionRecovered, changes: list[Change]) -> None:
        self._engine_entry()
        self._pid = None
        self._cost_base = None
        self._end_open(entry, changes, "server restarted")
        self._fire_session("session_recovered", entry.seq, changes)
        self.restarted = self._session.state == "crashed"

    def _on_stop_requested(self, entry: SessionStopRequested, changes: list[Change]) -> None:
        self._engine_entry()
        self._end_open(entry, changes, _one_line(entry.reason or "session stopped"), cancel=True)
        self.restarted = False
        self._fire_session("stop_requested", entry.seq, changes)

    def _on_shutdown(self, entry: SessionShutdown, changes: list[Change]) -> None:
        # The server goes down, the session does not: its turns end, no session trigger fires (the
        # process's exit, logged next, moves the session).
        self._engine_entry()
        self._end_open(entry, changes, _one_line(entry.reason or "server shutting down"), cancel=True)

    def _on_stalled(self, entry: StreamStalled, changes: list[Change]) -> None:
        self._engine_entry()
        s = self._target(entry.stream)
        if s is None or s.terminal:
            return
        s._stall_since = entry.since
        # The stall began at the last progress, not when it was noticed: its time counts as stalled.
        self._fire_stream(s, "stall", entry, changes, at=entry.since)

    def _on_session_titled(self, entry: SessionTitled, changes: list[Change]) -> None:
        self._engine_entry()
        self.title = entry.title.strip() or None

    def _on_session_stopped(self, entry: SessionStopped, changes: list[Change]) -> None:
        self._engine_entry()
        self.restarted = False
        self._end_open(
            entry,
            changes,
            _one_line(f"session stopped: {entry.reason}" if entry.reason else "session stopped"),
        )
        self._fire_session("session_stopped", entry.seq, changes)

    # -- CLI lines -------------------------------------------------------------------------------------------

    def _fresh_id(self) -> str:
        while True:
            self._turns += 1
            sid = f"t{self._turns}"
            if sid not in self.streams:
                return sid

    def _on_cli(self, entry: CliLine, view: Message | LineError | None, changes: list[Change]) -> None:
        if view is None:
            view = view_of(entry)
        if entry.stream is not None:
            self._infer = False
            s = self.streams.get(entry.stream)
            if s is None:
                self._violation(
                    entry.seq, "stream", entry.stream, "", "", "a CLI line for a stream never opened"
                )
        else:
            s = self._active_view
        # Token deltas first and fast: counted, never transitioned (except to leave a stall).
        if type(view) is StreamEvent and type(view.event) is ContentBlockDelta:
            if s is None:
                if not self._infer:
                    return
                s = self._infer_open(entry, changes)
                self._fire_stream(s, "dispatch", entry, changes)
            s._deltas += 1
            self._note_line(s, entry.ts, progress=True)
            if s._model.state == "stalled" and view.parent_tool_use_id is None:
                self._fire_stream(s, _delta_trigger(view.event), entry, changes)
            return
        if s is None:
            if self._infer and _opens_turn(view):
                s = self._infer_open(entry, changes)
            else:
                self._session_line(view)
                return
        self._note_line(s, entry.ts, progress=_is_progress(view))
        trigger = self._signal(s, view, entry, changes)
        if trigger is None:
            if s._model.state == "queued":
                self._fire_stream(s, "dispatch", entry, changes)
            return
        if trigger == "result":
            return
        self._fire_stream(s, trigger, entry, changes)

    def _infer_open(self, entry: CliLine, changes: list[Change]) -> StreamView:
        return self._new_stream(self._fresh_id(), entry, changes)

    @staticmethod
    def _note_line(s: StreamView, ts: float | None, *, progress: bool) -> None:
        """A CLI line of stream ``s`` at ``ts``: its first event, its last sign of life, its progress."""
        if s._first_line is None:
            s._first_line = ts
            s._clock.event(ts)
        s._last_line = ts
        if progress:
            s._last_progress = ts

    def _on_cli_damage(self, entry: CliDecodeError | CliOversized, changes: list[Change]) -> None:
        # A line that is no message is still the CLI alive (activity), but no progress.
        s = self.streams.get(entry.stream) if entry.stream is not None else self._active_view
        if s is not None and not s.terminal:
            self._note_line(s, entry.ts, progress=False)

    def _session_line(self, view: Message | LineError) -> None:
        if isinstance(view, SystemInit) and view.session_id:
            self.cli_session_id = view.session_id
        elif isinstance(view, ConversationReset):
            self._cost_base = None
        elif isinstance(view, ResultMessage) and view.session_id:
            self.cli_session_id = view.session_id

    def _signal(
        self, s: StreamView, view: Message | LineError, entry: CliLine, changes: list[Change]
    ) -> str | None:
        """Read one CLI line of stream ``s``: update its evidence and counters; return its trigger, if any.

        Returns ``"result"`` when the line was a result (already folded, triggers included).
        """
        # Most frequent first; exact types (a subclass would be a different message).
        if type(view) is StreamEvent:
            if view.parent_tool_use_id is not None:
                return None  # a sub-agent's stream: the parent's tool is still running
            event = view.event
            et = type(event)
            if et is MessageStart:
                return "think"
            if type(event) is ContentBlockStart:
                bt = type(event.content_block)
                if bt is TextBlock:
                    return "respond"
                if bt is ThinkingBlock or bt is RedactedThinkingBlock:
                    return "think"
            return None
        if type(view) is AssistantMessage:
            if view.parent_tool_use_id is not None:
                return None
            if view.aborted and s._aborted is None:
                s._aborted = "the CLI marked the answer aborted"
            return self._assistant_trigger(s, view)
        if type(view) is UserMessage:
            return self._user_line(s, view)
        if type(view) is ResultMessage:
            self._result(s, view, entry, changes)
            return "result"
        if type(view) is ApiRetry:
            return "stall"  # the CLI waits to retry the API: its own phase, until the model's output
        if isinstance(view, _SESSION_VIEWS):
            self._session_line(view)
        return None

    def _assistant_trigger(self, s: StreamView, view: AssistantMessage) -> str | None:
        trigger: str | None = None
        for block in view.message.content:
            bt = type(block)
            if bt is ToolUseBlock or bt is ServerToolUseBlock:
                tool_id = block.id  # type: ignore[union-attr]
                s._tool_ids.add(tool_id)
                if bt is ToolUseBlock:
                    # server tools return inside the API response; only client tools await a tool_result
                    s._pending_tools.add(tool_id)
                trigger = "call_tool"
            elif bt is TextBlock and trigger != "call_tool":
                trigger = "respond"
            elif (bt is ThinkingBlock or bt is RedactedThinkingBlock) and trigger is None:
                trigger = "think"
        return trigger

    def _user_line(self, s: StreamView, view: UserMessage) -> str | None:
        if view.parent_tool_use_id is not None:
            return None
        content = view.message.content
        if isinstance(content, str):
            if content.startswith(INTERRUPT_NOTICE) and s._aborted is None:
                s._aborted = _one_line(content)
            return None
        had_result = False
        for block in content:
            if type(block) is ToolResultBlock:
                had_result = True
                s._pending_tools.discard(block.tool_use_id)
                text = block.content if isinstance(block.content, str) else ""
                if text.startswith(INTERRUPT_NOTICE) and s._aborted is None:
                    s._aborted = _one_line(text)
            elif type(block) is TextBlock and block.text.startswith(INTERRUPT_NOTICE) and s._aborted is None:
                s._aborted = _one_line(block.text)
        if had_result and not s._pending_tools:
            return "tool_result"
        return None

    def _result(self, s: StreamView, view: ResultMessage, entry: CliLine, changes: list[Change]) -> None:
        if view.session_id:
            self.cli_session_id = view.session_id
        s._input_tokens, s._output_tokens = tokens_of(view.usage)
        s._cost = turn_cost(view.total_cost_usd, self._cost_base)
        if view.total_cost_usd is not None:
            self._cost_base = view.total_cost_usd
        outcome, reason = result_outcome(view, interrupt_by=s._interrupt_by, aborted=s._aborted)
        self._fire_stream(s, _OUTCOME_TRIGGER[outcome], entry, changes, reason)
        # Only the CLI's result frees the CLI: the session is idle again once no other turn is in flight.
        if self._session.state in ("busy", "interrupting") and self._active_view is None:
            self._fire_session("turn_ended", entry.seq, changes)


def _is_progress(view: Message | LineError) -> bool:
    """Whether a CLI line is progress (content, a message, a retry notice), not a keep-alive."""
    if type(view) is StreamEvent:
        return type(view.event) is not Ping
    return type(view) is not KeepAlive


def _delta_trigger(event: ContentBlockDelta) -> str:
    """The trigger of a token that ends a stall: thinking tokens think, any other output responds."""
    dt = type(event.delta)
    return "think" if dt is ThinkingDelta or dt is SignatureDelta else "respond"


PROMPT_PREVIEW: Final = 200
"""How much of the first prompt :attr:`SessionFold.first_prompt` keeps (characters)."""


def _prompt_preview(prompt: str | list[dict[str, Any]]) -> str:
    """The start of a prompt's text: a string prompt, or the text blocks of a content-block prompt."""
    if isinstance(prompt, str):
        text = prompt
    else:
        text = " ".join(
            str(block.get("text", ""))
            for block in prompt
            if isinstance(block, dict) and block.get("type") == "text"
        )
    return text[:PROMPT_PREVIEW]


def _opens_turn(view: Message | LineError) -> bool:
    """Whether a CLI line belongs to a turn (so, in a raw transcript, opens one when none is open)."""
    vt = type(view)
    if vt is AssistantMessage or vt is UserMessage or vt is ResultMessage or vt is StreamEvent:
        return True
    return isinstance(view, SystemMessage) and view.subtype in _TURN_SYSTEM_SUBTYPES


_HANDLERS: Final[dict[type, Callable[[SessionFold, Any, list[Change]], None]]] = {
    SessionCreated: SessionFold._on_session_created,
    TurnRequested: SessionFold._on_turn_requested,
    PromptWritten: SessionFold._on_prompt_written,
    InterruptRequested: SessionFold._on_interrupt_requested,
    InterruptEscalated: SessionFold._on_interrupt_escalated,
    Timeout: SessionFold._on_timeout,
    StreamEnded: SessionFold._on_stream_ended,
    ProcessSpawned: SessionFold._on_process_spawned,
    ProcessSpawnFailed: SessionFold._on_process_spawn_failed,
    ProcessExited: SessionFold._on_process_exited,
    SessionRecovered: SessionFold._on_session_recovered,
    SessionStopRequested: SessionFold._on_stop_requested,
    SessionStopped: SessionFold._on_session_stopped,
    SessionShutdown: SessionFold._on_shutdown,
    StreamStalled: SessionFold._on_stalled,
    CliDecodeError: SessionFold._on_cli_damage,
    CliOversized: SessionFold._on_cli_damage,
    SessionTitled: SessionFold._on_session_titled,
}
"""Engine entries and the method that folds each (CLI lines take a fast path in :meth:`SessionFold.apply`)."""


# --------------------------------------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------------------------------------


POOL_ENTRIES: Final[frozenset[type]] = frozenset(
    {
        PoolStarted,
        PoolSpawnStarted,
        PoolProcessReady,
        PoolSpawnFailed,
        PoolCheckout,
        PoolProcessLost,
        PoolDegraded,
        PoolDrainRequested,
        PoolStopped,
    }
)
"""The entry types :class:`PoolFold` folds (all others it ignores)."""


class PoolFold:
    """The pool machine, folded from the pool's ``pool.*`` entries.

    Counts warm processes per key (spawn configuration) in :attr:`warm`; the ``at_target`` guard of
    ``specs/pool.toml`` reads :attr:`at_target`. :attr:`reason` says why the pool is degraded (None in
    any other state); :attr:`entries` counts the pool entries folded. Never raises; illegal entries are
    recorded in :attr:`violations`.
    """

    def __init__(self, pool_id: str = "pool") -> None:
        self._kind = pool_machine()
        self._kind.require(
            triggers=_POOL_TRIGGERS, states=("degraded",), user="turnstile.engine.fold.PoolFold"
        )
        self.id = pool_id
        self.target = 0
        # Warm processes by key, as pid sets: a loss or checkout of a pid that never became ready (or
        # was already counted out) changes nothing, so the counts cannot drift.
        self._warm: dict[str, set[int]] = {}
        self.reason: str | None = None
        self.last_error: str | None = None
        self.violations: list[Violation] = []
        self.entries = 0
        self._model = Model()
        self._kind.add(self._model)
        self._finalizer = weakref.finalize(self, self._kind.remove, self._model)

    @property
    def state(self) -> str:
        """The pool machine's current state."""
        return self._model.state

    @property
    def warm(self) -> dict[str, int]:
        """Warm (ready, not checked out) processes per key."""
        return {key: len(pids) for key, pids in self._warm.items()}

    @property
    def at_target(self) -> bool:
        """Every key being warmed has at least ``target`` warm processes (true when the target is 0)."""
        if self.target <= 0:
            return True
        return bool(self._warm) and all(len(p) >= self.target for p in self._warm.values())

    def close(self) -> None:
        """Take the pool's model out of the shared machine (also done when the fold is collected)."""
        self._finalizer()

    def apply(self, entry: AnyEntry) -> list[Change]:
        """Fold one entry (entries other than ``pool.*`` are ignored); return the state changes."""
        et = type(entry)
        trigger: str
        if et is PoolStarted:
            assert isinstance(entry, PoolStarted)
            self.target = entry.target
            trigger = "start"
        elif et is PoolSpawnStarted:
            assert isinstance(entry, PoolSpawnStarted)
            self._warm.setdefault(entry.key, set())
            trigger = "spawn_started"
        elif et is PoolProcessReady:
            assert isinstance(entry, PoolProcessReady)
            self._warm.setdefault(entry.key, set()).add(entry.pid)
            trigger = "process_ready"
        elif et is PoolSpawnFailed:
            assert isinstance(entry, PoolSpawnFailed)
            # keys are registered by spawn_started (which precedes a failure); a failure changes no count
            self.last_error = entry.error
            trigger = "spawn_failed"
        elif et is PoolCheckout or et is PoolProcessLost:
            assert isinstance(entry, PoolCheckout | PoolProcessLost)
            self._warm.setdefault(entry.key, set()).discard(entry.pid)
            trigger = "process_gone"
        elif et is PoolDegraded:
            assert isinstance(entry, PoolDegraded)
            trigger = "degrade"
        elif et is PoolDrainRequested:
            trigger = "drain"
        elif et is PoolStopped:
            trigger = "stop"
        else:
            return []
        self.entries += 1
        return self._fire(trigger, entry)

    def _fire(self, trigger: str, entry: AnyEntry) -> list[Change]:
        model = self._model
        source = model.state
        dest = self._kind.fire(model, trigger, self)
        if dest is None:
            why = "no guard held" if self._kind.allows(source, trigger) else "not allowed"
            self.violations.append(
                Violation(
                    seq=entry.seq,
                    machine="pool",
                    id=self.id,
                    trigger=trigger,
                    state=source,
                    message=f"{trigger!r} in state {source!r}: {why}",
                )
            )
            return []
        if isinstance(entry, PoolDegraded) and dest == "degraded":
            self.reason = entry.reason
        elif dest != "degraded":
            self.reason = None
        if dest in self._kind.terminal:
            self._kind.remove(model)
        if dest == source:
            return []
        return [Change("pool", self.id, trigger, source, dest, entry.seq)]
