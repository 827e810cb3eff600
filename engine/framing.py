"""Split a byte stream into lines with a size limit, in bounded memory (sans-IO).

Feed it whatever chunks a pipe delivers; it returns complete lines (without the ``\\n``). A line longer
than ``max_line`` is never buffered whole: the framer keeps its first and last ``keep`` bytes and counts
the rest, and reports an :class:`Oversized` when the line finally ends. At end of input a fragment
without a newline is reported as :class:`Truncated`.

>>> f = LineFramer(max_line=8)
>>> f.feed(b'{"a":1}\\n{"b"')
[b'{"a":1}']
>>> f.feed(b':2}\\n')
[b'{"b":2}']
"""

from __future__ import annotations

from typing import Final, cast

import msgspec

__all__ = ["DEFAULT_MAX_LINE", "Frame", "LineFramer", "Oversized", "Truncated"]

DEFAULT_MAX_LINE: Final = 8 * 1024 * 1024
"""Default line limit: 8 MiB (the SDK's is 1 MiB; real lines reach hundreds of KB)."""

_KEEP: Final = 4096


class Oversized(msgspec.Struct, frozen=True, kw_only=True):
    """A line longer than the limit: its total length, and its head and tail bytes."""

    length: int
    head: bytes
    tail: bytes
    limit: int


class Truncated(msgspec.Struct, frozen=True, kw_only=True):
    """The bytes after the last newline when the stream ended (a line cut short)."""

    raw: bytes


Frame = bytes | Oversized | Truncated
"""What the framer yields: a complete line, an oversized line's summary, or a truncated tail."""


class LineFramer:
    """Incremental ``\\n`` framing with a per-line size limit and bounded memory."""

    __slots__ = ("_buf", "_head", "_keep", "_length", "_overflow", "_tail", "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, keep: int = _KEEP) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1 byte")
        self.max_line = max_line
        self._keep = min(keep, max_line)
        self._buf = bytearray()
        # While a line is over the limit we keep only its head, a rolling tail, and its length.
        self._overflow = False
        self._head = b""
        self._tail = bytearray()
        self._length = 0

    def feed(self, chunk: bytes) -> list[Frame]:
        """Add ``chunk``; return the frames it completes, in order."""
        if not self._overflow:
            # The common case in one C-level split: the chunk completes lines, none over the limit
            # (a pipe read under load holds hundreds of them). Anything else goes the careful way.
            last = chunk.rfind(b"\n")
            if last >= 0:
                lines = chunk[:last].split(b"\n")
                if self._buf:
                    lines[0] = bytes(self._buf) + lines[0]
                if max(map(len, lines)) <= self.max_line:
                    self._buf.clear()
                    if last + 1 < len(chunk):
                        self._take(chunk, last + 1, len(chunk))
                    return cast(list[Frame], lines)
        return self._feed_each(chunk)

    def _feed_each(self, chunk: bytes) -> list[Frame]:
        out: list[Frame] = []
        start = 0
        n = len(chunk)
        while start < n:
            nl = chunk.find(b"\n", start)
            end = n if nl < 0 else nl
            self._take(chunk, start, end)
            if nl < 0:
                break
            out.append(self._finish())
            start = nl + 1
        return out

    def eof(self) -> list[Frame]:
        """Signal end of input; return the truncated tail (or oversized summary), if any."""
        if self._overflow:
            return [self._finish()]
        if self._buf:
            raw = bytes(self._buf)
            self._buf.clear()
            return [Truncated(raw=raw)]
        return []

    @property
    def pending(self) -> int:
        """Bytes of the current unfinished line seen so far."""
        return self._length if self._overflow else len(self._buf)

    def _take(self, chunk: bytes, start: int, end: int) -> None:
        if start == end:
            return
        if not self._overflow:
            if len(self._buf) + (end - start) <= self.max_line:
                self._buf += chunk[start:end]
                return
            # Crossing the limit: switch to head/tail mode and drop the middle.
            self._overflow = True
            self._length = len(self._buf)
            self._head = bytes((self._buf + chunk[start : start + self._keep])[: self._keep])
            self._tail = bytearray(self._buf[-self._keep :])
            self._buf.clear()
        self._length += end - start
        piece = chunk[max(start, end - self._keep) : end]
        self._tail += piece
        if len(self._tail) > self._keep:
            del self._tail[: len(self._tail) - self._keep]

    def _finish(self) -> Frame:
        if self._overflow:
            frame = Oversized(
                length=self._length, head=self._head, tail=bytes(self._tail), limit=self.max_line
            )
            self._overflow = False
            self._head = b""
            self._tail = bytearray()
            self._length = 0
            return frame
        line = bytes(self._buf)
        self._buf.clear()
        return line
