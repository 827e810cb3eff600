"""``turnstile replay FILE``: run a recorded log or CLI transcript through the machines and report.

``FILE`` may also be a session in Redis, ``redis://HOST:PORT/DB/SESSION`` (servers sharing a log): it is
read straight from its stream, and replays exactly as its export (``turnstile log export``) does.

Prints a table per stream (outcome and reason, time to first event, thinking, tools, total, tool calls,
cost); ``--trace`` lists every state change with its seq first; ``--json`` prints one JSON object
instead. ``--check GOLDEN`` compares the output with a golden file and exits 1 with a diff when they
differ. The file is read in chunks, so large logs stream through in constant memory; on a terminal a
progress line is drawn on stderr.

Exit status: 0 ok; 1 when the replay found violations (an entry a machine refused) or, with ``--check``,
when the output differs from the golden file (a golden file holds the violations it expects); 2 when the
file cannot be replayed (missing, empty, not a log nor a transcript) or the golden file cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Final

from turnstile.adapters.commands.sources import is_redis_url, read_source
from turnstile.engine.errors import LogInputError, TurnstileError
from turnstile.engine.fold import Change
from turnstile.engine.replay import (
    ReplayReport,
    golden_diff,
    render_json,
    render_table,
    render_trace_line,
    replay,
)
from turnstile.engine.transcript import frames_of, read_entries

__all__ = ["add_parser", "replay_text", "run"]

_CHUNK: Final = 1 << 20
_PROGRESS_MIN_BYTES: Final = 8 << 20  # smaller files replay in well under a second


EPILOG: Final = """\
exit status:
  0  every entry replayed cleanly (with --check: the output matches GOLDEN)
  1  violations: an entry a machine refused, listed under the table (with --check: the output differs
     from GOLDEN, whose own violations are expected)
  2  the file or GOLDEN cannot be read, or is neither a Turnstile log nor a CLI transcript

? in the table: not in the log (a footnote under the table says why)."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``replay`` on the ``turnstile`` command."""
    parser = subparsers.add_parser(
        "replay",
        help="replay a log or CLI transcript through the machines",
        description="Replay a Turnstile log (or a raw Claude Code stream-json transcript) through the "
        "session and stream machines, and report each stream's outcome and timing.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file",
        metavar="FILE",
        help="a Turnstile log or a CLI transcript (NDJSON), or a session in Redis: redis://HOST:PORT/DB/SESSION",
    )
    parser.add_argument(
        "--redis-prefix",
        help="the key prefix of a Redis source (default: $TURNSTILE_REDIS_PREFIX or turnstile)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--trace", action="store_true", help="list every state change with its seq")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="GOLDEN",
        help="compare the output with GOLDEN; exit 1 with a diff when they differ",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay ``args.file``; print the report (or check it against ``args.check``)."""
    path = str(args.file)
    try:
        text, report = _replay(
            path,
            as_json=args.json,
            trace=args.trace,
            stream=args.check is None,
            prefix=getattr(args, "redis_prefix", None),
        )
    except TurnstileError as exc:
        print(f"turnstile replay: {exc}", file=sys.stderr)
        return 2
    if args.check is None:
        sys.stdout.write(text)
        return 1 if report.violations else 0
    try:
        golden = Path(args.check).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"turnstile replay: cannot read golden file {args.check}: {reason}", file=sys.stderr)
        return 2
    diff = golden_diff(text, golden, name=str(args.check))
    if diff is None:
        print(f"replay of {path} matches {args.check}", file=sys.stderr)
        return 0
    sys.stdout.write(diff)
    print(
        f"turnstile replay: {path} no longer replays to {args.check} (diff above); if the change is "
        "intended, regenerate the golden file",
        file=sys.stderr,
    )
    return 1


def replay_text(path: Path | str, *, as_json: bool = False, trace: bool = False, stream: bool = False) -> str:
    """What ``turnstile replay`` prints for ``path`` (the text a golden file holds).

    With ``stream``, text trace lines are written to stdout as they happen instead of being returned.
    Raises :class:`engine.errors.LogInputError` for a file that cannot be replayed.
    """
    return _replay(path, as_json=as_json, trace=trace, stream=stream)[0]


def _replay(
    path: Path | str, *, as_json: bool, trace: bool, stream: bool, prefix: str | None = None
) -> tuple[str, ReplayReport]:
    source, size = read_source(str(path), prefix=prefix)
    if size == 0:
        source.close()
        raise LogInputError(f"{path} is empty: there is nothing to replay")
    kept: list[str] = []
    printer = _Progress(size) if size and sys.stderr.isatty() and size >= _PROGRESS_MIN_BYTES else None

    def on_change(change: Change) -> None:
        line = render_trace_line(change) + "\n"
        if stream:
            sys.stdout.write(line)
        else:
            kept.append(line)

    chunks = _counted(source, printer)
    try:
        report = replay(
            read_entries(frames_of(chunks)),
            on_change=on_change if trace and not as_json else None,
            keep_trace=trace and as_json,
        )
    except BrokenPipeError:
        raise  # writing the --trace lines to a closed stdout: not the file's fault
    except OSError as exc:
        raise LogInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        chunks.close()
        if printer is not None:
            printer.done()
    _check_replayable(path, report)
    if as_json:
        return render_json(report), report
    return "".join(kept) + ("\n" if trace and report.streams else "") + render_table(report), report


def _check_replayable(path: Path | str, report: ReplayReport) -> None:
    if report.entries == 0:
        if is_redis_url(str(path)):
            raise LogInputError(f"{path} has no entries: there is nothing to replay")
        raise LogInputError(f"{path} holds only blank lines: there is nothing to replay")
    if report.valid_entries == 0:
        raise LogInputError(
            f"{path} is neither a Turnstile log nor a CLI transcript: not one of its {report.entries} "
            "line(s) is a JSON object"
        )


def _counted(
    chunks: Generator[bytes, None, None], progress: _Progress | None
) -> Generator[bytes, None, None]:
    try:
        for chunk in chunks:
            if progress is not None:
                progress.advance(len(chunk))
            yield chunk
    finally:
        chunks.close()


class _Progress:
    """A one-line progress bar on stderr, redrawn at most 10 times a second."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done_bytes = 0
        self.last = 0.0
        self.out = sys.stderr

    def advance(self, n: int) -> None:
        self.done_bytes += n
        now = time.monotonic()
        if now - self.last < 0.1 and self.done_bytes < self.total:
            return
        self.last = now
        width = 30
        frac = min(self.done_bytes / self.total, 1.0)
        bar = "#" * int(frac * width)
        self.out.write(
            f"\rreplaying [{bar:<{width}}] {frac:6.1%}  {self.done_bytes >> 20} / {self.total >> 20} MiB"
        )
        self.out.flush()

    def done(self) -> None:
        self.out.write("\r" + " " * 70 + "\r")
        self.out.flush()


if __name__ == "__main__":  # pragma: no cover - `python -m turnstile.adapters.commands.replay FILE`
    _parser = argparse.ArgumentParser(prog="turnstile")
    add_parser(_parser.add_subparsers())
    _args = _parser.parse_args(["replay", *sys.argv[1:]])
    sys.exit(run(_args))
