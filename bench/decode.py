"""Decode throughput: Turnstile's lossless typed decode vs msgspec, orjson, stdlib json and the official SDK.

Builds a corpus from the recorded CLI output under ``tests/fixtures`` (repeated to at least ``--mb``
megabytes), frames it into lines, cuts the lines into batches of about one pipe read (64 KiB, what the
runtime hands the decoder at once), then times, in one run, interleaved, on the same batches:

* ``turnstile``           — ``engine.log.entries_from_frames``: per line a typed msgspec view *and* the
  lossless log entry that keeps the CLI's bytes (what ``Journal.append_frames`` runs per stdout chunk)
* ``turnstile per-line``  — ``engine.log.entry_from_frame`` called once per line (the single-line API)
* ``msgspec-dict``        — ``msgspec.json.decode(line)`` to dicts (the fastest untyped decode)
* ``orjson``              — ``orjson.loads(line)`` (when installed: the ``bench`` extra)
* ``stdlib-json``         — ``json.loads(line)``
* ``sdk-parser``          — what ``claude-agent-sdk`` does per stdout line: the text line is stripped and
  ``json.loads``-ed (``_parse_stdout_line``), then ``parse_message`` builds its typed message
  (lines it rejects are counted, as the SDK would raise or drop them)

Each decoder keeps only the current batch's results (as the runtime does). Prints lines/s and MB/s per
decoder (best of ``--repeat`` rounds) and the ratios the project targets: ours >= 0.7x msgspec-to-dict,
>= 3x the SDK's parser.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable

import _common  # noqa: F401  (puts the repo root on sys.path)
import msgspec
from _common import FIXTURES, note, table, target

from turnstile.engine.framing import LineFramer
from turnstile.engine.log import entries_from_frames, entry_from_frame

BATCH_BYTES = 65536


def corpus(min_bytes: int) -> list[bytes]:
    """Fixture lines (non-blank) repeated until they total at least ``min_bytes``."""
    base = [ln for p in FIXTURES for ln in p.read_bytes().splitlines() if ln.strip()]
    size = sum(len(x) + 1 for x in base)
    reps = max(1, -(-min_bytes // size))
    blob = b"\n".join(base * reps) + b"\n"
    framer = LineFramer()
    return [f for f in framer.feed(blob) if isinstance(f, bytes)]


def batches(lines: list[bytes], size: int = BATCH_BYTES) -> list[list[bytes]]:
    """Consecutive lines grouped into batches of about ``size`` bytes."""
    out: list[list[bytes]] = []
    cur: list[bytes] = []
    n = 0
    for ln in lines:
        cur.append(ln)
        n += len(ln) + 1
        if n >= size:
            out.append(cur)
            cur, n = [], 0
    if cur:
        out.append(cur)
    return out


def decoders(chunks: list[list[bytes]]) -> dict[str, Callable[[], None]]:
    """name -> a function that decodes every batch once."""

    def ours() -> None:
        seq = 1
        for batch in chunks:
            made = entries_from_frames(batch, seq=seq, ts=0.0, stream="t1")
            seq += len(made)

    def ours_per_line() -> None:
        seq = 1
        for batch in chunks:
            made = [entry_from_frame(ln, seq=seq + i, ts=0.0, stream="t1") for i, ln in enumerate(batch)]
            seq += len(made)

    dict_decode = msgspec.json.decode

    def msgspec_dict() -> None:
        for batch in chunks:
            [dict_decode(ln) for ln in batch]

    loads = json.loads

    def stdlib() -> None:
        for batch in chunks:
            [loads(ln) for ln in batch]

    runs: dict[str, Callable[[], None]] = {
        "turnstile": ours,
        "turnstile per-line": ours_per_line,
        "msgspec-dict": msgspec_dict,
    }
    try:
        import orjson

        orjson_loads = orjson.loads

        def orj() -> None:
            for batch in chunks:
                [orjson_loads(ln) for ln in batch]

        runs["orjson"] = orj
    except ImportError:
        note("orjson is not installed (pip install -e '.[bench]'): its row is missing")
    runs["stdlib-json"] = stdlib
    sdk = sdk_parser()
    if sdk is not None:

        def sdk_run() -> None:
            for batch in chunks:
                [sdk(ln) for ln in batch]

        runs["sdk-parser"] = sdk_run
    return runs


def sdk_parser() -> Callable[[bytes], object] | None:
    """The official SDK's per-line work (text decode, strip + json.loads, parse_message), or None."""
    try:
        from claude_agent_sdk._errors import MessageParseError
        from claude_agent_sdk._internal.message_parser import parse_message
        from claude_agent_sdk._internal.transport.subprocess_cli import _parse_stdout_line
    except ImportError:
        note("claude-agent-sdk is not installed (pip install -e '.[claude]'): the sdk-parser row is missing")
        return None

    def parse(line: bytes) -> object:
        data = _parse_stdout_line(line.decode("utf-8"))
        if data is None:
            return None
        try:
            return parse_message(data)
        except MessageParseError:
            return None  # the SDK raises on some lines we keep (e.g. unknown types): counted as done

    return parse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB (default 50)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds; the best is kept (default 5)")
    ap.add_argument("--quick", action="store_true", help="5 MB, 3 rounds (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.mb, args.repeat = min(args.mb, 5.0), min(args.repeat, 3)
    lines = corpus(int(args.mb * 1_000_000))
    chunks = batches(lines)
    total = sum(len(x) for x in lines)
    print(
        f"corpus: {len(lines):,} lines, {total / 1e6:.1f} MB from {len(FIXTURES)} fixture files, "
        f"{len(chunks):,} batches of ~{BATCH_BYTES // 1024} KiB"
    )
    runs = decoders(chunks)
    best = dict.fromkeys(runs, float("inf"))
    # The cyclic GC stays on, as in a server: what a decoder's objects cost it is part of the figure.
    for _ in range(args.repeat):
        for name, fn in runs.items():  # interleaved: every decoder sees the same machine noise
            gc.collect()
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    rows = []
    for name, s in best.items():
        rows.append([name, len(lines) / s, total / s / 1e6, best["msgspec-dict"] / s, s / best["turnstile"]])
    table(
        f"decode ({total / 1e6:.0f} MB, best of {args.repeat})",
        ["decoder", "lines/s", "MB/s", "vs msgspec-dict", "turnstile speed-up"],
        rows,
    )
    target("decode: turnstile vs msgspec-to-dict", best["msgspec-dict"] / best["turnstile"], 0.7)
    if "sdk-parser" in best:
        target("decode: turnstile vs the SDK's parser", best["sdk-parser"] / best["turnstile"], 3.0)


if __name__ == "__main__":
    main()
