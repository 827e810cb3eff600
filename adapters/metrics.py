"""Prometheus text exposition of the runtime's metrics snapshot (no client library needed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["render_metrics"]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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
    pool: Mapping[str, Any] = data.get("pool", {}) or {}
    pool_state = str(pool.get("state", "unknown"))
    lines.append("# HELP turnstile_pool_state The pool's state (1 for the current one).")
    lines.append("# TYPE turnstile_pool_state gauge")
    for state in ("warming", "ready", "degraded", "draining", "stopped"):
        lines.append(f'turnstile_pool_state{{state="{state}"}} {1 if state == pool_state else 0}')
    single("turnstile_pool_warm_processes", "Warm processes ready to be checked out.", pool.get("ready", 0))
    single("turnstile_pool_warming_processes", "Processes the pool is starting.", pool.get("warming", 0))
    single("turnstile_pool_target", "Warm processes the pool keeps per configuration.", pool.get("target", 0))
    single(
        "turnstile_pool_spawns_total",
        "Processes the pool has spawned.",
        data.get("pool_spawns", 0),
        "counter",
    )
    single("turnstile_streams_open", "Streams (turns) not ended yet.", data.get("streams_open", 0))
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
    single(
        "turnstile_agent_processes",
        "Agent processes alive (sessions and pool).",
        data.get("agent_processes", 0),
    )
    single("turnstile_damaged_logs", "Session logs that cannot be read back.", data.get("damaged_logs", 0))
    timings = data.get("turn_timings", {}) or {}
    if isinstance(timings, Mapping):
        lines += _summary(
            "turnstile_turn_seconds",
            "Turn duration from request to terminal entry (recent turns).",
            timings.get("count", 0),
            {
                "0.5": timings.get("total_p50_ms"),
                "0.95": timings.get("total_p95_ms"),
                "1": timings.get("total_max_ms"),
            },
        )
        lines += _summary(
            "turnstile_turn_first_event_seconds",
            "Time from the turn request to the CLI's first event (recent turns).",
            timings.get("count", 0),
            {"0.5": timings.get("ttfe_p50_ms"), "0.95": timings.get("ttfe_p95_ms")},
        )
    for key, name, help_text in (
        (
            "total_histogram",
            "turnstile_turn_duration_seconds",
            "Turn duration from request to terminal entry.",
        ),
        (
            "ttfe_histogram",
            "turnstile_turn_ttfe_seconds",
            "Time from the turn request to the CLI's first event.",
        ),
    ):
        hist = data.get(key)
        if isinstance(hist, Mapping):
            lines += _histogram(name, help_text, hist)
    return "\n".join(lines) + "\n"


def _histogram(name: str, help_text: str, hist: Mapping[str, Any]) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bound_ms, count in zip(hist["bounds_ms"], hist["counts"], strict=True):
        out.append(f'{name}_bucket{{le="{bound_ms / 1000.0:g}"}} {count}')
    out.append(f'{name}_bucket{{le="+Inf"}} {hist["count"]}')
    out.append(f"{name}_sum {hist['sum_ms'] / 1000.0:.6f}")
    out.append(f"{name}_count {hist['count']}")
    return out


def _summary(name: str, help_text: str, count: int, quantiles_ms: Mapping[str, float | None]) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} summary"]
    for q, value in quantiles_ms.items():
        if value is not None:
            out.append(f'{name}{{quantile="{q}"}} {value / 1000.0:.6f}')
    out.append(f"{name}_count {count}")
    return out
