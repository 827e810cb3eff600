"""Turn timing: where a turn's time went, derived from time spent in each stream state (sans-IO).

:class:`TurnTiming` is the record the fold attaches to every stream (and that ``stream.ended`` carries).
It is computed by a :class:`StateClock`, which the fold moves along with the stream machine: each stream
state names the *phase* its time counts for (``specs/stream.toml``)::

    queued, dispatched          -> waiting     (ttft_ms = time until the first streaming state)
    thinking                    -> thinking    thinking_ms
    responding                  -> responding  responding_ms
    tool_running                -> tool        tool_ms
    stalled                     -> stalled     stalled_ms (API retries and stalls: never "thinking")
    completed, failed, ...      -> done        (the clock stops: total_ms = end - start)

Two first times are reported apart, because they can be minutes apart (a turn whose API calls are
retried gets ``system/init`` at once and its first token much later): ``ttfe_ms`` is the time to the
first CLI event of the turn (any line the CLI printed for it, :meth:`StateClock.event`), ``ttft_ms`` the
time to the model's first output (the first thinking, responding or tool state).

Durations are milliseconds rounded to 0.1 ms. A duration is ``None`` when the log has no timestamps to
derive it from (a raw transcript without the recorder's ``_t``): timing is reported as unknown, never
invented. A timestamp that goes backwards (clock skew between recorders) counts as zero time.

Tokens and cost come from the turn's ``result``: ``input_tokens`` counts every input token the model read
(uncached + cache writes + cache reads), ``output_tokens`` the output; the CLI's ``total_cost_usd`` is a
running total per process, so a turn's cost is the difference from the previous result of the same
process (:func:`turn_cost`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

__all__ = ["StateClock", "TurnTiming", "tokens_of", "turn_cost"]


class TurnTiming(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=False):
    """Per-turn timing, like the seed console's "Done, 388.4 s total, 37 tools"."""

    total_ms: float | None = None
    ttfe_ms: float | None = None
    thinking_ms: float | None = None
    responding_ms: float | None = None
    tool_ms: float | None = None
    tool_calls: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    #: Time to the model's first output (``ttfe_ms`` is the time to the CLI's first line of the turn).
    ttft_ms: float | None = None
    #: Time spent waiting on the model API: retries (``system/api_retry``) and stalls.
    stalled_ms: float | None = None

    def pct(self, part_ms: float | None) -> float | None:
        """``part_ms`` as a percentage of ``total_ms`` (None when either is unknown or total is 0)."""
        if part_ms is None or not self.total_ms:
            return None
        return round(100.0 * part_ms / self.total_ms, 1)

    @property
    def ttfe_pct(self) -> float | None:
        """Share of the turn spent waiting for the first event."""
        return self.pct(self.ttfe_ms)

    @property
    def ttft_pct(self) -> float | None:
        """Share of the turn spent waiting for the model's first output."""
        return self.pct(self.ttft_ms)

    @property
    def stalled_pct(self) -> float | None:
        """Share of the turn spent waiting on a retried or stalled model API."""
        return self.pct(self.stalled_ms)

    @property
    def thinking_pct(self) -> float | None:
        """Share of the turn spent thinking."""
        return self.pct(self.thinking_ms)

    @property
    def tool_pct(self) -> float | None:
        """Share of the turn spent running tools."""
        return self.pct(self.tool_ms)

    @property
    def responding_pct(self) -> float | None:
        """Share of the turn spent writing the answer."""
        return self.pct(self.responding_ms)


_STREAMING_PHASES = frozenset({"thinking", "responding", "tool"})


def _ms(seconds: float) -> float:
    return round(max(seconds, 0.0) * 1000.0, 1)


class StateClock:
    """Accumulates the time one stream spends in each state.

    ``phases`` maps each state to its phase (``waiting``, ``thinking``, ``responding``, ``tool``,
    ``stalled``, ``done``); entering a ``done`` state stops the clock. Times are seconds (``None`` when
    unknown).
    """

    __slots__ = (
        "_end",
        "_entered",
        "_event",
        "_first",
        "_phases",
        "_spent",
        "_start",
        "_state",
        "_unknown",
    )

    def __init__(self, state: str, ts: float | None, phases: Mapping[str, str]) -> None:
        self._phases = phases
        self._state = state
        self._start = ts
        self._entered = ts
        self._end: float | None = None
        self._first: float | None = None
        self._event: float | None = None
        self._spent: dict[str, float] = {}
        self._unknown = ts is None
        self._note_first(state, ts)

    def event(self, ts: float | None) -> None:
        """The CLI printed a line of this turn at ``ts`` (the first one is the turn's first event)."""
        if self._event is None and ts is not None and self._end is None:
            self._event = ts

    def enter(self, state: str, ts: float | None) -> None:
        """The stream moved to ``state`` at ``ts`` (which may be earlier than the last entry's time: a
        stall notice dates the stall from the last progress; never earlier than the last move)."""
        if ts is not None and self._entered is not None and ts < self._entered:
            ts = self._entered
        if ts is None or self._entered is None:
            self._unknown = True
        elif not self._unknown:
            spent = self._spent
            spent[self._state] = spent.get(self._state, 0.0) + (ts - self._entered)
        self._state = state
        self._entered = ts
        phase = self._phases.get(state)
        if self._first is None and phase in _STREAMING_PHASES:
            self._first = ts
            if self._event is None:
                self._event = ts  # the model's first output is a CLI event too
        if phase == "done":
            self._end = ts

    def _note_first(self, state: str, ts: float | None) -> None:
        if self._first is None and self._phases.get(state) in _STREAMING_PHASES:
            self._first = self._event = ts

    @property
    def stopped(self) -> bool:
        """Whether the stream reached a terminal (``done``) state."""
        return self._phases.get(self._state) == "done"

    def timing(
        self,
        now: float | None,
        *,
        tool_calls: int = 0,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
    ) -> TurnTiming:
        """The timing so far: up to the terminal state, or up to ``now`` for a stream still open."""
        phases = self._phases
        stopped = phases.get(self._state) == "done"
        end = self._end if stopped else now
        start = self._start
        entered = self._entered
        if self._unknown or start is None or end is None or entered is None:
            return TurnTiming(
                tool_calls=tool_calls,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost_usd,
            )
        by_phase = {"thinking": 0.0, "responding": 0.0, "tool": 0.0, "stalled": 0.0}
        for state, seconds in self._spent.items():
            phase = phases.get(state, "")
            if phase in by_phase:
                by_phase[phase] += max(seconds, 0.0)
        if not stopped:  # the current state is still running
            phase = phases.get(self._state, "")
            if phase in by_phase:
                by_phase[phase] += max(end - entered, 0.0)
        first_event = self._event
        if first_event is not None and first_event > end:
            first_event = None  # printed after the turn ended: not this turn's first event
        return TurnTiming(
            total_ms=_ms(end - start),
            ttfe_ms=_ms(first_event - start) if first_event is not None else None,
            thinking_ms=_ms(by_phase["thinking"]),
            responding_ms=_ms(by_phase["responding"]),
            tool_ms=_ms(by_phase["tool"]),
            tool_calls=tool_calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            ttft_ms=_ms(self._first - start) if self._first is not None else None,
            stalled_ms=_ms(by_phase["stalled"]),
        )


def tokens_of(usage: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    """``(input_tokens, output_tokens)`` of a result's ``usage`` (input includes cache writes and reads)."""
    if not usage:
        return None, None
    total: int | None = None
    for key in _INPUT_KEYS:
        part = usage.get(key)
        if isinstance(part, int):
            total = (0 if total is None else total) + part  # as sum() does: a lone bool counts as 1
    output = usage.get("output_tokens")
    return total, (output if isinstance(output, int) else None)


_INPUT_KEYS: Final = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def turn_cost(total_cost_usd: float | None, previous_total: float | None) -> float | None:
    """A turn's cost from the CLI's running total and the previous result's total on the same process.

    A total lower than the previous one means the running total restarted (``/clear``, a new process the
    log did not announce): the whole total is this turn's. Rounded to 1e-9 USD against float noise.
    """
    if total_cost_usd is None:
        return None
    if previous_total is None or total_cost_usd < previous_total:
        return round(total_cost_usd, 9)
    return round(total_cost_usd - previous_total, 9)
