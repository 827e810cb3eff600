"""``turnstile log stats FILE [--json]``: what a log or CLI transcript contains, and every error in it."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from turnstile.engine.errors import LogInputError
from turnstile.engine.framing import DEFAULT_MAX_LINE, LineFramer
from turnstile.engine.log import CliDecodeError, CliLine, CliOversized, LogRepaired, UnknownEntry, kind_of
from turnstile.engine.protocol import (
    InvalidMessage,
    LineError,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    UnknownMessage,
    UnknownStreamEvent,
)
from turnstile.engine.transcript import Format, read_entries, sniff_format

__all__ = ["LogStats", "add_parser", "collect", "run"]

_CHUNK: Final = 1 << 20


class ErrorItem(msgspec.Struct, frozen=True):
    """One bad line: where, what kind of problem, and a short description."""

    line: int
    kind: str
    message: str


class LogStats(msgspec.Struct, kw_only=True):
    """The report ``turnstile log stats`` prints."""

    file: str
    format: Format
    lines: int = 0
    entries: int = 0
    by_kind: dict[str, int] = {}
    by_type: dict[str, int] = {}
    by_subtype: dict[str, int] = {}
    errors: list[ErrorItem] = []
    unknown_types: dict[str, int] = {}


def read_chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes in 1 MiB blocks (constant memory for any size)."""
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _first_line(path: Path) -> bytes:
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                return raw.strip()[:DEFAULT_MAX_LINE]
    return b""


def collect(path: Path, *, max_line: int = DEFAULT_MAX_LINE) -> LogStats:
    """Read ``path`` and count what it holds. Raises :class:`LogInputError` for unusable input."""
    if not path.exists():
        raise LogInputError(f"{path}: no such file")
    if path.is_dir():
        raise LogInputError(f"{path}: is a directory, not a log file")
    first = _first_line(path)
    if not first:
        raise LogInputError(f"{path}: the file is empty")
    stats = LogStats(file=str(path), format=sniff_format(first))
    by_kind: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    by_subtype: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    lines = 0

    def frames() -> Iterator[Any]:
        nonlocal lines
        framer = LineFramer(max_line)
        for chunk in read_chunks(path):
            for frame in framer.feed(chunk):
                lines += 1
                yield frame
        for frame in framer.eof():
            lines += 1
            yield frame

    for item in read_entries(frames()):
        entry, view = item.entry, item.view
        stats.entries += 1
        by_kind[kind_of(entry)] += 1
        if isinstance(entry, CliLine):
            by_type[entry.type] += 1
            sub = _subtype(view)
            if sub:
                by_subtype[f"{entry.type}/{sub}"] += 1
            if isinstance(view, UnknownMessage):
                unknown[view.type] += 1
            elif isinstance(view, InvalidMessage):
                stats.errors.append(ErrorItem(item.line_no, "invalid_message", f"{view.type}: {view.error}"))
            elif isinstance(view, LineError):
                stats.errors.append(ErrorItem(item.line_no, view.reason, view.error))
        elif isinstance(entry, CliDecodeError):
            stats.errors.append(ErrorItem(item.line_no, entry.reason, entry.error))
        elif isinstance(entry, CliOversized):
            stats.errors.append(
                ErrorItem(item.line_no, "oversized_line", f"{entry.length} bytes (limit {entry.limit})")
            )
        elif isinstance(entry, LogRepaired):
            stats.errors.append(
                ErrorItem(item.line_no, "log_repaired", f"{entry.dropped_bytes} torn bytes cut")
            )
        elif isinstance(entry, UnknownEntry):
            unknown[entry.kind] += 1
    stats.lines = lines
    stats.by_kind = dict(sorted(by_kind.items()))
    stats.by_type = dict(sorted(by_type.items()))
    stats.by_subtype = dict(sorted(by_subtype.items()))
    stats.unknown_types = dict(sorted(unknown.items()))
    if stats.entries == 0:
        raise LogInputError(f"{path}: no lines in it (only whitespace)")
    if stats.errors and len(stats.errors) == stats.entries:
        raise LogInputError(
            f"{path}: not a Turnstile log nor a CLI stream-json transcript "
            f"(none of its {stats.entries} lines is a JSON message; first error: {stats.errors[0].message})"
        )
    return stats


def _subtype(view: object) -> str | None:
    """``subtype`` for system/result lines, the inner event type for stream events."""
    if isinstance(view, SystemMessage | ResultMessage):
        return view.subtype
    if isinstance(view, StreamEvent):
        if isinstance(view.event, UnknownStreamEvent):
            return view.event.kind
        tag = view.event.__struct_config__.tag
        return tag if isinstance(tag, str) else None
    return None


def render_text(stats: LogStats) -> str:
    """The human-readable report."""
    head = f"{stats.file}: {stats.format} — {stats.lines} lines, {stats.entries} entries"
    out = [f"{head}, {len(stats.errors)} errors"]
    if stats.format == "turnstile":
        out.append("by kind:")
        out += [f"  {k:<28} {v:>8}" for k, v in stats.by_kind.items()]
    out.append("by type:")
    out += [f"  {k:<28} {v:>8}" for k, v in stats.by_type.items()]
    if stats.by_subtype:
        out.append("by subtype:")
        out += [f"  {k:<44} {v:>8}" for k, v in stats.by_subtype.items()]
    if stats.unknown_types:
        out.append("kept but not modelled (unknown types):")
        out += [f"  {k:<28} {v:>8}" for k, v in stats.unknown_types.items()]
    if stats.errors:
        out.append("errors:")
        out += [f"  line {e.line}: {e.kind}: {e.message}" for e in stats.errors]
    return "\n".join(out)


EPILOG: Final = """\
exit status (as linters do):
  0  the file was read and holds no errors (unknown message types are not errors)
  1  errors were found: bad lines, each listed with its line number (--exit-zero: 0)
  2  the file cannot be read, is empty, or is neither a Turnstile log nor a CLI transcript"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``log stats`` (and ``log export``) under ``turnstile log``."""
    log = subparsers.add_parser("log", help="inspect Turnstile logs and CLI transcripts")
    log_sub = log.add_subparsers(dest="log_command", required=True, metavar="COMMAND")
    p = log_sub.add_parser(
        "stats",
        help="count lines, entries by type and subtype, and list every error with its line number",
        description="Read a Turnstile log or a raw CLI stream-json transcript (with or without a recorder's "
        "_t field) and report what it holds.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="a Turnstile log (.ndjson) or a CLI transcript (.jsonl)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--exit-zero", action="store_true", help="exit 0 even when errors were found (the report is the same)"
    )
    p.add_argument(
        "--max-line", type=int, default=DEFAULT_MAX_LINE, help="line size limit in bytes (default 8 MiB)"
    )
    p.set_defaults(func=run)
    from turnstile.adapters.commands import export

    export.add_parser(log_sub)


def run(args: argparse.Namespace) -> int:
    """Run ``log stats``: 0 clean, 1 errors found (0 with ``--exit-zero``), 2 unusable input."""
    try:
        stats = collect(args.file, max_line=args.max_line)
    except LogInputError as exc:
        print(f"turnstile log stats: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"turnstile log stats: {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(stats) + b"\n")
    else:
        print(render_text(stats))
    return 1 if stats.errors and not args.exit_zero else 0
