"""``turnstile log export SOURCE``: a session's log as NDJSON, from Redis or from a file.

``SOURCE`` is a log file or a session in Redis (``redis://HOST:PORT/DB/SESSION``). The output (stdout, or
``-o FILE``) is the log's entries, one JSON object per line, byte for byte as stored — a file log, which
``turnstile replay`` and ``turnstile log stats`` read as they read any other, with the same results as
from the source itself.

Exit status: 0 exported; 1 some lines of a file source are not log entries (the rest is exported, each
bad line is named on stderr); 2 the source cannot be read (missing, unreachable Redis, no such session, or
not a Turnstile log at all).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import IO

import msgspec

from turnstile.adapters.commands.sources import read_source
from turnstile.engine.errors import LogInputError
from turnstile.engine.log import decode_entry
from turnstile.engine.transcript import frames_of

__all__ = ["add_parser", "export", "run"]

EPILOG = """\
exit status:
  0  exported
  1  some lines of the file are not log entries (the others are exported; stderr names each bad line)
  2  the source cannot be read, or holds no Turnstile log entry"""


def add_parser(log_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``export`` under ``turnstile log``."""
    p = log_sub.add_parser(
        "export",
        help="write a session's log (from Redis or a file) as NDJSON",
        description="Write a session's log as NDJSON: from a session in Redis (redis://HOST:PORT/DB/SESSION) "
        "or from a log file. The output replays exactly as the source does.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="a log file, or redis://HOST:PORT/DB/SESSION")
    p.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    p.add_argument(
        "--redis-prefix",
        help="the key prefix of a Redis source (default: $TURNSTILE_REDIS_PREFIX or turnstile)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export ``args.source``: 0, 1 (bad lines in a file) or 2 (unusable source)."""
    try:
        with contextlib.ExitStack() as stack:
            out: IO[bytes]
            if args.output is not None:
                out = stack.enter_context(open(args.output, "wb"))
            else:
                out = sys.stdout.buffer
            written, bad = export(args.source, out, prefix=args.redis_prefix)
    except LogInputError as exc:
        print(f"turnstile log export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"turnstile log export: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for line_no, why in bad:
        print(
            f"turnstile log export: {args.source}:{line_no}: not a log entry ({why}); left out",
            file=sys.stderr,
        )
    if not written:
        print(f"turnstile log export: {args.source} holds no Turnstile log entry", file=sys.stderr)
        return 2
    return 1 if bad else 0


def export(source: str, out: IO[bytes], *, prefix: str | None = None) -> tuple[int, list[tuple[int, str]]]:
    """Copy the log entries of ``source`` to ``out``; (entries written, [(line, why) of bad lines])."""
    chunks, _size = read_source(source, prefix=prefix)
    written = 0
    bad: list[tuple[int, str]] = []
    try:
        for line_no, frame in enumerate(frames_of(chunks), start=1):
            if not isinstance(frame, bytes):
                bad.append((line_no, "too long, or cut short at the end"))
                continue
            if not frame.strip():
                continue
            try:
                decode_entry(frame)
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError) as exc:
                bad.append((line_no, str(exc)[:120]))
                continue
            out.write(frame + b"\n")
            written += 1
    finally:
        chunks.close()
    return written, bad
