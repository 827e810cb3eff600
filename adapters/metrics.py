"""``GET /metrics``: the runtime's :class:`MetricsSnapshot` as Prometheus metrics via ``prometheus_client``.

:class:`SnapshotCollector` is a custom collector: each scrape takes one snapshot and turns it into metric
families from the tables below. Each app gets a registry of its own (:func:`metrics_registry`), never the
library's global one — several runtimes may live in one process, and tests start many. :func:`exposition`
renders it in the format the scraper's ``Accept`` header asks for: the Prometheus text format 0.0.4, or
OpenMetrics (``application/openmetrics-text``).

A new number in the snapshot is one entry in :data:`SCALARS`; a new mapping (counts by some label) one in
:data:`BY_LABEL`; a new histogram one in :data:`HISTOGRAMS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from turnstile.engine.runtime.info import MetricsSnapshot, TimingHistogram
from turnstile.engine.specs import load_specs

__all__ = [
    "BY_LABEL",
    "HISTOGRAMS",
    "SCALARS",
    "ByLabel",
    "Histogram",
    "Scalar",
    "SnapshotCollector",
    "exposition",
    "metrics_registry",
]

Kind = Literal["gauge", "counter"]

# How the client writes a float in a label (``le``, ``quantile``): "0.5", "1.0", "+Inf" — the canonical
# form OpenMetrics asks for. (The upstream function has no type hints.)
_float_label: Final[Callable[[float], str]] = floatToGoString


@dataclass(frozen=True)
class Scalar:
    """One number of the snapshot. A counter's ``name`` ends in ``_total`` (as it is exposed)."""

    name: str
    kind: Kind
    help: str
    value: Callable[[MetricsSnapshot], float]


@dataclass(frozen=True)
class ByLabel:
    """A mapping of the snapshot: one sample per key, the key in label ``label``."""

    name: str
    kind: Kind
    help: str
    label: str
    values: Callable[[MetricsSnapshot], Mapping[str, float]]


@dataclass(frozen=True)
class Histogram:
    """A :class:`TimingHistogram` of the snapshot (left out while the snapshot has none)."""

    name: str
    help: str
    histogram: Callable[[MetricsSnapshot], TimingHistogram | None]


@cache
def _pool_states() -> tuple[str, ...]:
    return tuple(load_specs(["pool"])["pool"].states)


def _pool_state(s: MetricsSnapshot) -> dict[str, float]:
    # Every state of the pool machine (specs/pool.toml), 1 for the current one: a query can alert on
    # `turnstile_pool_state{state="degraded"} == 1` without knowing which states exist.
    return {state: float(state == s.pool.state) for state in _pool_states()}


SCALARS: Final[tuple[Scalar, ...]] = (
    Scalar(
        "turnstile_pool_warm_processes",
        "gauge",
        "Warm processes ready to be checked out.",
        lambda s: s.pool.ready,
    ),
    Scalar(
        "turnstile_pool_warming_processes",
        "gauge",
        "Processes the pool is starting.",
        lambda s: s.pool.warming,
    ),
    Scalar(
        "turnstile_pool_target",
        "gauge",
        "Warm processes the pool keeps per configuration.",
        lambda s: s.pool.target,
    ),
    Scalar(
        "turnstile_pool_spawns_total",
        "counter",
        "Processes the pool has spawned.",
        lambda s: s.pool_spawns,
    ),
    Scalar(
        "turnstile_streams_open",
        "gauge",
        "Streams (turns) not ended yet.",
        lambda s: s.streams_open,
    ),
    Scalar(
        "turnstile_subscribers",
        "gauge",
        "Live log subscribers (SSE, WebSocket, in-process).",
        lambda s: s.subscribers,
    ),
    Scalar(
        "turnstile_lagged_subscribers_total",
        "counter",
        "Subscribers that fell behind their buffer and resumed from the log.",
        lambda s: s.lagged_subscribers,
    ),
    Scalar(
        "turnstile_agent_processes",
        "gauge",
        "Agent processes alive (sessions and pool).",
        lambda s: s.agent_processes,
    ),
    Scalar(
        "turnstile_damaged_logs",
        "gauge",
        "Session logs that cannot be read back (damaged before their last line).",
        lambda s: s.damaged_logs,
    ),
)
"""The snapshot's numbers, one metric each (in this order)."""

BY_LABEL: Final[tuple[ByLabel, ...]] = (
    ByLabel("turnstile_sessions", "gauge", "Sessions by state.", "state", lambda s: s.sessions_by_state),
    ByLabel(
        "turnstile_streams_total",
        "counter",
        "Streams (turns) ended, by outcome (the open ones: turnstile_streams_open).",
        "outcome",
        lambda s: s.streams_by_outcome,
    ),
    ByLabel(
        "turnstile_pool_state", "gauge", "The pool's state (1 for the current one).", "state", _pool_state
    ),
)
"""The snapshot's mappings, one metric each with one sample per key (keys sorted)."""

HISTOGRAMS: Final[tuple[Histogram, ...]] = (
    Histogram(
        "turnstile_turn_duration_seconds",
        "Turn duration from request to terminal entry.",
        lambda s: s.total_histogram,
    ),
    Histogram(
        "turnstile_turn_ttfe_seconds",
        "Time from the turn request to the CLI's first event.",
        lambda s: s.ttfe_histogram,
    ),
)
"""The snapshot's histograms (milliseconds in the snapshot, seconds in the metric)."""


def _family(
    name: str, kind: Kind, help_text: str, labels: tuple[str, ...] = ()
) -> CounterMetricFamily | GaugeMetricFamily:
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


def _histogram(name: str, help_text: str, hist: TimingHistogram) -> HistogramMetricFamily:
    buckets = [
        (_float_label(bound_ms / 1000.0), float(count))
        for bound_ms, count in zip(hist.bounds_ms, hist.counts, strict=True)
    ]
    buckets.append(("+Inf", float(hist.count)))
    return HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=hist.sum_ms / 1000.0)


def _summary(name: str, help_text: str, count: int, quantiles_ms: Mapping[float, float | None]) -> Metric:
    # Percentiles over the runtime's recent turns, computed by the runtime: prometheus_client's own
    # SummaryMetricFamily takes no quantiles, so its samples are added to a plain summary family.
    family = Metric(name, help_text, "summary")
    for q, value in quantiles_ms.items():
        if value is not None:
            family.add_sample(name, {"quantile": _float_label(q)}, value / 1000.0)
    family.add_sample(f"{name}_count", {}, float(count))
    return family


class SnapshotCollector(Collector):
    """A ``prometheus_client`` collector that reads one fresh snapshot per scrape from ``snapshot``."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """The metric families of one snapshot."""
        s = self._snapshot()
        for mapping in BY_LABEL:
            family = _family(mapping.name, mapping.kind, mapping.help, (mapping.label,))
            for key, value in sorted(mapping.values(s).items()):
                family.add_metric([str(key)], float(value))
            yield family
        for scalar in SCALARS:
            family = _family(scalar.name, scalar.kind, scalar.help)
            family.add_metric([], float(scalar.value(s)))
            yield family
        t = s.turn_timings
        yield _summary(
            "turnstile_turn_seconds",
            "Turn duration from request to terminal entry (recent turns).",
            t.count,
            {0.5: t.total_p50_ms, 0.95: t.total_p95_ms, 1.0: t.total_max_ms},
        )
        yield _summary(
            "turnstile_turn_first_event_seconds",
            "Time from the turn request to the CLI's first event (recent turns).",
            t.count,
            {0.5: t.ttfe_p50_ms, 0.95: t.ttfe_p95_ms},
        )
        for histogram in HISTOGRAMS:
            hist = histogram.histogram(s)
            if hist is not None:
                yield _histogram(histogram.name, histogram.help, hist)


def metrics_registry(snapshot: Callable[[], MetricsSnapshot]) -> CollectorRegistry:
    """A registry of its own (not the global one) holding one :class:`SnapshotCollector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The registry's metrics in the format ``accept`` asks for, and its content type.

    ``application/openmetrics-text`` gets OpenMetrics; anything else (or no header) the Prometheus text
    format 0.0.4.
    """
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type
