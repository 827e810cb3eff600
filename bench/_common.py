"""Shared helpers of the benchmark scripts: tables, percentiles, targets, machine facts, an emitter.

Every script prints one or more tables and ends with ``target:`` lines that ``bench/run_all.py`` collects
into the summary of ``docs/performance.md``::

    target: decode vs msgspec-to-dict | 0.74x | >= 0.70x | met

Nothing here asserts on timings: figures are printed, never checked (machines here are 2-core and noisy;
every comparison is measured in the same run, interleaved, and reported as a ratio).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import statistics
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the scripts import tests.fakeapi / tests.realcli and bench helpers
    sys.path.insert(0, str(ROOT))

EMITTER = ROOT / "bench" / "emitter.py"
FIXTURES = sorted((ROOT / "tests" / "fixtures").glob("**/*.jsonl"))


def pct(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    """The median, NaN when empty."""
    return statistics.median(values) if values else math.nan


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a Markdown table (readable in a terminal, pasteable into the docs)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def target(name: str, measured: float, goal: float, *, unit: str = "x", higher: bool = True) -> None:
    """Print one ``target:`` line (``higher``: the measured value must be at least ``goal``)."""
    if math.isnan(measured):
        verdict = "not measured"
    else:
        verdict = "met" if (measured >= goal if higher else measured <= goal) else "missed"
    sign = ">=" if higher else "<="
    print(f"target: {name} | {measured:.2f}{unit} | {sign} {goal:g}{unit} | {verdict}")
    sys.stdout.flush()


def note(text: str) -> None:
    """A line of context printed under the tables (kept by run_all in the docs)."""
    print(f"note: {text}")


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    path = f"/proc/{pid or 'self'}/status"
    with open(path) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in {path}")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect, then keep the cyclic GC off inside (for timing loops over short-lived objects)."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def versions() -> dict[str, str]:
    """Versions of what the figures depend on."""
    out = {"python": platform.python_version()}
    for name in ("msgspec", "trio", "hypercorn", "starlette", "trio-websocket", "sse-starlette", "orjson"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        out["claude-agent-sdk"] = metadata.version("claude-agent-sdk")
    except metadata.PackageNotFoundError:
        out["claude-agent-sdk"] = "not installed"
    return out


def machine() -> str:
    """One line about the machine: CPU model, cores, memory, kernel."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        kb = int(f.readline().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    return f"{model}, {os.cpu_count()} cores{mem}, Linux {platform.release()}"


def emitter_argv(*args: str) -> list[str]:
    """The bench emitter (a stand-in agent: see bench/emitter.py) as a command line."""
    return [sys.executable, "-S", str(EMITTER), *args]


def emitter_binary(tmpdir: Path) -> str:
    """An executable wrapper around the emitter, usable as ``AgentConfig(binary=...)``."""
    path = tmpdir / "bench-emitter"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -S {EMITTER} "$@"\n')
    path.chmod(0o755)
    return str(path)
