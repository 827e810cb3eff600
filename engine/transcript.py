"""Read a file's lines as log entries, whatever it is: a Turnstile log or a raw CLI transcript (sans-IO).

Turnstile's own logs are NDJSON entries (``{"kind": ..., "seq": ...}``). Raw transcripts are what the
CLI printed (the fixtures under ``tests/fixtures/``), optionally with a recorder's ``_t`` (arrival time in
ms) as each line's first key: ``{"_t":1785277220302,"type":...}``. :func:`read_entries` detects which
from the first meaningful line and yields uniform :class:`Item` values, so ``turnstile log stats`` and
``turnstile replay`` treat both alike.

For a raw transcript, entries are synthesised: ``seq`` counts the non-blank lines, ``ts`` comes from the
leading ``_t`` when present (else ``None``: timing unknown, never invented), ``stream`` is ``None`` (the
fold infers turns).

Feed it the frames of a :class:`engine.framing.LineFramer` so that huge files stream through in
constant memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Final, Literal, NamedTuple, TypeAlias

import msgspec

from turnstile.engine.framing import DEFAULT_MAX_LINE, Frame, LineFramer, Truncated
from turnstile.engine.log import (
    VIEW_TAGS,
    AnyEntry,
    CliDecodeError,
    CliLine,
    decode_entry,
    entry_from_frame,
    raw_field,
    valid_utf8,
    view_of,
)
from turnstile.engine.protocol import LineError, Message, decode_message

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


_log_head = msgspec.json.Decoder(_LogHead)

_RECORDER_KEY: Final = b'{"_t":'
"""How a recorder's line starts: its arrival time is the line's first key (``{"_t":<ms>,...}``)."""
_recorder_value = msgspec.json.Decoder(float | None)


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
    it = iter(frames)
    line_no = 0
    for first in it:
        line_no += 1
        if isinstance(first, bytes):
            if not first.strip():
                continue
            fmt = sniff_format(first.strip())
        elif isinstance(first, Truncated) and not first.raw.strip():
            continue  # trailing whitespace without a newline: no content
        else:
            fmt = "transcript"
        break
    else:
        return
    # The format is known from the first meaningful line on: one loop per format, each with its common
    # case inline (this runs per line of files of millions of lines).
    seq = 1
    item = _item
    if fmt == "turnstile":
        yield _log_item(line_no, seq, first, decode_views)
        decode = decode_entry
        view_of_ = view_of
        for frame in it:
            line_no += 1
            if type(frame) is bytes:
                line = frame.strip()
                if not line:
                    continue
                seq += 1
                try:
                    entry = decode(line)
                except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
                    yield _log_item(line_no, seq, frame, decode_views)
                    continue
                view = view_of_(entry) if decode_views and type(entry) is CliLine else None
                yield item(Item, (line_no, entry, view))
                continue
            if _blank(frame):
                continue
            seq += 1
            yield _log_item(line_no, seq, frame, decode_views)
        return
    yield _transcript_item(line_no, seq, first)
    decode_view = decode_message
    tags = VIEW_TAGS
    raw = msgspec.Raw
    key = _RECORDER_KEY
    for frame in it:
        line_no += 1
        if type(frame) is bytes and frame and frame[0] == 0x7B and frame[-1] == 0x7D:  # "{" ... "}"
            # A typed CLI message, as entry_from_frame makes it; anything else takes _transcript_item.
            seq += 1
            view = decode_view(frame)
            tag = tags.get(type(view))
            if tag is not None and (frame.isascii() or valid_utf8(frame)):
                ts = _recorder_ts(frame) if frame.startswith(key) else None
                entry = CliLine(seq=seq, ts=ts, stream=None, type=tag, msg=raw(frame))
                yield item(Item, (line_no, entry, view))
            else:
                yield _transcript_item(line_no, seq, frame)
            continue
        if _blank(frame):
            continue
        seq += 1
        yield _transcript_item(line_no, seq, frame)


# An Item without the Python-level ``__new__`` that NamedTuple generates (one per line read).
_item: Final = tuple.__new__


def _blank(frame: Frame) -> bool:
    if isinstance(frame, bytes):
        return not frame.strip()
    return isinstance(frame, Truncated) and not frame.raw.strip()


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


def _recorder_ts(frame: bytes) -> float | None:
    """The recorder's ``_t`` (ms since the epoch) of a line, in seconds; None when it has none.

    The recorder writes it as the line's first key, ``{"_t":<ms>,``: only that counts. A ``_t`` anywhere
    else is the CLI's own data (no CLI writes one), and reading only the line's first bytes keeps a
    line without it from being searched end to end.
    """
    if not frame.startswith(_RECORDER_KEY):
        return None
    end = frame.find(b",", 6)
    if end < 0:
        end = len(frame) - 1  # `{"_t":<ms>}`: a line with nothing else (a no_type error, with its time)
    try:
        t = _recorder_value.decode(frame[6:end])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # not a number (e.g. a string holding a comma): no time
    return t / 1000.0 if t is not None else None


def _transcript_item(line_no: int, seq: int, frame: Frame) -> Item:
    ts = _recorder_ts(frame) if isinstance(frame, bytes) else None
    made = entry_from_frame(frame, seq=seq, ts=ts, stream=None)
    if made is None:  # pragma: no cover - blank lines are skipped by the caller
        raise AssertionError("blank frame")
    entry, view = made
    return Item(line_no, entry, view)


def frames_of(data: bytes | Iterable[bytes], *, max_line: int | None = None) -> Iterator[Frame]:
    """Frame ``data`` (bytes, or an iterable of chunks such as a file read in blocks) into lines."""
    # One list of frames per chunk, flattened by chain (in C: no generator step per line).
    return chain.from_iterable(_frames_per_chunk(data, max_line or DEFAULT_MAX_LINE))


def _frames_per_chunk(data: bytes | Iterable[bytes], limit: int) -> Iterator[Sequence[Frame]]:
    framer = LineFramer(limit)
    chunks: Iterable[bytes] = [data] if isinstance(data, bytes) else data
    for chunk in chunks:
        if type(chunk) is not bytes:
            yield framer.feed(chunk)
            continue
        # The same frames as framer.feed(chunk), faster: the chunk's complete lines are split in one call
        # when none is over the limit (a line the framer holds a part of is finished by the framer first).
        head: list[Frame] = []
        if framer.pending:
            nl = chunk.find(b"\n")
            if nl < 0:
                yield framer.feed(chunk)
                continue
            head = framer.feed(chunk[: nl + 1])
            chunk = chunk[nl + 1 :]
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if len(chunk) - len(tail) > limit and max(map(len, lines)) > limit:
            yield head + framer.feed(chunk)
            continue
        if head:
            yield head
        yield lines
        if tail:
            framer.feed(tail)  # has no newline: makes no frame, keeps the bytes (or starts an oversized line)
    yield framer.eof()
