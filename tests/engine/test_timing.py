"""Turn timing from time spent in each state: the clock, the percentages, tokens and cost."""

from __future__ import annotations

from turnstile.engine.timing import StateClock, TurnTiming, tokens_of, turn_cost

PHASES = {
    "queued": "waiting",
    "dispatched": "waiting",
    "thinking": "thinking",
    "responding": "responding",
    "tool_running": "tool",
    "completed": "done",
    "failed": "done",
}


def test_time_in_each_state_is_the_timing() -> None:
    clock = StateClock("queued", 100.0, PHASES)
    clock.enter("dispatched", 100.5)
    clock.enter("thinking", 102.0)  # first event after 2 s
    clock.enter("tool_running", 103.0)
    clock.enter("thinking", 108.0)
    clock.enter("responding", 108.5)
    clock.enter("completed", 110.0)
    t = clock.timing(999.0, tool_calls=1, input_tokens=10, output_tokens=5, cost_usd=0.01)
    assert t == TurnTiming(
        total_ms=10000.0,
        ttfe_ms=2000.0,
        thinking_ms=1500.0,
        responding_ms=1500.0,
        tool_ms=5000.0,
        tool_calls=1,
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.01,
        ttft_ms=2000.0,  # no line was noted apart: the first output is the first event
        stalled_ms=0.0,
    )
    assert (t.ttfe_pct, t.thinking_pct, t.tool_pct, t.responding_pct) == (20.0, 15.0, 50.0, 15.0)
    assert clock.stopped


def test_live_timing_runs_up_to_now() -> None:
    clock = StateClock("queued", 10.0, PHASES)
    clock.enter("thinking", 11.0)
    t = clock.timing(14.0)
    assert (t.total_ms, t.ttfe_ms, t.thinking_ms) == (4000.0, 1000.0, 3000.0)
    assert not clock.stopped
    assert clock.timing(None).total_ms is None  # no "now" known: unknown, not invented


def test_unknown_timestamps_make_durations_unknown_but_keep_counts() -> None:
    clock = StateClock("queued", None, PHASES)
    clock.enter("responding", None)
    clock.enter("completed", None)
    t = clock.timing(None, tool_calls=2, cost_usd=0.5)
    assert t.total_ms is None and t.ttfe_ms is None and t.thinking_ms is None and t.tool_ms is None
    assert (t.tool_calls, t.cost_usd) == (2, 0.5)
    assert t.thinking_pct is None


def test_one_missing_timestamp_taints_the_stream() -> None:
    clock = StateClock("queued", 1.0, PHASES)
    clock.enter("thinking", None)
    clock.enter("completed", 5.0)
    assert clock.timing(5.0).total_ms is None


def test_a_stream_that_never_streamed_has_no_time_to_first_event() -> None:
    clock = StateClock("queued", 1.0, PHASES)
    clock.enter("failed", 3.0)
    t = clock.timing(9.0)
    assert (t.total_ms, t.ttfe_ms, t.thinking_ms) == (2000.0, None, 0.0)


def test_time_going_backwards_counts_as_zero() -> None:
    clock = StateClock("queued", 10.0, PHASES)
    clock.enter("thinking", 9.0)
    clock.enter("completed", 8.0)
    t = clock.timing(None)
    assert t.total_ms == 0.0 and t.thinking_ms == 0.0 and t.ttfe_ms == 0.0


def test_pct_of_zero_total_is_unknown() -> None:
    assert TurnTiming(total_ms=0.0, thinking_ms=0.0).thinking_pct is None


def test_tokens_of_usage() -> None:
    usage = {
        "input_tokens": 2,
        "cache_creation_input_tokens": 37,
        "cache_read_input_tokens": 32623,
        "output_tokens": 4,
    }
    assert tokens_of(usage) == (32662, 4)
    assert tokens_of(None) == (None, None)
    assert tokens_of({"output_tokens": "x"}) == (None, None)


def test_cost_is_the_difference_of_running_totals() -> None:
    assert turn_cost(0.0527325, None) == 0.0527325
    assert turn_cost(0.0634094, 0.0527325) == 0.0106769
    assert turn_cost(0.0103129, 0.0103129) == 0.0  # an interrupted turn that cost nothing new
    assert turn_cost(0.002, 0.05) == 0.002  # the running total restarted (/clear, new process)
    assert turn_cost(None, 0.05) is None
