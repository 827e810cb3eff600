"""Server-Sent Events over raw ASGI: a turn's (or a session's) log entries, resumable, never stuck.

The wire format, for each log entry::

    id: <seq>
    event: <kind>            (``cli.<type>`` for CLI lines, e.g. ``cli.stream_event``; else the entry
                              kind, e.g. ``turn.requested``, ``stream.ended``)
    data: <the entry's JSON> (the CLI's payload byte-identical to what the CLI wrote)

Rules that make the seed's "stuck at RECONNECTING" impossible:

* The first event carries a ``retry:`` hint. Everything after the client's ``Last-Event-ID`` (or
  ``?after=``) is replayed from the log, then the stream continues live — no gap, no duplicate, also
  across a server restart (the log is durable).
* The terminal entry (``stream.ended``) is always sent, then the response ends. A reconnect whose
  ``Last-Event-ID`` is at or past it gets **204**, which tells EventSource to stop reconnecting.
* Entries that are ready together go out in one write (one ASGI send per batch, not per event).
* A heartbeat comment is sent when nothing else was for ``heartbeat_s``. A client that does not take a
  write within ``send_timeout_s`` is dropped; it never slows the turn or other clients. A subscriber that
  falls behind the runtime's buffer is transparently re-subscribed from the log (the log is the buffer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import trio

from engine.log import CliLine, Record, kind_of

__all__ = ["SSE_HEADERS", "SseSource", "format_record", "stream_sse"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def event_name(rec: Record) -> bytes:
    """The SSE ``event:`` of a record: ``cli.<type>`` for CLI lines, else the entry's kind."""
    entry = rec.entry
    if type(entry) is CliLine:
        return b"cli." + entry.type.encode()
    return kind_of(entry).encode()


def format_record(rec: Record) -> bytes:
    """One SSE event for ``rec`` (the entry's JSON is one line; a stray CR is JSON whitespace)."""
    data = rec.data
    if b"\r" in data:
        # Outside strings a CR can only be JSON whitespace (inside a string it must be escaped), so
        # replacing it keeps the JSON equal while keeping SSE framing intact.
        data = data.replace(b"\r", b" ")
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (rec.entry.seq, event_name(rec), data)


class SseSource:
    """Where an SSE response reads from: a subscription factory and how to know it is over.

    ``subscribe(after)`` returns an async context manager yielding an async iterator of record batches
    that ends by itself after the terminal entry (for a turn) and raises the runtime's ``Lagged`` when
    the reader fell behind. ``is_last(record)`` says whether a record ends the response.
    """

    def __init__(
        self,
        subscribe: Callable[[int], Any],
        is_last: Callable[[Record], bool],
        lagged: type[BaseException],
    ) -> None:
        self.subscribe = subscribe
        self.is_last = is_last
        self.lagged = lagged


async def stream_sse(
    receive: Receive,
    send: Send,
    source: SseSource,
    *,
    after: int,
    retry_ms: int,
    heartbeat_s: float,
    send_timeout_s: float,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    status: int = 200,
    on_lag: Callable[[], None] | None = None,
) -> None:
    """Send an SSE response of everything after ``after``, live, until the source's last record.

    Cancellation: the response simply ends (the client reconnects with ``Last-Event-ID``); nothing in
    the log or the runtime depends on this response finishing.
    """
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
        start = {
            "type": "http.response.start",
            "status": status,
            "headers": SSE_HEADERS + (extra_headers or []),
        }
        # A comment first, so clients and proxies see the stream open at once. The retry hint rides in
        # the first event's block: a block holding only `retry:` dispatches no event per the standard,
        # but some clients (httpx-sse) report one anyway.
        if not await _send(send, start, send_timeout_s) or not await _body(
            send, b": stream\n\n", send_timeout_s
        ):
            nursery.cancel_scope.cancel()
            return
        retry_line = b"retry: %d\n" % retry_ms
        last = after
        done = False
        while not done:
            try:
                async with source.subscribe(last) as sub:
                    iterator = sub.__aiter__()
                    while True:
                        batch: list[Record] | None = None
                        with trio.move_on_after(heartbeat_s):
                            try:
                                batch = await iterator.__anext__()
                            except StopAsyncIteration:
                                done = True
                                break
                        if batch is None:
                            if not await _body(send, b": heartbeat\n\n", send_timeout_s):
                                done = True
                                break
                            continue
                        chunk = []
                        for rec in batch:
                            if rec.entry.seq <= last:
                                continue  # never a duplicate, whatever a resubscription replays
                            chunk.append(format_record(rec))
                            last = rec.entry.seq
                            if source.is_last(rec):
                                done = True
                                break
                        if chunk and retry_line:
                            chunk[0] = retry_line + chunk[0]
                            retry_line = b""
                        if chunk and not await _body(send, b"".join(chunk), send_timeout_s):
                            done = True  # the client stopped reading: drop it, it resumes from the log
                        if done:
                            break
            except source.lagged:
                # Fell behind the live buffer: the log is the buffer, so just read on from `last`.
                if on_lag is not None:
                    on_lag()
                continue
        await _send(send, {"type": "http.response.body", "body": b"", "more_body": False}, send_timeout_s)
        nursery.cancel_scope.cancel()


async def _body(send: Send, data: bytes, limit_s: float) -> bool:
    return await _send(send, {"type": "http.response.body", "body": data, "more_body": True}, limit_s)


async def _send(send: Send, message: Message, limit_s: float) -> bool:
    """Send, or give up after ``limit_s`` (a client that does not read). False when it failed."""
    with trio.move_on_after(limit_s):
        try:
            await send(message)
        except OSError:
            return False
        except Exception as exc:  # hypercorn raises its own ClientDisconnected-style errors
            if type(exc).__name__ in {"ClientDisconnected", "ClosedResourceError", "BrokenResourceError"}:
                return False
            raise
        return True
    return False


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
