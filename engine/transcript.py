"""Read a file's lines as log entries, whatever it is: a Turnstile log or a raw CLI transcript (sans-IO).

Turnstile's own logs are NDJSON entries (``{"kind": ..., "seq": ...}``). Raw transcripts are what the
CLI printed (the fixtures under ``tests/fixtures/``), optionally with a recorder's ``_t`` field (arrival
time in ms). :func:`read_entries` detects which from the first meaningful line and yields uniform
:class:`Item` values, so ``turnstile log stats`` and ``turnstile replay`` treat both alike.

For a raw transcript, entries are synthesised: ``seq`` counts the non-blank lines, ``ts`` comes from
``_t`` when present (else ``None``: timing unknown, never invented), ``stream`` is ``None`` (the fold
infers turns).

Feed it the frames of a :class:`engine.framing.LineFramer` so that huge files stream through in
constant memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple, TypeAlias

import msgspec

from engine.framing import DEFAULT_MAX_LINE, Frame, LineFramer, Truncated
from engine.log import AnyEntry, CliDecodeError, CliLine, decode_entry, entry_from_frame, raw_field, view_of
from engine.protocol import LineError, Message

__all__ = ["Format", "Item", "frames_of", "read_entries", "sniff_format"]

Format: TypeAlias = Literal["turnstile", "transcript"]


class Item(NamedTuple):
    """One line's entry (``view`` is the typed CLI message for CLI lines, else None)."""

    line_no: int
    entry: AnyEntry
    view: Message | LineError | None


class _LogHead(msgspec.Struct):
    kind: str
    seq: int


class _RecorderTime(msgspec.Struct):
    t: float | None = msgspec.field(default=None, name="_t")


_log_head = msgspec.json.Decoder(_LogHead)
_recorder_time = msgspec.json.Decoder(_RecorderTime)


def sniff_format(line: bytes) -> Format:
    """``turnstile`` when the line is a log entry (has ``kind`` and ``seq``), else ``transcript``."""
    try:
        _log_head.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "transcript"
    return "turnstile"


def read_entries(frames: Iterable[Frame], *, decode_views: bool = True) -> Iterator[Item]:
    """Yield an :class:`Item` per non-blank line of a log or transcript. Never raises on bad lines.

    In a Turnstile log, a line that is not an entry becomes a :class:`CliDecodeError` item (reason
    ``malformed``) at its line number, so a damaged log can still be inspected. With ``decode_views``
    false, CLI lines are not decoded into typed views (faster when only entries are needed).
    """
    fmt: Format | None = None
    seq = 0
    for line_no, frame in enumerate(frames, start=1):
        if isinstance(frame, bytes):
            if not frame.strip():
                continue
            if fmt is None:
                fmt = sniff_format(frame.strip())
        elif isinstance(frame, Truncated) and not frame.raw.strip():
            continue  # trailing whitespace without a newline: no content
        elif fmt is None:
            fmt = "transcript"
        seq += 1
        if fmt == "turnstile":
            yield _log_item(line_no, seq, frame, decode_views)
        else:
            yield _transcript_item(line_no, seq, frame)


def _log_item(line_no: int, seq: int, frame: Frame, decode_views: bool) -> Item:
    if isinstance(frame, bytes):
        try:
            entry = decode_entry(frame.strip())
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raw, encoding = raw_field(frame)
            bad = CliDecodeError(
                seq=seq, ts=None, reason="malformed", error=str(exc), raw=raw, encoding=encoding
            )
            return Item(line_no, bad, None)
        view = view_of(entry) if decode_views and isinstance(entry, CliLine) else None
        return Item(line_no, entry, view)
    made = entry_from_frame(frame, seq=seq, ts=None, stream=None)
    assert made is not None  # oversized and truncated frames always make an entry
    return Item(line_no, made[0], None)


def _transcript_item(line_no: int, seq: int, frame: Frame) -> Item:
    ts: float | None = None
    if isinstance(frame, bytes) and b'"_t"' in frame:
        try:
            t = _recorder_time.decode(frame).t
        except (msgspec.DecodeError, msgspec.ValidationError):
            t = None
        ts = t / 1000.0 if t is not None else None
    made = entry_from_frame(frame, seq=seq, ts=ts, stream=None)
    if made is None:  # pragma: no cover - blank lines are skipped by the caller
        raise AssertionError("blank frame")
    entry, view = made
    return Item(line_no, entry, view)


def frames_of(data: bytes | Iterable[bytes], *, max_line: int | None = None) -> Iterator[Frame]:
    """Frame ``data`` (bytes, or an iterable of chunks such as a file read in blocks) into lines."""
    framer = LineFramer(max_line or DEFAULT_MAX_LINE)
    chunks: Iterable[bytes] = [data] if isinstance(data, bytes) else data
    for chunk in chunks:
        yield from framer.feed(chunk)
    yield from framer.eof()
