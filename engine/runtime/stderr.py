"""What to keep of an agent's stderr: framed lines, cut to a size, rate-limited, and a tail (sans-IO).

stderr is diagnostics, not protocol: a CLI that floods it must not flood the log. Lines go through a token
bucket (``rate`` lines per second, bursts of ``burst``); lines over the budget are counted, and the count
rides on the next line that is kept (``dropped``) or on a last empty entry at end of file. The last
``tail`` lines — all of them, limited or not — are kept for the ``process.exited`` entry, which is where
a crash's explanation usually is.
"""

from __future__ import annotations

from collections import deque

from turnstile.engine.framing import LineFramer, Oversized, Truncated

__all__ = ["StderrCapture"]


class StderrCapture:
    """Feed stderr chunks with the current time; get ``(text, dropped)`` pairs to log."""

    def __init__(self, *, max_line: int, rate: float, burst: int, tail: int) -> None:
        self._framer = LineFramer(max_line=max_line, keep=min(max_line, 1024))
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None
        self._dropped = 0
        self.tail: deque[str] = deque(maxlen=max(tail, 1))
        self.lines_seen = 0

    def feed(self, chunk: bytes, now: float) -> list[tuple[str, int]]:
        """Add a chunk read at time ``now``; return the lines to log with their dropped counts."""
        return self._take(self._framer.feed(chunk), now)

    def eof(self, now: float) -> list[tuple[str, int]]:
        """End of stderr: the last partial line, and the count of lines dropped since the last kept one."""
        out = self._take(self._framer.eof(), now)
        if self._dropped:
            out.append(("", self._dropped))
            self._dropped = 0
        return out

    def _take(self, frames: list[bytes | Oversized | Truncated], now: float) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for frame in frames:
            if isinstance(frame, Oversized):
                text = frame.head.decode("utf-8", "replace") + f"... [line of {frame.length} bytes cut]"
            else:
                raw = frame.raw if isinstance(frame, Truncated) else frame
                text = raw.decode("utf-8", "replace").rstrip()
            if not text.strip():
                continue
            self.lines_seen += 1
            self.tail.append(text)
            if self._allow(now):
                out.append((text, self._dropped))
                self._dropped = 0
            else:
                self._dropped += 1
        return out

    def _allow(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
