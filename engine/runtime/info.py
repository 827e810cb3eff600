"""What the runtime tells its callers: plain, frozen msgspec Structs that encode straight to JSON.

:class:`SessionInfo` (with its :class:`TurnInfo` list) is what an API shows for a session;
:class:`Readiness` answers "can this server take work now?" without ever blocking; :class:`MetricsSnapshot`
is a cheap point-in-time count of sessions, streams, pool, subscribers and turn timings.
"""

from __future__ import annotations

from typing import Any

import msgspec

from turnstile.engine.runtime.pool import PoolStatus
from turnstile.engine.timing import TurnTiming

__all__ = [
    "TIMING_BUCKETS_MS",
    "MetricsSnapshot",
    "PoolStatus",
    "Readiness",
    "SessionInfo",
    "TimingHistogram",
    "TimingSummary",
    "TurnInfo",
]


class TurnInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One turn (stream): its state, and once ended its outcome, reason, timing and exit status.

    ``reason`` is exactly the ``reason`` of the turn's ``stream.ended`` entry: ``""`` when there is nothing
    to say (a completed turn, or one still running) — the same value the log and SSE carry.
    """

    id: str
    state: str
    outcome: str | None = None
    reason: str = ""
    ended: bool = False
    timing: TurnTiming | None = None
    exit_status: int | None = None


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A session as an API shows it. ``agent`` hides ``env`` values (they may hold secrets).

    ``title`` is the name someone gave it (``session.titled``; None: show ``first_prompt``, the start of
    its first turn's prompt). ``last_activity``: the time of its latest log entry. ``restarted``: it is
    ``crashed`` only because the server restarted — the next turn resumes the conversation.
    """

    id: str
    state: str
    agent: dict[str, Any]
    pool_key: str
    pid: int | None
    cli_session_id: str | None
    created_at: float
    last_seq: int
    active_stream: str | None
    queued: int
    turns: list[TurnInfo]
    resume_failed: str | None = None
    log_error: str | None = None
    title: str | None = None
    first_prompt: str | None = None
    last_activity: float | None = None
    restarted: bool = False
    #: The node that runs the session when servers share a Redis log (``--node-id``), else None.
    node: str | None = None


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the server can take work. ``reasons`` says why not; a degraded pool alone is not a reason
    (turns still get cold processes) but is reported in ``pool``. ``damaged`` lists session logs that
    cannot be read back (session id → the file, line and what to do): those sessions answer
    ``SessionDamaged``, the others work, so they do not make the server unready."""

    ready: bool
    reasons: list[str]
    pool: PoolStatus
    recovering: bool = False
    damaged: dict[str, str] = {}


class TimingSummary(msgspec.Struct, frozen=True, kw_only=True):
    """Percentiles (milliseconds) over the most recent ended turns."""

    count: int
    total_p50_ms: float | None = None
    total_p95_ms: float | None = None
    total_max_ms: float | None = None
    ttfe_p50_ms: float | None = None
    ttfe_p95_ms: float | None = None


TIMING_BUCKETS_MS: tuple[float, ...] = (
    100.0,
    250.0,
    500.0,
    1e3,
    2.5e3,
    5e3,
    10e3,
    30e3,
    60e3,
    120e3,
    300e3,
    600e3,
    1800e3,
    3600e3,
)
"""Upper bounds (ms) of the turn-timing histograms: sub-second answers up to hour-long agent turns."""


class TimingHistogram(msgspec.Struct, frozen=True, kw_only=True):
    """Cumulative counts of every ended turn since start: ``counts[i]`` turns took <= ``bounds_ms[i]``."""

    bounds_ms: tuple[float, ...] = TIMING_BUCKETS_MS
    counts: list[int]
    count: int
    sum_ms: float


class MetricsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Counts at one instant. ``streams_by_outcome`` counts every ended stream the runtime has seen (also
    those read back from logs at startup); ``lagged_subscribers`` counts subscribers ended for lagging;
    ``damaged_logs`` counts session logs that could not be read back (see :class:`Readiness`)."""

    sessions_by_state: dict[str, int]
    streams_open: int
    streams_by_outcome: dict[str, int]
    pool: PoolStatus
    pool_spawns: int
    agent_processes: int
    subscribers: int
    lagged_subscribers: int
    turn_timings: TimingSummary
    total_histogram: TimingHistogram | None = None
    ttfe_histogram: TimingHistogram | None = None
    damaged_logs: int = 0
