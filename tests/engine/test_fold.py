"""The fold: entries in, machine states out — scenario tests, the outcome rules, and random sequences."""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turnstile.engine.fold import NEW, Change, PoolFold, SessionFold, Violation, result_outcome
from turnstile.engine.log import (
    AnyEntry,
    CliLine,
    Entry,
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
    SessionStopped,
    SessionStopRequested,
    Stderr,
    StreamEnded,
    Timeout,
    TurnRequested,
    entry_from_frame,
)
from turnstile.engine.machines import pool_machine, session_machine, stream_machine
from turnstile.engine.protocol import ResultMessage

# --- CLI lines --------------------------------------------------------------------------------------------


def init(session_id: str = "cli-1") -> dict[str, Any]:
    return {"type": "system", "subtype": "init", "session_id": session_id}


def assistant(
    *blocks: dict[str, Any], parent: str | None = None, aborted: bool | None = None
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "assistant", "message": {"model": "m", "content": list(blocks)}}
    if parent is not None:
        msg["parent_tool_use_id"] = parent
    if aborted is not None:
        msg["aborted"] = aborted
    return msg


def text(t: str = "hi") -> dict[str, Any]:
    return assistant({"type": "text", "text": t})


def thinking() -> dict[str, Any]:
    return assistant({"type": "thinking", "thinking": "", "signature": "s"})


def tool_use(tool_id: str, parent: str | None = None) -> dict[str, Any]:
    return assistant({"type": "tool_use", "id": tool_id, "name": "Bash", "input": {}}, parent=parent)


def tool_result(*ids: str, content: str = "ok", parent: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "user",
        "message": {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": i, "content": content} for i in ids],
        },
    }
    if parent is not None:
        msg["parent_tool_use_id"] = parent
    return msg


def notice() -> dict[str, Any]:
    return {
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": "[Request interrupted by user]"}]},
    }


def result(subtype: str = "success", is_error: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "type": "result",
        "subtype": subtype,
        "is_error": is_error,
        "duration_ms": 1,
        "duration_api_ms": 1,
        "num_turns": 1,
        "session_id": extra.pop("session_id", "cli-1"),
        **extra,
    }


def event(payload: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
    return {
        "type": "stream_event",
        "uuid": "u",
        "session_id": "cli-1",
        "event": payload,
        "parent_tool_use_id": parent,
    }


MESSAGE_START = event({"type": "message_start", "message": {}})
TEXT_START = event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
THINK_START = event(
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}
)
DELTA = event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}})


class Feed:
    """Appends entries (gap-free seqs, a clock ticking by one second) to a fold and keeps the changes."""

    def __init__(self, fold: SessionFold | None = None, *, ts: float | None = 1000.0) -> None:
        self.fold = fold or SessionFold()
        self.seq = 0
        self.ts = ts
        self.changes: list[Change] = []
        self.entries: list[Entry] = []

    def _next(self) -> tuple[int, float | None]:
        self.seq += 1
        if self.ts is not None:
            self.ts += 1.0
        return self.seq, self.ts

    def add(self, cls: type[Any], **fields: Any) -> list[Change]:
        seq, ts = self._next()
        return self.apply(cls(seq=seq, ts=ts, **fields))

    def cli(self, obj: dict[str, Any], stream: str | None = None) -> list[Change]:
        seq, ts = self._next()
        made = entry_from_frame(msgspec.json.encode(obj), seq=seq, ts=ts, stream=stream)
        assert made is not None
        return self.apply(made[0], made[1])

    def apply(self, entry: Entry, view: Any = None) -> list[Change]:
        self.entries.append(entry)
        got = self.fold.apply(entry, view)
        self.changes += got
        return got

    def moves(self, machine: str = "stream") -> list[tuple[str, str, str, str]]:
        return [(c.id, c.trigger, c.source, c.dest) for c in self.changes if c.machine == machine]


def started(session: str = "s1", pid: int = 7) -> Feed:
    feed = Feed()
    feed.add(SessionCreated, session_id=session, agent="claude")
    feed.add(ProcessSpawned, pid=pid, argv=["claude"])
    return feed


def dispatched(feed: Feed, stream: str = "t1", pid: int = 7) -> None:
    feed.add(TurnRequested, stream=stream, prompt="hello")
    feed.add(PromptWritten, stream=stream, pid=pid)


# --- a turn, end to end -------------------------------------------------------------------------------------


def test_a_turn_end_to_end() -> None:
    feed = started()
    fold = feed.fold
    assert fold.session_state == "idle"
    dispatched(feed)
    assert fold.active_stream == "t1" and fold.session_state == "busy"
    feed.cli(init("cli-abc"), "t1")
    feed.cli(MESSAGE_START, "t1")
    feed.cli(TEXT_START, "t1")
    for _ in range(3):
        assert feed.cli(DELTA, "t1") == []  # counted, never transitioned
    feed.cli(text(), "t1")
    got = feed.cli(
        result(total_cost_usd=0.25, usage={"input_tokens": 3, "output_tokens": 4}, session_id="cli-abc"), "t1"
    )
    assert [(c.machine, c.trigger, c.dest) for c in got] == [
        ("stream", "complete", "completed"),
        ("session", "turn_ended", "idle"),
    ]
    assert feed.moves() == [
        ("t1", NEW, "", "queued"),
        ("t1", "dispatch", "queued", "dispatched"),
        ("t1", "think", "dispatched", "thinking"),
        ("t1", "respond", "thinking", "responding"),
        ("t1", "complete", "responding", "completed"),
    ]
    s = fold.streams["t1"]
    assert (s.state, s.outcome, s.terminal, s.ended, s.reason) == ("completed", "completed", True, False, "")
    assert (s.deltas, s.requested_seq, s.pid) == (3, 3, 7)
    t = s.timing
    # turn.requested at 1003, prompt 1004, init 1005 -> ttfe 2 s; message_start 1006 -> ttft 3 s;
    # text 1007-1011
    assert (t.total_ms, t.ttfe_ms, t.thinking_ms, t.responding_ms) == (9000.0, 2000.0, 1000.0, 5000.0)
    assert (t.ttft_ms, t.stalled_ms) == (3000.0, 0.0)
    assert (t.input_tokens, t.output_tokens, t.cost_usd) == (3, 4, 0.25)
    assert fold.cli_session_id == "cli-abc"
    assert fold.unended() == [s] and fold.open_streams == [] and fold.active_stream is None
    feed.add(StreamEnded, stream="t1", outcome="completed", timing=t)
    assert s.ended and s.ended_seq == feed.seq and fold.unended() == []
    assert fold.violations == []


def test_session_moves_with_turns() -> None:
    feed = started()
    dispatched(feed)
    feed.cli(text(), "t1")
    feed.cli(result(), "t1")
    feed.add(SessionStopRequested, reason="bye")
    feed.add(ProcessExited, pid=7, returncode=0, expected=True)
    feed.add(SessionStopped)
    assert [(t, s, d) for _, t, s, d in feed.moves("session")] == [
        ("process_spawned", "starting", "idle"),
        ("turn_started", "idle", "busy"),
        ("turn_ended", "busy", "idle"),
        ("stop_requested", "idle", "stopping"),
        ("session_stopped", "stopping", "stopped"),
    ]
    assert feed.fold.violations == []


# --- violations ---------------------------------------------------------------------------------------------


def test_an_illegal_event_is_recorded_with_its_seq_and_never_raises() -> None:
    feed = started()
    feed.add(ProcessSpawned, pid=8, argv=[])  # a second spawn while idle
    dispatched(feed)
    feed.cli(tool_result("nope"), "t1")  # a tool result with no tool call
    assert [(v.seq, v.machine, v.trigger, v.state) for v in feed.fold.violations] == [
        (3, "session", "process_spawned", "idle"),
        (6, "stream", "tool_result", "dispatched"),
    ]
    assert feed.fold.streams["t1"].state == "dispatched"
    assert isinstance(feed.fold.violations[0], Violation)


def test_terminal_is_absorbing() -> None:
    feed = started()
    dispatched(feed)
    feed.cli(result(), "t1")
    feed.cli(text(), "t1")
    feed.add(Timeout, stream="t1", which="idle", after_s=5.0)
    s = feed.fold.streams["t1"]
    assert s.state == "completed"
    assert [v.trigger for v in feed.fold.violations] == ["respond", "time_out"]


# --- stream.ended ---------------------------------------------------------------------------------------------


def test_stream_ended_moves_an_open_stream_to_its_outcome() -> None:
    feed = started()
    dispatched(feed)
    feed.add(StreamEnded, stream="t1", outcome="failed", reason="server restarted", exit_status=3)
    s = feed.fold.streams["t1"]
    assert (s.state, s.reason, s.ended, s.exit_status) == ("failed", "server restarted", True, 3)
    assert feed.fold.unended() == [] and feed.fold.violations == []


def test_stream_ended_same_outcome_marks_ended_conflict_and_duplicates_are_violations() -> None:
    feed = started()
    dispatched(feed)
    dispatched(feed, "t2")
    feed.cli(result(), "t1")
    feed.add(StreamEnded, stream="t1", outcome="completed")
    feed.add(StreamEnded, stream="t1", outcome="completed")  # duplicate
    feed.add(TurnRequested, stream="t3", prompt="x")
    feed.add(StreamEnded, stream="nope", outcome="failed")  # unknown stream
    feed.cli(result(subtype="error_during_execution", is_error=True, errors=["boom"]), "t2")
    feed.add(StreamEnded, stream="t2", outcome="cancelled")  # conflicting
    fold = feed.fold
    assert fold.streams["t1"].ended and fold.streams["t2"].ended
    assert fold.streams["t2"].outcome == "failed"  # the first evidence wins
    assert [m.message.split(":")[0] for m in fold.violations] == [
        "a second stream.ended for stream t1",
        "stream.ended for a stream never opened",
        "stream.ended says cancelled but stream t2 already ended as failed",
    ]
    assert fold.unended() == []


# --- process, interrupt, timeout, session -----------------------------------------------------------------------


def test_process_exit_fails_the_streams_dispatched_to_it_and_leaves_queued_ones() -> None:
    feed = started()
    dispatched(feed)
    feed.add(TurnRequested, stream="t2", prompt="later")
    feed.add(ProcessExited, pid=7, returncode=1, stderr_tail=["Error: out of memory"])
    fold = feed.fold
    t1, t2 = fold.streams["t1"], fold.streams["t2"]
    assert (t1.state, t1.exit_status) == ("failed", 1)
    assert t1.reason == "process exited with status 1: Error: out of memory"
    assert t2.state == "queued"
    assert fold.session_state == "crashed"
    assert fold.unended() == [t1]
    # recovery: a new process, the queued turn runs on it
    feed.add(ProcessSpawned, pid=9, argv=[], resume="cli-1")
    feed.add(PromptWritten, stream="t2", pid=9)
    assert fold.session_state == "busy" and t2.pid == 9


def test_killed_process_reason_names_the_signal() -> None:
    feed = started()
    dispatched(feed)
    feed.add(ProcessExited, pid=7, returncode=-9)
    assert feed.fold.streams["t1"].reason == "process killed by signal 9"


def test_an_exit_of_another_process_leaves_streams_alone() -> None:
    feed = started()
    dispatched(feed)
    feed.add(ProcessExited, pid=99, returncode=0)
    assert feed.fold.streams["t1"].state == "dispatched"
    assert feed.fold.session_state == "busy"


def test_interrupt_then_result_is_cancelled_even_if_not_is_error() -> None:
    feed = started()
    dispatched(feed)
    feed.cli(thinking(), "t1")
    feed.add(InterruptRequested, stream="t1", by="client")
    assert feed.fold.session_state == "interrupting"
    feed.cli(result(subtype="error_during_execution", is_error=False), "t1")
    s = feed.fold.streams["t1"]
    assert s.outcome == "cancelled" and "interrupt requested by client" in s.reason
    assert feed.fold.session_state == "idle"


def test_interrupt_escalation_cancels_at_once_and_the_exit_crashes_the_session() -> None:
    feed = started()
    dispatched(feed)
    feed.add(InterruptRequested, stream="t1")
    feed.add(InterruptEscalated, stream="t1", signal="SIGTERM")
    s = feed.fold.streams["t1"]
    assert (s.outcome, s.reason) == ("cancelled", "interrupted: escalated to SIGTERM")
    assert feed.fold.session_state == "interrupting"
    feed.add(ProcessExited, pid=7, returncode=-15)
    assert feed.fold.session_state == "crashed"
    assert s.outcome == "cancelled" and s.exit_status is None
    assert feed.fold.violations == []


def test_exit_after_an_interrupt_request_is_cancelled_with_the_status() -> None:
    feed = started()
    dispatched(feed)
    feed.add(InterruptRequested)
    feed.add(ProcessExited, pid=7, returncode=-9)
    s = feed.fold.streams["t1"]
    assert (s.outcome, s.exit_status) == ("cancelled", -9)


def test_timeout_then_late_result() -> None:
    feed = started()
    dispatched(feed)
    feed.add(Timeout, stream="t1", which="first_event", after_s=30.0)
    s = feed.fold.streams["t1"]
    assert (s.outcome, s.reason) == ("timed_out", "first_event timeout after 30 s")
    assert feed.fold.session_state == "busy"  # the CLI is still working
    feed.cli(result(), "t1")
    assert s.outcome == "timed_out"
    assert [v.trigger for v in feed.fold.violations] == ["complete"]
    assert feed.fold.session_state == "idle"  # its result frees the CLI


def test_spawn_timeout_and_failure_end_queued_streams() -> None:
    feed = Feed()
    feed.add(SessionCreated, session_id="s", agent="claude")
    feed.add(TurnRequested, stream="t1", prompt="a")
    feed.add(Timeout, which="spawn", after_s=10.0)
    feed.add(TurnRequested, stream="t2", prompt="b")
    feed.add(ProcessSpawnFailed, error="claude: not found")
    fold = feed.fold
    assert fold.streams["t1"].outcome == "timed_out"
    assert (fold.streams["t2"].outcome, fold.streams["t2"].reason) == (
        "failed",
        "spawn failed: claude: not found",
    )
    assert fold.session_state == "crashed"


def test_session_stop_and_recovery_end_open_streams() -> None:
    feed = started()
    dispatched(feed)
    feed.add(SessionRecovered, ended=["t1"])
    assert feed.fold.streams["t1"].reason == "server restarted"
    assert feed.fold.session_state == "crashed"
    feed.add(TurnRequested, stream="t2", prompt="x")
    feed.add(SessionStopped, reason="deleted")
    assert (feed.fold.streams["t2"].outcome, feed.fold.streams["t2"].reason) == (
        "failed",
        "session stopped: deleted",
    )
    assert feed.fold.session_state == "stopped"
    assert feed.fold.open_streams == []


def test_late_prompt_written_is_not_an_event() -> None:
    feed = started()
    feed.add(TurnRequested, stream="t1", prompt="x")
    feed.cli(init(), "t1")  # the CLI's line overtook our bookkeeping entry
    feed.add(PromptWritten, stream="t1", pid=7)
    assert feed.moves()[1] == ("t1", "dispatch", "queued", "dispatched")
    assert len(feed.moves()) == 2
    assert feed.fold.violations == []


def test_first_content_for_a_queued_stream_moves_it_directly() -> None:
    feed = started()
    feed.add(TurnRequested, stream="t1", prompt="x")
    feed.cli(MESSAGE_START, "t1")
    assert feed.fold.streams["t1"].state == "thinking"
    assert feed.fold.session_state == "busy"


# --- tools, sub-agents, deltas -----------------------------------------------------------------------------------


def test_parallel_tool_calls_wait_for_the_last_result() -> None:
    feed = started()
    dispatched(feed)
    feed.cli(tool_use("a"), "t1")
    feed.cli(tool_use("b"), "t1")
    feed.cli(tool_result("a"), "t1")
    assert feed.fold.streams["t1"].state == "tool_running"
    feed.cli(tool_result("b"), "t1")
    assert feed.fold.streams["t1"].state == "thinking"
    assert feed.fold.streams["t1"].tool_calls == 2


def test_server_tools_count_but_need_no_tool_result() -> None:
    feed = started()
    dispatched(feed)
    feed.cli(assistant({"type": "server_tool_use", "id": "ws1", "name": "web_search", "input": {}}), "t1")
    feed.cli(text(), "t1")
    s = feed.fold.streams["t1"]
    assert s.state == "responding" and s.tool_calls == 1


def test_sub_agent_lines_do_not_move_the_stream() -> None:
    feed = started()
    dispatched(feed)
    feed.cli(tool_use("task1"), "t1")
    feed.cli(assistant({"type": "text", "text": "sub"}, parent="task1"), "t1")
    feed.cli(event({"type": "message_start", "message": {}}, parent="task1"), "t1")
    feed.cli(tool_use("sub-tool", parent="task1"), "t1")
    feed.cli(tool_result("sub-tool", parent="task1"), "t1")
    s = feed.fold.streams["t1"]
    assert s.state == "tool_running" and s.tool_calls == 1
    feed.cli(tool_result("task1"), "t1")
    assert s.state == "thinking"


def test_interrupt_notice_in_a_tool_result_is_evidence() -> None:
    feed = started()
    dispatched(feed)
    feed.cli(tool_use("a"), "t1")
    feed.cli(tool_result("a", content="[Request interrupted by user for tool use]"), "t1")
    feed.cli(result(subtype="error_during_execution", is_error=True), "t1")
    assert feed.fold.streams["t1"].outcome == "cancelled"


def test_thousands_of_deltas_fire_nothing() -> None:
    feed = started()
    dispatched(feed)
    feed.cli(TEXT_START, "t1")
    before = len(feed.changes)
    for _ in range(2000):
        feed.cli(DELTA, "t1")
    assert len(feed.changes) == before
    assert feed.fold.streams["t1"].deltas == 2000


# --- cost, ids ------------------------------------------------------------------------------------------------------


def test_cost_is_per_turn_and_restarts_with_each_process() -> None:
    feed = started()
    costs = []
    for i, total in enumerate([0.01, 0.03], start=1):
        dispatched(feed, f"t{i}")
        feed.cli(result(total_cost_usd=total), f"t{i}")
        costs.append(feed.fold.streams[f"t{i}"].timing.cost_usd)
    feed.add(ProcessExited, pid=7, returncode=0)
    feed.add(ProcessSpawned, pid=8, argv=[])
    dispatched(feed, "t3", pid=8)
    feed.cli(result(total_cost_usd=0.005), "t3")
    costs.append(feed.fold.streams["t3"].timing.cost_usd)
    assert costs == [0.01, 0.02, 0.005]


def test_cli_session_id_comes_from_init_and_result() -> None:
    feed = started()
    dispatched(feed)
    feed.cli(init("first"), "t1")
    assert feed.fold.cli_session_id == "first"
    feed.cli(result(session_id="second"), "t1")
    assert feed.fold.cli_session_id == "second"


def test_turn_requested_twice_for_one_id_is_a_violation() -> None:
    feed = started()
    dispatched(feed)
    feed.add(TurnRequested, stream="t1", prompt="again")
    assert feed.fold.violations[0].message == "turn.requested for existing stream t1"


def test_a_cli_line_for_an_unknown_stream_is_a_violation() -> None:
    feed = started()
    feed.cli(text(), "ghost")
    assert feed.fold.violations[0].message == "a CLI line for a stream never opened"


def test_views_are_decoded_on_demand() -> None:
    with_view, without = Feed(), Feed()
    for feed, keep in ((with_view, True), (without, False)):
        feed.add(SessionCreated, session_id="s", agent="claude")
        dispatched(feed)
        seq, ts = feed._next()
        made = entry_from_frame(msgspec.json.encode(text()), seq=seq, ts=ts, stream="t1")
        assert made is not None
        feed.apply(made[0], made[1] if keep else None)
    assert with_view.changes == without.changes


# --- raw transcripts -----------------------------------------------------------------------------------------------


def test_raw_transcript_turns_are_inferred() -> None:
    feed = Feed(ts=None)
    feed.cli({"type": "control_response", "response": {"subtype": "success", "request_id": "r1"}})
    feed.cli(init())
    feed.cli(text())
    feed.cli(result())
    feed.cli({"type": "system", "subtype": "task_notification", "status": "completed"})  # between turns
    feed.cli({"type": "system", "subtype": "status", "status": "compacting"})  # opens turn 2
    feed.cli(init())
    feed.cli(result())
    fold = feed.fold
    assert list(fold.streams) == ["t1", "t2"]
    assert [s.outcome for s in fold.streams.values()] == ["completed", "completed"]
    assert fold.streams["t2"].requested_seq == 6
    assert fold.session_state == "idle"
    assert fold.streams["t1"].timing.total_ms is None  # no timestamps: unknown, not invented
    assert fold.violations == []


def test_a_lone_result_is_a_turn() -> None:
    feed = Feed(ts=None)
    feed.cli(result(subtype="error_during_execution", is_error=True, errors=["No conversation found"]))
    s = feed.fold.streams["t1"]
    assert (s.outcome, s.reason) == ("failed", "No conversation found")
    assert feed.fold.session_state == "starting"


# --- outcome rules ---------------------------------------------------------------------------------------------------


def _result(**fields: Any) -> ResultMessage:
    return msgspec.convert(result(**fields), ResultMessage)


OUTCOMES = [
    pytest.param({}, None, None, ("completed", ""), id="success"),
    pytest.param(
        {
            "is_error": True,
            "result": "Failed to authenticate. API Error: 401",
            "terminal_reason": "api_error",
        },
        None,
        None,
        ("failed", "Failed to authenticate. API Error: 401"),
        id="api-error-is-success-with-is_error",
    ),
    pytest.param(
        {"is_error": True, "api_error_status": 529},
        None,
        None,
        ("failed", "API error (HTTP 529)"),
        id="http-status",
    ),
    pytest.param(
        {"subtype": "error_during_execution", "is_error": False},
        None,
        "[Request interrupted by user]",
        ("cancelled", "interrupted: [Request interrupted by user]"),
        id="interrupt-2.1.29",
    ),
    pytest.param(
        {"subtype": "error_during_execution", "is_error": True, "terminal_reason": "aborted_streaming"},
        None,
        None,
        ("cancelled", "interrupted: terminal_reason aborted_streaming"),
        id="interrupt-2.1.220",
    ),
    pytest.param(
        {"subtype": "error_during_execution", "is_error": True, "terminal_reason": "aborted_tools"},
        None,
        None,
        ("cancelled", "interrupted: terminal_reason aborted_tools"),
        id="aborted-tools",
    ),
    pytest.param(
        {"subtype": "error_during_execution", "is_error": True},
        "client",
        None,
        ("cancelled", "interrupted: interrupt requested by client"),
        id="interrupt-requested",
    ),
    pytest.param({}, "client", None, ("completed", ""), id="interrupt-lost-the-race"),
    pytest.param(
        {"subtype": "success", "is_error": False},
        None,
        "the CLI marked the answer aborted",
        ("cancelled", "interrupted: the CLI marked the answer aborted"),
        id="aborted-answer",
    ),
    pytest.param(
        {"subtype": "error_max_turns", "is_error": False},
        None,
        None,
        ("failed", "error_max_turns"),
        id="max-turns-old",
    ),
    pytest.param(
        {
            "subtype": "error_during_execution",
            "is_error": True,
            "num_turns": 0,
            "errors": ["No conversation found"],
        },
        None,
        None,
        ("failed", "No conversation found"),
        id="resume-lost",
    ),
]


@pytest.mark.parametrize(("fields", "interrupt_by", "aborted", "expected"), OUTCOMES)
def test_outcome_rules(
    fields: dict[str, Any], interrupt_by: str | None, aborted: str | None, expected: tuple[str, str]
) -> None:
    assert result_outcome(_result(**fields), interrupt_by=interrupt_by, aborted=aborted) == expected


# --- the shared machines ----------------------------------------------------------------------------------------------


def test_terminal_models_leave_the_machines_and_close_releases_the_rest() -> None:
    streams, sessions = stream_machine().live(), session_machine().live()
    feed = started()
    dispatched(feed)
    dispatched(feed, "t2")
    feed.cli(result(), "t1")
    assert stream_machine().live() == streams + 1  # t1 left when it completed; t2 is open
    assert session_machine().live() == sessions + 1
    feed.fold.close()
    assert (stream_machine().live(), session_machine().live()) == (streams, sessions)
    assert feed.fold.streams["t2"].state == "queued" or feed.fold.streams["t2"].state == "dispatched"


def test_a_collected_fold_releases_its_models() -> None:
    streams = stream_machine().live()
    feed = started()
    dispatched(feed)
    del feed
    gc.collect()
    assert stream_machine().live() == streams


# --- the pool ----------------------------------------------------------------------------------------------------------


def test_pool_warms_serves_degrades_and_drains() -> None:
    pool = PoolFold()
    seq = iter(range(1, 100))

    def apply(cls: type[Any], **fields: Any) -> list[Change]:
        return pool.apply(cls(seq=next(seq), ts=None, **fields))

    apply(PoolStarted, target=1)
    assert pool.state == "warming"
    apply(PoolSpawnStarted, key="k")
    assert [c.dest for c in apply(PoolProcessReady, key="k", pid=1)] == ["ready"]
    apply(PoolCheckout, key="k", pid=1, session="s1")
    assert pool.state == "warming"
    apply(PoolSpawnFailed, key="k", error="boom", retry_in_s=1.0)
    apply(PoolDegraded, reason="agent binary not found")
    assert (pool.state, pool.reason) == ("degraded", "agent binary not found")
    apply(PoolProcessReady, key="k", pid=2)
    assert (pool.state, pool.reason) == ("ready", None)
    apply(PoolProcessLost, key="k", pid=2, reason="crashed")
    assert pool.state == "warming"
    apply(PoolDrainRequested)
    apply(PoolProcessReady, key="k", pid=3)
    apply(PoolStopped)
    assert pool.state == "stopped" and pool.violations == []
    apply(PoolStarted, target=1)
    assert [v.trigger for v in pool.violations] == ["start"]
    assert pool.apply(Stderr(seq=99, ts=None, text="x")) == []


def test_pool_with_target_zero_is_ready_at_once() -> None:
    pool = PoolFold()
    pool.apply(PoolStarted(seq=1, ts=None, target=0))
    assert pool.state == "ready"
    pool.close()


# --- random entry sequences --------------------------------------------------------------------------------------------

STREAM_IDS = st.sampled_from(["a", "b", "c", None])
PIDS = st.sampled_from([0, 7, 8])
OUTCOMES_ALL: tuple[Outcome, ...] = ("completed", "failed", "cancelled", "timed_out")
OUTCOME = st.sampled_from(OUTCOMES_ALL)
CLI_LINES = st.sampled_from(
    [
        init(),
        text(),
        thinking(),
        tool_use("x"),
        tool_use("y"),
        tool_result("x"),
        tool_result("y"),
        tool_result("x", parent="x"),
        tool_use("z", parent="x"),
        notice(),
        assistant({"type": "text", "text": "cut"}, aborted=True),
        assistant({"type": "server_tool_use", "id": "w", "name": "web_search", "input": {}}),
        assistant({"type": "mystery_block"}),
        result(),
        result(is_error=True, result="API error"),
        result(subtype="error_during_execution", is_error=False),
        result(subtype="error_during_execution", is_error=True, terminal_reason="aborted_streaming"),
        result(total_cost_usd=0.5),
        MESSAGE_START,
        TEXT_START,
        THINK_START,
        DELTA,
        event({"type": "message_stop"}),
        event({"type": "weird_event"}),
        {"type": "system", "subtype": "status", "status": "compacting"},
        {"type": "system", "subtype": "task_notification", "status": "completed"},
        {"type": "control_response", "response": {"subtype": "success", "request_id": "r"}},
        {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed"}},
        {"type": "conversation_reset", "new_conversation_id": "n"},
        {"type": "active_goal", "value": 1},
        {"type": "result", "subtype": "success"},  # invalid: missing fields
        {"no_type": True},
    ]
)


@st.composite
def entries(draw: st.DrawFn) -> list[tuple[Entry, bool]]:
    """A random log: engine entries and CLI lines in any order, timestamps missing or out of order."""
    n = draw(st.integers(0, 40))
    out: list[tuple[Entry, bool]] = []
    for seq in range(1, n + 1):
        ts = draw(st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)))
        sid = draw(STREAM_IDS)
        kind = draw(st.integers(0, 17))
        base: dict[str, Any] = {"seq": seq, "ts": ts, "stream": sid}
        entry: Entry
        if kind <= 5:
            raw = msgspec.json.encode(draw(CLI_LINES)) if kind else b"not json at all"
            made = entry_from_frame(raw, **base)
            assert made is not None
            entry = made[0]
        elif kind == 6:
            entry = TurnRequested(**base, prompt="p")
        elif kind == 7:
            entry = PromptWritten(**base, pid=draw(PIDS))
        elif kind == 8:
            entry = InterruptRequested(**base)
        elif kind == 9:
            entry = InterruptEscalated(**base, signal="SIGKILL")
        elif kind == 10:
            entry = Timeout(
                **base, which=draw(st.sampled_from(["spawn", "first_event", "idle", "turn"])), after_s=1.0
            )
        elif kind == 11:
            entry = StreamEnded(**base, outcome=draw(OUTCOME), reason="r")
        elif kind == 12:
            entry = ProcessSpawned(**base, pid=draw(PIDS), argv=[])
        elif kind == 13:
            entry = ProcessExited(**base, pid=draw(PIDS), returncode=draw(st.sampled_from([0, 1, -9, None])))
        elif kind == 14:
            entry = ProcessSpawnFailed(**base, error="e")
        elif kind == 15:
            session_entries: list[Entry] = [
                SessionCreated(**base, session_id="s", agent="claude"),
                SessionStopRequested(**base),
                SessionStopped(**base),
            ]
            entry = draw(st.sampled_from(session_entries))
        elif kind == 16:
            entry = SessionRecovered(**base)
        else:
            entry = Stderr(**base, text="noise")
        out.append((entry, draw(st.booleans())))
    return out


def _check(fold: SessionFold, entry: AnyEntry, changes: list[Change], before: Mapping[str, str]) -> None:
    stream_states = set(stream_machine().states)
    terminal = stream_machine().terminal
    assert fold.session_state in session_machine().states
    for sid, s in fold.streams.items():
        assert s.state in stream_states
        assert s.terminal == (s.state in terminal)
        assert s.outcome == (s.state if s.terminal else None)
        # terminal is absorbing: a stream terminal before this entry has the same state after it
        if before.get(sid) in terminal:
            assert s.state == before[sid]
        if s.ended:
            assert s.terminal
        assert (sid in fold.open_streams) != s.terminal  # every stream is open or terminal
    assert sorted(s.id for s in fold.unended()) == sorted(
        s.id for s in fold.streams.values() if s.terminal and not s.ended
    )
    active = fold.active_stream
    assert active == next((sid for sid in fold.open_streams if fold.streams[sid].dispatched), None)
    if isinstance(entry, ProcessExited):
        # after a process exit, no stream dispatched to that process is left open
        for s in fold.streams.values():
            if s.dispatched and not s.terminal:
                assert s.pid is not None and entry.pid and s.pid != entry.pid
    for change in changes:
        assert change.seq == entry.seq and change.source != change.dest


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=entries())
def test_random_entry_sequences_never_raise_and_keep_the_invariants(log: list[tuple[Entry, bool]]) -> None:
    fold = SessionFold()
    twin = SessionFold()
    try:
        for entry, give_view in log:
            before = {sid: s.state for sid, s in fold.streams.items()}
            n_violations = len(fold.violations)
            view = None
            if give_view and isinstance(entry, CliLine):
                from turnstile.engine.log import view_of

                view = view_of(entry)
            changes = fold.apply(entry, view)
            _check(fold, entry, changes, before)
            assert all(v.seq == entry.seq for v in fold.violations[n_violations:])
            # the same entries, views decoded on demand, give the same changes: live == replay
            assert twin.apply(entry) == changes
        assert [(s.id, s.state, s.reason) for s in fold.streams.values()] == [
            (s.id, s.state, s.reason) for s in twin.streams.values()
        ]
    finally:
        fold.close()
        twin.close()


@settings(max_examples=200, deadline=None)
@given(
    kinds=st.lists(st.integers(0, 8), max_size=30),
    keys=st.lists(st.sampled_from(["k1", "k2"]), min_size=30, max_size=30),
    target=st.integers(0, 2),
)
def test_random_pool_entries_never_raise(kinds: list[int], keys: list[str], target: int) -> None:
    pool = PoolFold()
    pool.apply(PoolStarted(seq=0, ts=None, target=target))
    pool_states = set(pool_machine().states)
    for seq, (kind, key) in enumerate(zip(kinds, keys, strict=False), start=1):
        choices: list[Entry] = [
            PoolSpawnStarted(seq=seq, ts=None, key=key),
            PoolProcessReady(seq=seq, ts=None, key=key, pid=seq),
            PoolSpawnFailed(seq=seq, ts=None, key=key, error="e"),
            PoolCheckout(seq=seq, ts=None, key=key, pid=seq, session="s"),
            PoolProcessLost(seq=seq, ts=None, key=key, pid=seq, reason="r"),
            PoolDegraded(seq=seq, ts=None, reason="why"),
            PoolDrainRequested(seq=seq, ts=None),
            PoolStopped(seq=seq, ts=None),
            PoolStarted(seq=seq, ts=None, target=target),
        ]
        entry = choices[kind]
        was = pool.state
        pool.apply(entry)
        assert pool.state in pool_states
        if was == "stopped":
            assert pool.state == "stopped"
        if pool.state == "ready":
            assert pool.at_target
        assert (pool.reason is not None) == (pool.state == "degraded")
    pool.close()
