"""Replay throughput: decode + fold + timing, against decode alone.

Two corpora, each built from the recorded fixtures in ``tests/fixtures/transcripts`` repeated to at least
``--entries`` entries:

* ``transcript`` — the raw CLI transcripts concatenated (the fold infers the turns);
* ``turnstile``  — the same CLI lines as Turnstile's runtime logs them: each turn wrapped in
  ``turn.requested`` / ``prompt.written`` ... ``stream.ended`` entries, with stream ids.

For each, timed in one run, interleaved, best of ``--repeat`` rounds, reading the bytes in 1 MiB chunks
as ``turnstile replay`` does:

* ``decode``              — ``read_entries(frames_of(...))``: framing, the entry, the typed CLI view;
* ``decode+fold+timing``  — ``turnstile.engine.replay.replay`` over the same items: the session and stream
  machines (``transitions`` triggers for lifecycle entries), and every stream's timing.

Targets: >= 200k entries/s through decode + fold + timing, and >= 0.5x the decode-only rate.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

import _common  # noqa: F401  (puts the repo root on sys.path)
from _common import ROOT, gc_paused, note, table, target

from turnstile.engine.fold import SessionFold
from turnstile.engine.log import (
    CliLine,
    Entry,
    PromptWritten,
    SessionCreated,
    StreamEnded,
    TurnRequested,
    encode_entry,
    entry_from_frame,
)
from turnstile.engine.replay import replay
from turnstile.engine.transcript import frames_of, read_entries

TRANSCRIPTS = sorted((ROOT / "tests" / "fixtures" / "transcripts").glob("*.jsonl"))
CHUNK = 1 << 20


def transcript_corpus(min_entries: int) -> tuple[bytes, int]:
    """The raw transcripts concatenated, repeated to at least ``min_entries`` lines."""
    base = b"".join(p.read_bytes().rstrip(b"\n") + b"\n" for p in TRANSCRIPTS)
    lines = sum(1 for ln in base.splitlines() if ln.strip())
    reps = -(-min_entries // lines)
    return base * reps, lines * reps


def turnstile_corpus(min_entries: int) -> tuple[bytes, int]:
    """A Turnstile log: the transcripts' turns wrapped in the runtime's engine entries, unique stream ids."""
    out: list[bytes] = []
    seq = 0
    turn = 0

    def add(entry: Entry) -> None:
        out.append(encode_entry(entry) + b"\n")

    seq += 1
    add(SessionCreated(seq=seq, ts=0.0, session_id="bench", agent="claude"))
    while seq < min_entries:
        for path in TRANSCRIPTS:
            fold = SessionFold()  # infers the turns of this transcript, to know where to wrap them
            current: str | None = None
            for item in read_entries(frames_of(path.read_bytes())):
                changes = fold.apply(item.entry, item.view)
                opened = [c for c in changes if c.trigger == "new"]
                if opened:
                    turn += 1
                    current = f"b{turn}"
                    ts = item.entry.ts or 0.0
                    seq += 1
                    add(TurnRequested(seq=seq, ts=ts, stream=current, prompt="bench"))
                    seq += 1
                    add(PromptWritten(seq=seq, ts=ts, stream=current, pid=1))
                entry = item.entry
                if isinstance(entry, CliLine):
                    seq += 1
                    made = entry_from_frame(bytes(entry.msg), seq=seq, ts=entry.ts, stream=current)
                    assert made is not None
                    add(made[0])
                for view in fold.unended():
                    assert view.outcome is not None and current is not None
                    seq += 1
                    add(
                        StreamEnded(
                            seq=seq, ts=entry.ts, stream=current, outcome=view.outcome, timing=view.timing
                        )
                    )
                    fold.apply(StreamEnded(seq=0, ts=None, stream=view.id, outcome=view.outcome))
                    current = None
            fold.close()
    return b"".join(out), seq


def chunks(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]


def decode_only(data: bytes) -> int:
    n = 0
    for _ in read_entries(frames_of(chunks(data))):
        n += 1
    return n


def decode_fold_timing(data: bytes) -> int:
    report = replay(read_entries(frames_of(chunks(data))))
    assert report.streams and report.valid_entries == report.entries
    return report.entries


def best_rate(fn: Callable[[bytes], int], data: bytes) -> tuple[float, int]:
    with gc_paused():
        t0 = time.perf_counter()
        n = fn(data)
        elapsed = time.perf_counter() - t0
    return n / elapsed, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=200_000, help="minimum entries per corpus")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (the best is reported)")
    parser.add_argument("--quick", action="store_true", help="20k entries, 1 round (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.repeat = min(args.entries, 20_000), 1

    rows = []
    for name, build in (("transcript", transcript_corpus), ("turnstile", turnstile_corpus)):
        data, _ = build(args.entries)
        decode: list[float] = []
        full: list[float] = []
        count = 0
        for _ in range(args.repeat):  # interleaved: both see the same machine state
            rate, count = best_rate(decode_only, data)
            decode.append(rate)
            rate, _ = best_rate(decode_fold_timing, data)
            full.append(rate)
        best_decode, best_full = max(decode), max(full)
        rows.append((name, count, len(data) / 1e6, best_decode, best_full, best_full / best_decode))
    table(
        "Replay: decode + fold + timing vs decode alone (best of rounds)",
        ["corpus", "entries", "MB", "decode entries/s", "decode+fold+timing entries/s", "ratio"],
        rows,
    )
    worst_rate = min(r[4] for r in rows)
    worst_ratio = min(r[5] for r in rows)
    note("fixtures are short turns (about 16 lines each): lifecycle entries are a large share of them")
    target("replay entries/s (k)", worst_rate / 1000.0, 200.0, unit="k")
    target("replay vs decode-only", worst_ratio, 0.5)


if __name__ == "__main__":
    main()
