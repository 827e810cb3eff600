"""Soak: a server running turns continuously with random faults; nothing stuck, orphaned or lost.

``turnstile serve`` runs as a child process for ``--minutes`` while ``--workers`` clients each run turn
after turn on their own session, each turn with a fault drawn at random (or none): the agent crashing,
hanging, exiting early, writing garbage, oversized or non-UTF-8 lines, flooding stderr, an API error,
an interrupt honoured or ignored. Now and then a worker stops its session and starts another, or a
second subscriber drops its connection and resumes. With ``--kill-every S`` the server itself is
SIGKILLed every S seconds and restarted on the same data directory (clients reconnect and resume).

Every turn is read to its ``stream.ended`` over SSE by the worker that started it. At the end the server
is stopped with SIGTERM, and:

* **stuck** — turns whose terminal entry did not reach their subscriber within 60 s: must be 0;
* **lost** — turns the server accepted (202) that the log on disk does not end exactly once, plus
  subscribers whose entries differ from the log's (a gap, a duplicate, a changed entry): must be 0;
* **orphans** — agent processes alive after the server exited (none may be left below this process,
  which adopts orphans as a subreaper): must be 0;
* **replay** — the logs on disk fold offline (``engine.replay``) to the outcome each ``stream.ended`` says;
* the server's RSS (and its agents' count) is sampled every 2 s and printed over time.

``--matrix`` instead runs the full fault matrix of ``tests/reliability`` — every fault x pool size 0, 1
and 4 x every subscriber kind in a run of its own — and prints the summary table.

``tests/reliability/test_load.py`` runs a 20-second soak (with one server SIGKILL) in CI.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from bench.load import Reader, http, read_sse  # noqa: E402
from tests.procs import (  # noqa: E402
    become_subreaper,
    descendants,
    ledger_alive,
    leftovers_after,
    rss_bytes,
)
from tests.reliability.clients import until  # noqa: E402
from tests.reliability.servers import ServerProcess, wait_healthy  # noqa: E402
from turnstile.engine.replay import replay  # noqa: E402
from turnstile.engine.transcript import frames_of, read_entries  # noqa: E402

__all__ = ["FAULTS", "run_matrix", "soak"]

# (name, prompt directive, interrupt it, weight)
FAULTS: list[tuple[str, str, bool, int]] = [
    ("none", "", False, 12),
    ("tools", "tools=2 thinking=2", False, 3),
    ("kill_mid", "kill=mid", False, 1),
    ("crash_mid", "crash=mid", False, 1),
    ("crash_start", "crash=start", False, 1),
    ("hang_mid", "hang=mid", False, 1),
    ("hang_first", "hang=first", False, 1),
    ("api_error", "api_error=500 retries=0", False, 1),
    ("garbage", "garbage", False, 1),
    ("oversized", "oversized=100000", False, 1),
    ("truncate", "truncate", False, 1),
    ("nonutf8", "nonutf8", False, 1),
    ("exit0", "exit0", False, 1),
    ("stderr_flood", "stderr_flood=2000", False, 1),
    ("interrupt", "hang=mid", True, 1),
    ("interrupt_ignored", "hang=mid ignore_interrupt", True, 1),
]

SERVER_ENV = {
    "TURNSTILE_IDLE_TIMEOUT_S": "2",  # hung turns time out in 2 s
    "TURNSTILE_FIRST_EVENT_TIMEOUT_S": "10",
    "TURNSTILE_MAX_LINE": "65536",  # oversized=100000 is over it
}
TURN_LIMIT_S = 60.0


@dataclass
class Turn:
    sid: str
    tid: str
    fault: str
    reader: Reader
    resumer: Reader | None = None
    seconds: float = 0.0


@dataclass
class Soak:
    server: ServerProcess
    deadline: float
    rng: random.Random
    turns: list[Turn] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[float, float, int, float]] = field(default_factory=list)  # t, server MB, agents, MB
    kills: int = 0
    sessions: int = 0
    stops: int = 0
    restarting: bool = False

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        """POST, retrying while the server is down (restarting after a SIGKILL)."""
        end = trio.current_time() + 60
        while True:
            try:
                return await http(self.server.port, "POST", path, body, limit_s=30)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError):
                if trio.current_time() > end:
                    raise
                await trio.sleep(0.1)

    async def worker(self, wid: int) -> None:
        sid: str | None = None
        done_here = 0
        while trio.current_time() < self.deadline:
            if sid is None or (done_here >= 5 and self.rng.random() < 0.15):
                if sid is not None:
                    status, _ = await _delete(self, f"/v1/sessions/{sid}")
                    self.stops += status == 202
                status, body = await self.post("/v1/sessions")
                if status != 201:
                    self.refused[f"create {status}"] += 1
                    await trio.sleep(0.2)
                    continue
                sid, done_here = body["id"], 0
                self.sessions += 1
            name, directive, interrupt, _w = self.rng.choices(FAULTS, weights=[f[3] for f in FAULTS])[0]
            prompt = f"soak {wid} {name}" + (f" [[sim {directive}]]" if directive else "")
            status, body = await self.post(f"/v1/sessions/{sid}/turns", {"prompt": prompt})
            if status != 202:
                # 409 when the session ended (a restart, a stop), 503 while starting: take a new one.
                self.refused[f"turn {status}"] += 1
                sid = None
                await trio.sleep(0.1)
                continue
            turn = Turn(sid, body["turn_id"], name, Reader())
            self.turns.append(turn)
            done_here += 1
            started = time.monotonic()
            path = f"/v1/sessions/{sid}/turns/{turn.tid}/events"
            async with trio.open_nursery() as n:
                n.start_soon(partial(read_sse, self.server.port, path, turn.reader, deadline=TURN_LIMIT_S))
                if self.rng.random() < 0.2:
                    turn.resumer = Reader()
                    n.start_soon(self._resumer, path, turn.resumer)
                if interrupt:
                    n.start_soon(self._interrupt, turn)
            turn.seconds = time.monotonic() - started

    async def _resumer(self, path: str, r: Reader) -> None:
        """A subscriber that drops its connection after a few events and resumes with Last-Event-ID."""
        await read_sse(self.server.port, path, r, deadline=TURN_LIMIT_S, disconnect_after=3)

    async def _interrupt(self, turn: Turn) -> None:
        with trio.move_on_after(20):
            await until(lambda: len(turn.reader.seqs) >= 6 or turn.reader.ends > 0)
        if turn.reader.ends == 0:
            await self.post(f"/v1/sessions/{turn.sid}/turns/{turn.tid}/interrupt")

    async def sampler(self) -> None:
        start = trio.current_time()
        while trio.current_time() < self.deadline:
            pid = self.server.pid
            if pid is not None and not self.restarting:
                kids = [p for p, (st, _c) in descendants(pid).items() if st != "Z"]
                self.samples.append(
                    (
                        round(trio.current_time() - start, 1),
                        round(rss_bytes(pid) / 1e6, 1),
                        len(kids),
                        round(sum(rss_bytes(p) for p in kids) / 1e6, 1),
                    )
                )
            await trio.sleep(2.0)

    async def killer(self, every_s: float) -> None:
        while True:
            await trio.sleep(every_s)
            if trio.current_time() > self.deadline - 3:
                return
            self.restarting = True
            assert self.server.proc is not None
            self.server.signal(signal.SIGKILL)
            await self.server.wait_async(10)
            self.server.start()
            await wait_healthy(self.server.base, 60)
            self.kills += 1
            self.restarting = False


async def _delete(s: Soak, path: str) -> tuple[int, Any]:
    try:
        return await http(s.server.port, "DELETE", path, limit_s=30)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        return 0, None


def _disk_logs(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    logs = {}
    for path in sorted((data_dir / "sessions").glob("*.ndjson")):
        raw = path.read_bytes()
        logs[path.stem] = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return logs


async def soak(
    minutes: float = 1.0,
    workers: int = 6,
    pool_size: int = 2,
    kill_every_s: float | None = None,
    seed: int = 1,
) -> dict[str, Any]:
    """Run the soak; returns the figures (see the module docstring)."""
    become_subreaper()
    before = set(descendants())
    with tempfile.TemporaryDirectory(prefix="turnstile-soak-") as tmp:
        data_dir = Path(tmp) / "data"
        server = ServerProcess(data_dir=data_dir, pool_size=pool_size, env=dict(SERVER_ENV))
        server.start()
        await wait_healthy(server.base, 60)
        s = Soak(server, trio.current_time() + minutes * 60, random.Random(seed))
        started = time.monotonic()
        try:
            async with trio.open_nursery() as n:
                n.start_soon(s.sampler)
                if kill_every_s:
                    n.start_soon(s.killer, kill_every_s)
                async with trio.open_nursery() as w:
                    for i in range(workers):
                        w.start_soon(s.worker, i)
                n.cancel_scope.cancel()
        finally:
            exit_code = server.stop()
        elapsed = time.monotonic() - started
        orphans = leftovers_after(before, wait_s=3.0)
        ledger = ledger_alive(data_dir)
        logs = _disk_logs(data_dir)
        stderr_tail = server.stderr_tail(600) if exit_code != 0 else ""
    # --- the invariants -----------------------------------------------------------------------------------
    stuck = [t for t in s.turns if t.reader.ends < 1]
    lost: list[str] = []
    gaps: list[str] = []
    outcomes: Counter[str] = Counter()
    by_fault: dict[str, Counter[str]] = {}
    replay_mismatch: list[str] = []
    for sid, entries in logs.items():
        seqs = [e["seq"] for e in entries]
        if seqs != list(range(1, len(seqs) + 1)):
            lost.append(f"{sid}: log seqs are not 1..N")
        raw = b"\n".join(json.dumps(e).encode() for e in entries) + b"\n"
        report = replay(read_entries(frames_of(raw)))
        replayed = {v.id: v.outcome for v in report.streams}
        for e in entries:
            if e.get("kind") == "stream.ended" and replayed.get(e["stream"]) != e["outcome"]:
                replay_mismatch.append(
                    f"{sid}/{e['stream']}: replay {replayed.get(e['stream'])}, log {e['outcome']}"
                )
    for t in s.turns:
        entries = logs.get(t.sid, [])
        ends = [e for e in entries if e.get("kind") == "stream.ended" and e.get("stream") == t.tid]
        if len(ends) != 1:
            lost.append(f"{t.sid}/{t.tid} ({t.fault}): {len(ends)} stream.ended in the log")
            continue
        outcomes[ends[0]["outcome"]] += 1
        by_fault.setdefault(t.fault, Counter())[ends[0]["outcome"]] += 1
        want = [e["seq"] for e in entries if e.get("stream") == t.tid]
        for r in [t.reader, *([t.resumer] if t.resumer else [])]:
            if r.ends and r.seqs != want:
                gaps.append(f"{t.sid}/{t.tid} ({t.fault}): subscriber got {len(r.seqs)}, log {len(want)}")
    server_mb = [x[1] for x in s.samples]
    return {
        "minutes": round(elapsed / 60, 2),
        "workers": workers,
        "pool_size": pool_size,
        "server_kills": s.kills,
        "sessions": s.sessions,
        "sessions_stopped": s.stops,
        "streams": len(s.turns),
        "streams_per_s": round(len(s.turns) / elapsed, 1) if elapsed else None,
        "outcomes": dict(outcomes),
        "by_fault": {k: dict(v) for k, v in sorted(by_fault.items())},
        "refused": dict(s.refused),
        "stuck": len(stuck),
        "lost": len(lost),
        "gaps": len(gaps),
        "orphans": len(orphans),
        "ledger_alive": len(ledger),
        "replay_mismatches": len(replay_mismatch),
        "server_exit": exit_code,
        "rss_server_mb_min": min(server_mb) if server_mb else None,
        "rss_server_mb_max": max(server_mb) if server_mb else None,
        "rss_server_mb_last": server_mb[-1] if server_mb else None,
        "rss_over_time": s.samples,
        "details": (
            [f"stuck: {t.sid}/{t.tid} ({t.fault}) {t.reader.errors[:1]}" for t in stuck][:10]
            + lost[:10]
            + gaps[:10]
            + [f"orphan: {o}" for o in list(orphans.values())[:5]]
            + replay_mismatch[:10]
            + ([f"server stderr: {stderr_tail}"] if stderr_tail else [])
        ),
    }


def held(result: dict[str, Any]) -> bool:
    """Every invariant held in this soak."""
    return bool(
        result["stuck"] == 0
        and result["lost"] == 0
        and result["gaps"] == 0
        and result["orphans"] == 0
        and result["ledger_alive"] == 0
        and result["replay_mismatches"] == 0
        and result["server_exit"] == 0
    )


def print_soak(result: dict[str, Any]) -> None:
    head = f"{result['minutes']} min, {result['workers']} workers, pool size {result['pool_size']}"
    print(f"\n### soak: {head}, {result['server_kills']} server SIGKILLs\n")
    print("| figure | value |\n|---|---|")
    for key in (
        "sessions", "sessions_stopped", "streams", "streams_per_s", "outcomes", "refused", "stuck", "lost",
        "gaps", "orphans", "ledger_alive", "replay_mismatches", "server_exit", "rss_server_mb_min",
        "rss_server_mb_max", "rss_server_mb_last",
    ):  # fmt: skip
        print(f"| {key} | {result[key]} |")
    print("\n| fault | outcomes |\n|---|---|")
    for fault, counts in result["by_fault"].items():
        print(f"| {fault} | {counts} |")
    samples = result["rss_over_time"]
    step = max(1, len(samples) // 12)
    print("\n| t (s) | server RSS (MB) | agents | agents RSS (MB) |\n|---|---|---|---|")
    for t, mb, agents, amb in samples[::step]:
        print(f"| {t} | {mb} | {agents} | {amb} |")
    print(f"\nheld: {'yes' if held(result) else 'NO'}" + "".join(f"\n  - {d}" for d in result["details"]))


# --- the full matrix ----------------------------------------------------------------------------------------


async def run_matrix() -> list[Any]:
    """Every fault x pool size x subscriber kind, each kind in a run of its own (about 15 minutes)."""
    from tests.reliability.matrix import FAULTS as MATRIX
    from tests.reliability.matrix import KINDS, POOL_SIZES, run_cell, summary_rows

    become_subreaper()
    results = []
    for fault in MATRIX:
        for pool in POOL_SIZES:
            for kind in KINDS:
                with tempfile.TemporaryDirectory(prefix="turnstile-matrix-") as tmp:
                    r = await run_cell(fault, pool, Path(tmp), (kind,))
                results.append(r)
                mark = "skip" if r.skipped else ("held" if r.held(kind) else "NOT HELD")
                print(f"{fault.name:20} pool={pool} {kind:7} {mark:8} {r.seconds:5.1f}s", flush=True)
                for p in r.all_problems()[:3]:
                    print(f"    {p[:200]}")
    print("\n| fault | " + " | ".join(f"pool {p}" for p in POOL_SIZES) + " |")
    print("|---|" + "---|" * len(POOL_SIZES))
    for name, cells in summary_rows(results):
        print(f"| {name} | " + " | ".join(cells.get(p, "-") for p in POOL_SIZES) + " |")
    ran = [r for r in results if not r.skipped]
    print(f"\ncells run: {len(ran)}, cells held: {sum(1 for r in ran if r.held(r.kinds[0]))}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--pool-size", type=int, default=2)
    ap.add_argument("--kill-every", type=float, default=None, help="SIGKILL and restart the server every S s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--matrix", action="store_true", help="run the full fault matrix instead")
    ap.add_argument("--quick", action="store_true", help="20 s, 4 workers, a server SIGKILL after 10 s")
    args = ap.parse_args(argv)
    if args.quick:
        args.minutes, args.workers, args.kill_every = 20 / 60, 4, 10.0
    if args.matrix:
        results = trio.run(run_matrix)
        return 0 if all(r.skipped or r.held(r.kinds[0]) for r in results) else 1
    result = trio.run(soak, args.minutes, args.workers, args.pool_size, args.kill_every, args.seed)
    print_soak(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if held(result) else 1


if __name__ == "__main__":
    sys.exit(main())
