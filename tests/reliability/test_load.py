"""Short CI versions of ``bench/load.py`` and ``bench/soak.py`` (same functions, small sizes).

Correctness is asserted (every subscriber gets every entry in order, every stream ends, nothing stuck,
orphaned or lost); timings and memory are only reported (in the terminal summary), never asserted.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import load, soak
from tests.reliability.conftest import EXTRA

pytestmark = pytest.mark.slow


def _report(title: str, figures: dict[str, Any], keys: list[str]) -> None:
    EXTRA.append(f"{title}: " + ", ".join(f"{k}={figures.get(k)}" for k in keys))


async def test_many_sessions_each_subscriber_gets_every_entry_in_order() -> None:
    figures = await load.sessions(n_sessions=50, subs=3, turns=2)
    _report(
        "load 50 sessions x 3 subscribers x 2 turns",
        figures,
        ["entries", "deliveries", "turns_s", "latency_p50_ms", "latency_p99_ms", "rss_start_mb",
         "rss_after_each_round_mb", "per_session_kb", "per_subscriber_kb"],
    )  # fmt: skip
    assert figures["server_exit"] == 0
    assert not figures["problems"], figures["problems"][:10]


async def test_one_turn_many_subscribers_all_get_the_same_sequence() -> None:
    figures = await load.fanout(subscribers=100, tokens=50, token_ms=10)
    _report(
        "fan-out 1 turn x 100 subscribers",
        figures,
        ["entries", "deliveries", "latency_p50_ms", "latency_p99_ms", "spread_p50_ms", "spread_p99_ms"],
    )
    assert figures["server_exit"] == 0
    assert not figures["problems"], figures["problems"][:10]


async def test_a_stalled_subscriber_does_not_hold_up_the_others() -> None:
    figures = await load.stall(subscribers=10)
    _report(
        "stall 1 of 10",
        figures,
        ["staller_send_queue_kb", "p50_ms_without", "p50_ms_with", "p99_ms_without", "p99_ms_with"],
    )
    assert figures["server_exit"] == 0
    assert not figures["problems"], figures["problems"][:10]


async def test_soak_with_random_faults_and_a_server_sigkill() -> None:
    figures = await soak.soak(minutes=20 / 60, workers=4, pool_size=2, kill_every_s=10)
    _report(
        "soak 20 s, 4 workers, SIGKILL every 10 s",
        figures,
        ["streams", "outcomes", "server_kills", "stuck", "lost", "gaps", "orphans", "rss_server_mb_max"],
    )
    assert soak.held(figures), figures["details"]
