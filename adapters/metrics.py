"""Prometheus text exposition of the runtime's metrics snapshot (no client library needed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

__all__ = ["render_metrics"]

# Turn-timing histogram buckets, in seconds: sub-second answers up to hour-long agent turns.
BUCKETS_S: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _histogram(name: str, help_text: str, values_s: Iterable[float]) -> list[str]:
    values = sorted(values_s)
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    i = 0
    for bound in BUCKETS_S:
        while i < len(values) and values[i] <= bound:
            i += 1
        out.append(f'{name}_bucket{{le="{bound}"}} {i}')
    out.append(f'{name}_bucket{{le="+Inf"}} {len(values)}')
    out.append(f"{name}_sum {sum(values):.6f}")
    out.append(f"{name}_count {len(values)}")
    return out


def render_metrics(snapshot: Any, *, sse_lagged: int = 0) -> str:
    """Render the runtime's ``metrics()`` snapshot (a Struct or a mapping) as Prometheus text."""
    data: Mapping[str, Any] = snapshot if isinstance(snapshot, Mapping) else msgspec.to_builtins(snapshot)
    lines: list[str] = []

    def gauge_family(
        name: str, help_text: str, label: str, values: Mapping[str, Any], kind: str = "gauge"
    ) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for key, value in sorted(values.items()):
            lines.append(f'{name}{{{label}="{_label(str(key))}"}} {value}')

    def single(name: str, help_text: str, value: Any, kind: str = "gauge") -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {value}")

    gauge_family("turnstile_sessions", "Sessions by state.", "state", data.get("sessions_by_state", {}))
    gauge_family(
        "turnstile_streams_total",
        "Streams (turns) by outcome; open ones as 'open'.",
        "outcome",
        data.get("streams_by_outcome", {}),
        "counter",
    )
    pool_state = str(data.get("pool_state", "unknown"))
    lines.append("# HELP turnstile_pool_state The pool's state (1 for the current one).")
    lines.append("# TYPE turnstile_pool_state gauge")
    for state in ("warming", "ready", "degraded", "draining", "stopped"):
        lines.append(f'turnstile_pool_state{{state="{state}"}} {1 if state == pool_state else 0}')
    single(
        "turnstile_pool_warm_processes", "Warm processes ready to be checked out.", data.get("pool_warm", 0)
    )
    single(
        "turnstile_pool_target",
        "Warm processes the pool aims to keep per configuration.",
        data.get("pool_target", 0),
    )
    single(
        "turnstile_subscribers",
        "Live log subscribers (SSE, WebSocket, in-process).",
        data.get("subscribers", 0),
    )
    single(
        "turnstile_lagged_subscribers_total",
        "Subscribers that fell behind their buffer and resumed from the log.",
        int(data.get("lagged_subscribers", 0)) + sse_lagged,
        "counter",
    )
    single("turnstile_processes", "Agent processes alive (sessions and pool).", data.get("processes", 0))
    timings = data.get("turn_timings", [])
    for field, help_text in (
        ("total_ms", "Turn duration from request to terminal entry."),
        ("ttfe_ms", "Time from the turn request to the first event of the CLI."),
    ):
        values = [t[field] / 1000.0 for t in timings if isinstance(t, Mapping) and t.get(field) is not None]
        name = "turnstile_turn_seconds" if field == "total_ms" else "turnstile_turn_first_event_seconds"
        lines += _histogram(name, help_text, values)
    return "\n".join(lines) + "\n"
