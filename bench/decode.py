"""Decode throughput: Turnstile's lossless typed decode vs msgspec-to-dict vs stdlib json.

Builds a corpus from the recorded CLI transcripts (repeated to at least --mb megabytes), frames it into
lines, then times, in one run on the same lines:

* ``turnstile``  — engine.log.entry_from_frame: typed msgspec view + raw-preserving log entry
* ``msgspec``    — msgspec.json.decode(line) to dicts (the fastest untyped decode)
* ``stdlib``     — json.loads(line)
* ``orjson``     — orjson.loads(line), when orjson is installed

Prints lines/s and MB/s for each and the ratios the project targets (ours >= 0.7x msgspec-to-dict,
>= 3x stdlib json). Each figure is the best of --repeat runs (machines here are noisy).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from engine.framing import LineFramer
from engine.log import entry_from_frame

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "tests" / "fixtures").glob("**/*.jsonl"))


def corpus(min_bytes: int) -> list[bytes]:
    """Fixture lines (non-blank) repeated until they total at least ``min_bytes``."""
    base = [ln for p in FIXTURES for ln in p.read_bytes().splitlines() if ln.strip()]
    size = sum(len(x) + 1 for x in base)
    reps = max(1, -(-min_bytes // size))
    blob = b"\n".join(base * reps) + b"\n"
    framer = LineFramer()
    return [f for f in framer.feed(blob) if isinstance(f, bytes)]


def best_of(repeat: int, fn: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB (default 50)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per decoder; the best is kept (default 3)")
    args = ap.parse_args()
    lines = corpus(int(args.mb * 1_000_000))
    total = sum(len(x) for x in lines)
    print(f"corpus: {len(lines):,} lines, {total / 1e6:.1f} MB from {len(FIXTURES)} fixture files")

    def ours() -> None:
        for i, ln in enumerate(lines):
            entry_from_frame(ln, seq=i, ts=0.0, stream="t1")

    dict_decode = msgspec.json.decode

    def msgspec_dict() -> None:
        for ln in lines:
            dict_decode(ln)

    def stdlib() -> None:
        for ln in lines:
            json.loads(ln)

    runs: dict[str, Callable[[], None]] = {
        "turnstile": ours,
        "msgspec-dict": msgspec_dict,
        "stdlib-json": stdlib,
    }
    try:
        import orjson

        def orj() -> None:
            for ln in lines:
                orjson.loads(ln)

        runs["orjson"] = orj
    except ImportError:
        pass
    secs = {name: best_of(args.repeat, fn) for name, fn in runs.items()}
    print(f"{'decoder':<14}{'lines/s':>14}{'MB/s':>10}")
    for name, s in secs.items():
        print(f"{name:<14}{len(lines) / s:>14,.0f}{total / s / 1e6:>10.1f}")
    r_msgspec = secs["msgspec-dict"] / secs["turnstile"]
    r_stdlib = secs["stdlib-json"] / secs["turnstile"]
    print(f"ratio turnstile / msgspec-dict: {r_msgspec:.2f}x  (target >= 0.70x)")
    print(f"ratio turnstile / stdlib-json:  {r_stdlib:.2f}x  (target >= 3.00x)")


if __name__ == "__main__":
    main()
