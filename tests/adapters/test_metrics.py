"""``GET /metrics``: read back with prometheus_client's own parsers, in the text format and in OpenMetrics.

The names and labels checked here are the ones docs/api.md, the dashboards and the other tests rely on.
"""

from __future__ import annotations

import math

import msgspec
import prometheus_client
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.adapters.conftest import Server, new_session, new_turn, sse_events
from turnstile.adapters.metrics import exposition, metrics_registry
from turnstile.engine.runtime.info import MetricsSnapshot, PoolStatus, TimingHistogram, TimingSummary

OPENMETRICS = "application/openmetrics-text; version=1.0.0"

# Family name (as each format names it: OpenMetrics drops a counter's _total) -> type.
FAMILIES = {
    "turnstile_sessions": "gauge",
    "turnstile_streams": "counter",
    "turnstile_pool_state": "gauge",
    "turnstile_pool_warm_processes": "gauge",
    "turnstile_pool_warming_processes": "gauge",
    "turnstile_pool_target": "gauge",
    "turnstile_pool_spawns": "counter",
    "turnstile_streams_open": "gauge",
    "turnstile_subscribers": "gauge",
    "turnstile_lagged_subscribers": "counter",
    "turnstile_agent_processes": "gauge",
    "turnstile_turn_seconds": "summary",
    "turnstile_turn_first_event_seconds": "summary",
    "turnstile_turn_duration_seconds": "histogram",
    "turnstile_turn_ttfe_seconds": "histogram",
}

ODD_STATE = 'we"ird\\state\nwith a newline'


def snapshot(**changes: object) -> MetricsSnapshot:
    base = MetricsSnapshot(
        sessions_by_state={"idle": 2, "busy": 1, ODD_STATE: 1},
        streams_open=1,
        streams_by_outcome={"completed": 5, "failed": 1},
        pool=PoolStatus(state="degraded", reason="spawn failed", target=2, ready=1, warming=1, keys=1),
        pool_spawns=7,
        agent_processes=3,
        subscribers=4,
        lagged_subscribers=2,
        turn_timings=TimingSummary(
            count=6, total_p50_ms=1500.0, total_p95_ms=4000.0, total_max_ms=9000.0, ttfe_p50_ms=300.0
        ),
        total_histogram=TimingHistogram(
            bounds_ms=(100.0, 1000.0, 3600e3), counts=[0, 2, 6], count=6, sum_ms=21500.0
        ),
        ttfe_histogram=None,
    )
    return msgspec.structs.replace(base, **changes)


def samples(families: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def scrape(snap: MetricsSnapshot, accept: str | None) -> tuple[str, str]:
    body, content_type = exposition(metrics_registry(lambda: snap), accept)
    return body.decode("utf-8"), content_type


@pytest.mark.parametrize("accept", [None, "text/plain", OPENMETRICS])
def test_every_metric_parses_with_its_name_type_and_labels(accept: str | None) -> None:
    text, content_type = scrape(snapshot(), accept)
    if accept == OPENMETRICS:
        assert content_type.startswith("application/openmetrics-text") and text.endswith("# EOF\n")
        families = list(parse_openmetrics(text))
    else:
        assert content_type.startswith("text/plain; version=0.0.4")
        families = list(parse_text(text))
    types = {f.name: f.type for f in families}
    missing = {name: typ for name, typ in FAMILIES.items() if name not in types}
    expected_missing = {"turnstile_turn_ttfe_seconds": "histogram"}  # the snapshot has no TTFE histogram
    assert missing == expected_missing
    assert {name: types[name] for name in FAMILIES if name in types} == {
        name: typ for name, typ in FAMILIES.items() if name not in expected_missing
    }
    got = samples(families)
    assert got[("turnstile_sessions", (("state", "idle"),))] == 2
    assert got[("turnstile_sessions", (("state", ODD_STATE),))] == 1  # escaped and read back intact
    assert got[("turnstile_streams_total", (("outcome", "completed"),))] == 5
    assert got[("turnstile_streams_total", (("outcome", "failed"),))] == 1
    pool_states = {dict(k[1])["state"]: v for k, v in got.items() if k[0] == "turnstile_pool_state"}
    assert pool_states == {"warming": 0, "ready": 0, "degraded": 1, "draining": 0, "stopped": 0}
    assert got[("turnstile_pool_warm_processes", ())] == 1
    assert got[("turnstile_pool_warming_processes", ())] == 1
    assert got[("turnstile_pool_target", ())] == 2
    assert got[("turnstile_pool_spawns_total", ())] == 7
    assert got[("turnstile_streams_open", ())] == 1
    assert got[("turnstile_subscribers", ())] == 4
    assert got[("turnstile_lagged_subscribers_total", ())] == 2
    assert got[("turnstile_agent_processes", ())] == 3
    # The summary: seconds; a missing percentile (ttfe p95) is left out, not written as 0.
    quantiles = {dict(k[1])["quantile"]: v for k, v in got.items() if k[0] == "turnstile_turn_seconds"}
    assert {float(q): v for q, v in quantiles.items()} == {0.5: 1.5, 0.95: 4.0, 1.0: 9.0}
    first = {float(dict(k[1])["quantile"]) for k in got if k[0] == "turnstile_turn_first_event_seconds"}
    assert first == {0.5}
    assert got[("turnstile_turn_seconds_count", ())] == 6
    # The histogram: seconds, cumulative buckets, +Inf = count.
    buckets = {
        float(dict(k[1])["le"]): v for k, v in got.items() if k[0] == "turnstile_turn_duration_seconds_bucket"
    }
    assert buckets == {0.1: 0, 1.0: 2, 3600.0: 6, math.inf: 6}
    assert got[("turnstile_turn_duration_seconds_count", ())] == 6
    assert got[("turnstile_turn_duration_seconds_sum", ())] == pytest.approx(21.5)


def test_each_registry_reads_its_own_runtime_and_the_global_one_is_untouched() -> None:
    one, _ = scrape(snapshot(streams_open=1), None)
    two, _ = scrape(snapshot(streams_open=9), None)
    assert samples(list(parse_text(one)))[("turnstile_streams_open", ())] == 1
    assert samples(list(parse_text(two)))[("turnstile_streams_open", ())] == 9
    global_names = {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("turnstile") for name in global_names)


def test_each_scrape_takes_a_fresh_snapshot() -> None:
    calls: list[int] = []

    def read() -> MetricsSnapshot:
        calls.append(1)
        return snapshot(subscribers=len(calls))

    registry = metrics_registry(read)
    for expected in (1, 2):
        body, _ = exposition(registry, None)
        assert samples(list(parse_text(body.decode())))[("turnstile_subscribers", ())] == expected


@pytest.mark.slow
async def test_served_metrics_negotiate_the_format(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        _, url = await new_turn(c, sid, "hello")
        await sse_events(c, url)
        plain = await c.get("/metrics")
        assert plain.status_code == 200
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        om = await c.get("/metrics", headers={"accept": f"{OPENMETRICS},text/plain;q=0.5"})
        assert om.status_code == 200
        assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        for got in (samples(list(parse_text(plain.text))), samples(list(parse_openmetrics(om.text)))):
            assert got[("turnstile_streams_total", (("outcome", "completed"),))] == 1
            assert got[("turnstile_sessions", (("state", "idle"),))] == 1
            assert got[("turnstile_turn_duration_seconds_count", ())] == 1
            assert got[("turnstile_turn_ttfe_seconds_bucket", (("le", "3600.0"),))] == 1
            assert got[("turnstile_turn_ttfe_seconds_bucket", (("le", "+Inf"),))] == 1
