"""Replay a recorded log through the machines, and render what happened (sans-IO).

``turnstile replay FILE`` runs a Turnstile log — or a raw CLI transcript — through the same fold the
server runs live (:class:`engine.fold.SessionFold`, and :class:`engine.fold.PoolFold` for the pool's
log), then prints one row per stream: its outcome and reason, where its time went, its tool calls and
cost. The output is a pure function of the input, byte for byte, so it can be kept as a *golden* file
and compared on every change (:func:`golden_diff`): a spec or fold change that alters what a recorded
log replays to is caught, as in Temporal's replay tests.

Memory stays flat in the number of entries: entries stream through the fold one at a time and only
per-stream summaries are kept (the trace, when asked for as text, is handed out change by change).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from turnstile.engine.fold import POOL_ENTRIES, Change, PoolFold, SessionFold, StreamView, Violation
from turnstile.engine.log import CliDecodeError, CliLine, CliOversized, LogRepaired, Outcome
from turnstile.engine.timing import TurnTiming
from turnstile.engine.transcript import Item

__all__ = [
    "ReplayReport",
    "Replayer",
    "StreamSummary",
    "TraceStep",
    "golden_diff",
    "render_json",
    "render_table",
    "render_trace_line",
    "replay",
    "summarize",
]


class TraceStep(msgspec.Struct, frozen=True, kw_only=True):
    """One state change, as listed by ``--trace`` (``source`` is empty when a model joined its machine)."""

    seq: int
    machine: str
    id: str
    trigger: str
    source: str
    dest: str


class Shares(msgspec.Struct, frozen=True, kw_only=True):
    """Each phase of a turn as a percentage of its total time (None when unknown)."""

    ttfe: float | None
    thinking: float | None
    responding: float | None
    tool: float | None
    ttft: float | None = None
    stalled: float | None = None


class StreamSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One stream after the replay; ``outcome`` is None for a stream the log leaves open (see ``state``)."""

    id: str
    outcome: Outcome | None
    state: str
    reason: str
    timing: TurnTiming
    pct: Shares
    tool_calls: int
    deltas: int
    ended: bool
    requested_seq: int | None
    ended_seq: int | None
    exit_status: int | None


class PoolSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The pool machine after the replay of a pool log."""

    state: str
    reason: str | None
    target: int
    warm: dict[str, int]


class ReplayReport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a replay found. ``changes`` is filled only when the trace was asked to be kept."""

    entries: int
    valid_entries: int
    session_state: str
    cli_session_id: str | None
    streams: list[StreamSummary]
    violations: list[Violation]
    pool: PoolSummary | None = None
    changes: list[TraceStep] | None = None


_DAMAGED: Final = frozenset({CliDecodeError, CliOversized, LogRepaired})


def summarize(view: StreamView) -> StreamSummary:
    """A stream's summary as the replay reports it."""
    timing = view.timing
    pct = timing.pct
    return StreamSummary(
        id=view.id,
        outcome=view.outcome,
        state=view.state,
        reason=view.reason,
        timing=timing,
        pct=Shares(
            ttfe=pct(timing.ttfe_ms),
            thinking=pct(timing.thinking_ms),
            responding=pct(timing.responding_ms),
            tool=pct(timing.tool_ms),
            ttft=pct(timing.ttft_ms),
            stalled=pct(timing.stalled_ms),
        ),
        tool_calls=view.tool_calls,
        deltas=view.deltas,
        ended=view.ended,
        requested_seq=view.requested_seq,
        ended_seq=view.ended_seq,
        exit_status=view.exit_status,
    )


class Replayer:
    """An incremental replay: :meth:`feed` items in as many calls as suits the caller (a server yields to
    other tasks between chunks), then take the :meth:`report`. :func:`replay` is the one-call form.

    ``on_change`` sees each state change as it happens; ``keep_trace`` also keeps them in the report.
    Call :meth:`close` when done (it takes the fold's models out of the shared machines).
    """

    def __init__(
        self, *, on_change: Callable[[Change], None] | None = None, keep_trace: bool = False
    ) -> None:
        self._fold = SessionFold()
        self._pool = PoolFold()
        self._on_change = on_change
        self._kept: list[TraceStep] | None = [] if keep_trace else None
        self.entries = 0
        self.damaged = 0

    def feed(self, items: Iterable[Item], on_item: Callable[[int], None] | None = None) -> None:
        """Fold ``items`` (from :func:`engine.transcript.read_entries`); ``on_item`` gets the count so far."""
        fold, pool, on_change, kept = self._fold, self._pool, self._on_change, self._kept
        traced = on_change is not None or kept is not None
        apply = fold.apply
        for _, entry, view in items:
            self.entries += 1
            changes = apply(entry, view)
            et = type(entry)
            if et is not CliLine:  # CLI lines (most entries) are neither damaged nor the pool's
                if et in _DAMAGED:
                    self.damaged += 1
                elif et in POOL_ENTRIES:
                    changes += pool.apply(entry)
            if traced:
                for change in changes:
                    if on_change is not None:
                        on_change(change)
                    if kept is not None:
                        kept.append(TraceStep(**change._asdict()))
            if on_item is not None:
                on_item(self.entries)

    def report(self) -> ReplayReport:
        """What the items fed so far replay to."""
        fold, pool = self._fold, self._pool
        return ReplayReport(
            entries=self.entries,
            valid_entries=self.entries - self.damaged,
            session_state=fold.session_state,
            cli_session_id=fold.cli_session_id,
            streams=[summarize(view) for view in fold.streams.values()],
            violations=[*fold.violations, *pool.violations],
            pool=PoolSummary(state=pool.state, reason=pool.reason, target=pool.target, warm=dict(pool.warm))
            if pool.entries
            else None,
            changes=list(self._kept) if self._kept is not None else None,
        )

    def close(self) -> None:
        """Release the folds' machine models."""
        self._fold.close()
        self._pool.close()


def replay(
    items: Iterable[Item],
    *,
    on_change: Callable[[Change], None] | None = None,
    keep_trace: bool = False,
    on_item: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Fold every item (from :func:`engine.transcript.read_entries`) and report the end state.

    ``on_change`` sees each state change as it happens (``--trace`` prints them without keeping them);
    ``keep_trace`` also keeps them in the report (``--json --trace``). ``on_item`` is called with the
    running count of entries (for a progress bar).
    """
    replayer = Replayer(on_change=on_change, keep_trace=keep_trace)
    try:
        replayer.feed(items, on_item)
        return replayer.report()
    finally:
        replayer.close()


# --- rendering ---------------------------------------------------------------------------------------------


def render_trace_line(change: Change) -> str:
    """One ``--trace`` line: ``seq machine id: source -> dest (trigger)``."""
    source = change.source or "(new)"
    where = f"{change.seq:>7}  {change.machine:<7}  {change.id:<12}"
    return f"{where}  {source} -> {change.dest}  ({change.trigger})"


def _duration(ms: float | None, pct: float | None = None) -> str:
    if ms is None:
        return "?"
    text = f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"
    return f"{text} ({pct:.0f}%)" if pct is not None else text


def _cost(usd: float | None) -> str:
    return "?" if usd is None else f"${usd:.4f}"


def _unknown_legend(report: ReplayReport) -> str | None:
    """The footnote that says why a cell reads "?" (only the reasons this table shows)."""
    timings = [s.timing for s in report.streams]
    why = []
    if any(t.total_ms is None for t in timings):
        why.append(
            "ttfe, thinking, tools, total: the log has no times (a transcript recorded without _t; "
            "ttft and stalled neither)"
        )
    if any(t.total_ms is not None and t.ttfe_ms is None for t in timings):
        why.append("ttfe: no CLI event came before the stream ended")
    if any(t.total_ms is not None and t.ttft_ms is None for t in timings):
        why.append("ttft: the model wrote nothing before the stream ended")
    if any(t.cost_usd is None for t in timings):
        why.append("cost: no result line reported one")
    return f"? = not in the log — {'; '.join(why)}" if why else None


_COLUMNS: Final = (
    "stream",
    "outcome",
    "ttfe",
    "ttft",
    "thinking",
    "tools",
    "stalled",
    "total",
    "calls",
    "cost",
    "reason",
)


def render_table(report: ReplayReport) -> str:
    """The text report: a table of streams, then the session (and pool) state, then any violations."""
    rows = [list(_COLUMNS)]
    for s in report.streams:
        t = s.timing
        rows.append(
            [
                s.id,
                s.outcome or f"open ({s.state})",
                _duration(t.ttfe_ms),
                _duration(t.ttft_ms),
                _duration(t.thinking_ms, s.pct.thinking),
                _duration(t.tool_ms, s.pct.tool),
                _duration(t.stalled_ms, s.pct.stalled),
                _duration(t.total_ms),
                str(s.tool_calls),
                _cost(t.cost_usd),
                s.reason,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    legend = _unknown_legend(report)
    if legend:
        lines.append(legend)
    counts: dict[str, int] = {}
    for s in report.streams:
        key = s.outcome or "open"
        counts[key] = counts.get(key, 0) + 1
    tally = ", ".join(f"{n} {k}" for k, n in counts.items()) or "none"
    lines.append("")
    n = len(report.streams)
    streams = f"{n} stream{'s' if n != 1 else ''} ({tally})"
    lines.append(f"{report.entries} entries, {streams}; session {report.session_state}")
    if report.pool is not None:
        reason = f" ({report.pool.reason})" if report.pool.reason else ""
        lines.append(f"pool {report.pool.state}{reason}")
    if report.violations:
        n = len(report.violations)
        lines.append(f"{n} violation{'s' if n != 1 else ''}:")
        for v in report.violations:
            state = f" in {v.state}" if v.state else ""
            lines.append(f"  seq {v.seq}: {v.machine} {v.id} {v.trigger or '-'}{state}: {v.message}")
    else:
        lines.append("no violations")
    return "\n".join(lines) + "\n"


_json = msgspec.json.Encoder(order="deterministic")


def render_json(report: ReplayReport) -> str:
    """The report as one indented JSON object (``streams``, ``violations``, ...), keys in a fixed order."""
    return msgspec.json.format(_json.encode(report), indent=2).decode("utf-8") + "\n"


def golden_diff(actual: str, golden: str, *, name: str = "golden") -> str | None:
    """A unified diff from ``golden`` to ``actual``, or None when they are identical."""
    if actual == golden:
        return None
    diff = difflib.unified_diff(
        golden.splitlines(keepends=True),
        actual.splitlines(keepends=True),
        fromfile=f"{name} (expected)",
        tofile="replay (actual)",
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in diff)
    return text or "the outputs differ only in line endings\n"
