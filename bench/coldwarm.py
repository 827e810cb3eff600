"""Hot vs cold: time to first event of a new session's first turn, from a warm pool vs with pool size 0.

Three runtimes (``open_runtime``, in this process) run side by side: one with ``pool_size=1`` (its warm
processes primed: see ``engine/runtime/priming.py``), one with ``pool_size=1`` and ``pool_prime=False``
(ready by age alone, to show what priming saves), one with ``pool_size=0`` (one-shot mode: a process is
spawned when the turn arrives). A trial creates a session, starts a turn and measures, at an in-process
subscriber, the time from ``start_turn`` to the turn's first CLI line (``system/init``). Trials rotate
warm / unprimed / cold; before each, both pools are waited on until each has a ready process, then
``--settle`` seconds more (a pool process in a server has usually been idle for a while; the real CLI
keeps initialising for ~1 s after spawn).

Agents: the real Claude Code CLI (the binary bundled in ``claude-agent-sdk``) against the fake model API
of ``tests/fakeapi.py`` on loopback, and the built-in simulator (``--speed 0``). Target: warm <= 0.2x
cold (measured here before: the real CLI ~0.5 s cold, ~0.03 s on a live process).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import _common  # noqa: F401  (puts the repo root on sys.path)
import trio
from _common import median, note, pct, table, target

from turnstile.engine.errors import AgentBinaryNotFound
from turnstile.engine.log import CliLine
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig
from turnstile.engine.runtime.runtime import Runtime, open_runtime


async def first_event(rt: Runtime, limit_s: float = 60.0) -> float:
    """Seconds from start_turn to the first CLI line of a new session's first turn."""
    info = await rt.create_session()
    t0 = time.perf_counter()
    tid = await rt.start_turn(info.id, "hello")
    took = float("nan")
    with trio.move_on_after(limit_s):
        async with rt.subscribe(info.id, stream=tid) as sub:
            async for batch in sub:
                if any(type(r.entry) is CliLine for r in batch):
                    took = time.perf_counter() - t0
                    break
    with trio.move_on_after(15):
        await rt.stop_session(info.id)
    return took


async def pool_ready(rt: Runtime, settle: float, limit_s: float = 60.0) -> None:
    """Wait for a ready warm process, then ``settle`` seconds more."""
    with trio.move_on_after(limit_s):
        while rt.pool.status().ready < 1:  # the pool has no event for this: poll  # noqa: ASYNC110
            await trio.sleep(0.02)
    await trio.sleep(settle)


@contextlib.asynccontextmanager
async def agents(kind: str, tmp: Path) -> AsyncIterator[AgentConfig]:
    """The agent config for ``kind`` (``claude`` starts the fake model API for the time it is used)."""
    if kind == "sim":
        yield AgentConfig(agent="sim", extra_args=("--speed", "0"))
        return
    from tests.fakeapi import FakeModelAPI
    from tests.realcli import offline_cli_env
    from turnstile.engine.agents.claude import find_claude_binary

    binary = find_claude_binary()
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    with FakeModelAPI() as api:
        env = offline_cli_env(api, tmp)
        yield AgentConfig(agent="claude", binary=binary, cwd=str(work), env=env, inherit_env=False)


async def measure(kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, list[float]]:
    """Trials per side: ``warm`` (primed pool), ``unprimed`` (no priming), ``cold`` (pool size 0)."""
    out: dict[str, list[float]] = {"warm": [], "unprimed": [], "cold": []}
    async with agents(kind, tmp) as agent:
        base = RuntimeConfig(data_dir=None, default_agent=agent, pool_ready_after_s=0.2)
        async with (
            open_runtime(msgspec_replace(base, pool_size=1)) as hot,
            open_runtime(msgspec_replace(base, pool_size=1, pool_prime=False)) as unprimed,
            open_runtime(msgspec_replace(base, pool_size=0)) as one_shot,
        ):
            for i in range(args.trials + 1):
                took = {}
                for side, rt in (("warm", hot), ("unprimed", unprimed), ("cold", one_shot)):
                    # every trial starts with both pools quiet: each with a ready process, then --settle s
                    await pool_ready(hot, 0.0)
                    await pool_ready(unprimed, args.settle)
                    took[side] = await first_event(rt)
                if i:  # the first round warms caches (the binary's pages, Python imports)
                    for side, t in took.items():
                        out[side].append(t)
    return out


def msgspec_replace(config: RuntimeConfig, **changes: object) -> RuntimeConfig:
    import msgspec

    return msgspec.structs.replace(config, **changes)


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="turnstile-bench-"))
    rows = []
    ratios: dict[str, float] = {}
    for kind in args.agents:
        try:
            sides = await measure(kind, args, tmp)
        except AgentBinaryNotFound as exc:
            note(f"{kind}: skipped ({exc})")
            continue
        cold = median(sides["cold"])
        ratios[kind] = median(sides["warm"]) / cold
        label = "real CLI + fake API" if kind == "claude" else "simulator"
        for side, what in (
            ("warm", "warm pool"),
            ("unprimed", "warm pool, unprimed"),
            ("cold", "pool size 0"),
        ):
            t = sides[side]
            rows.append([label, what, len(t), median(t) * 1e3, pct(t, 100) * 1e3, median(t) / cold])
    table(
        f"time to first event of a new session's first turn (median of {args.trials} trials, ms)",
        ["agent", "process", "trials", "median ms", "max ms", "vs cold"],
        rows,
    )
    note(f"warm trials start once the pool's process has lived {args.settle:g} s past ready")
    note("warm pool: primed (initialize + get_context_usage answered); unprimed: pool_prime=False")
    for kind, ratio in ratios.items():
        label = "real CLI" if kind == "claude" else "simulator"
        target(f"hot vs cold: warm / cold, {label}", ratio, 0.2, higher=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8, help="trials per side and agent (default 8)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds a warm process idles first (1)")
    ap.add_argument("--agents", nargs="+", default=["claude", "sim"], choices=["claude", "sim"])
    ap.add_argument("--quick", action="store_true", help="2 trials, simulator and real CLI")
    args = ap.parse_args()
    if args.quick:
        args.trials, args.settle = 2, 0.3
    trio.run(run, args)


if __name__ == "__main__":
    main()
