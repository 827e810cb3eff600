"""The replay viewer's data: a log run through the engine's fold, as ``turnstile replay --json --trace``.

``GET /v1/sessions/{sid}/replay`` replays a session's log; ``POST /v1/replay`` replays a file the client
sends (``{"name": ..., "text": ...}``: a Turnstile log or a raw CLI transcript, as ``turnstile replay``
reads). Both answer a :class:`ReplayDocument`: the report ``turnstile replay FILE --json --trace`` prints
(streams, violations and every state change with its seq) and the entries as the engine read them (for a
raw transcript: synthesised, with ``seq`` and the recorder's ``ts``), so a page can show the entries at any
point and place the state changes in time. What the viewer shows is what the engine computed.

The fold runs on the event loop in batches, yielding to other tasks in between (a large log never stalls
the streams being served); inputs are bounded by ``max_replay_bytes``.
"""

from __future__ import annotations

from itertools import islice
from typing import Final

import msgspec
import trio

from turnstile.adapters.errors import ApiError
from turnstile.engine.log import encode_entry
from turnstile.engine.replay import Replayer, ReplayReport
from turnstile.engine.transcript import Format, frames_of, read_entries, sniff_format

__all__ = ["ReplayDocument", "ReplayUpload", "replay_document"]

_BATCH: Final = 2000


class ReplayUpload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/replay`` body: the file's text (UTF-8) and, for display, its name."""

    text: str
    name: str = "upload"


class ReplayDocument(msgspec.Struct, frozen=True, kw_only=True):
    """What the replay endpoints answer. ``report`` is exactly ``turnstile replay --json --trace``'s."""

    name: str
    format: Format
    report: ReplayReport
    entries: list[msgspec.Raw]


def _format_of(data: bytes) -> Format:
    for line in data.split(b"\n", 64)[:64]:
        if line.strip():
            return sniff_format(line.strip())
    return "transcript"


async def replay_document(data: bytes, *, name: str) -> bytes:
    """Replay ``data`` (a log or transcript) and encode the :class:`ReplayDocument`. Raises
    :class:`ApiError` 400 ``not_replayable`` when it holds nothing to replay."""
    items = read_entries(frames_of(data))
    replayer = Replayer(keep_trace=True)
    entries: list[msgspec.Raw] = []
    try:
        while batch := list(islice(items, _BATCH)):
            replayer.feed(batch)
            entries.extend(msgspec.Raw(encode_entry(item.entry)) for item in batch)
            await trio.lowlevel.checkpoint()
        report = replayer.report()
    finally:
        replayer.close()
    if report.entries == 0:
        raise ApiError(400, "not_replayable", f"{name} is empty: there is nothing to replay")
    if report.valid_entries == 0:
        raise ApiError(
            400,
            "not_replayable",
            f"{name} is neither a Turnstile log nor a CLI transcript: not one of its {report.entries} "
            "line(s) is a JSON object",
        )
    doc = ReplayDocument(name=name, format=_format_of(data), report=report, entries=entries)
    return msgspec.json.encode(doc)
