"""Plain references the hot paths are checked against (one idea each, no shortcuts)."""

from __future__ import annotations

from collections.abc import Iterable

from turnstile.engine.framing import Frame
from turnstile.engine.log import Entry, entry_from_frame
from turnstile.engine.protocol import LineError, Message


def one_line_at_a_time(
    frames: Iterable[Frame], *, seq: int, ts: float | None, stream: str | None
) -> list[tuple[Entry, Message | LineError | None]]:
    """What ``entries_from_frames`` must return: ``entry_from_frame`` per frame, blank ones skipped."""
    out = []
    for frame in frames:
        made = entry_from_frame(frame, seq=seq, ts=ts, stream=stream)
        if made is not None:
            out.append(made)
            seq += 1
    return out
