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
* Only written entries are sent. When the log cannot be written (disk full) the response sends one
  ``event: storage.failed`` with no ``id:`` (a seq is never named before it is written) and ends::

      event: storage.failed
      data: {"outcome":"failed","reason":"storage failed: ...","last_written_seq":340,"stream":"t2"}

  Reconnecting with ``Last-Event-ID`` gets 503 ``storage_unavailable`` while the storage still fails,
  then whatever was written since (the entries kept in memory, the turn's real terminal entry).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import msgspec
import trio

from turnstile.engine.errors import StorageFailed
from turnstile.engine.log import CliLine, Record, kind_of

__all__ = [
    "SSE_HEADERS",
    "Sender",
    "SseSource",
    "cancel_on_disconnect",
    "format_record",
    "format_storage_failed",
    "stream_sse",
]

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


def format_storage_failed(exc: StorageFailed) -> bytes:
    """The seq-less ``storage.failed`` event: the log cannot be written, so this response ends here."""
    data = msgspec.json.encode(
        {"outcome": "failed", "reason": exc.reason, "last_written_seq": exc.last_seq, "stream": exc.stream}
    )
    return b"event: storage.failed\ndata: %s\n\n" % data


class SseSource:
    """Where an SSE response reads from: a subscription factory and how to know it is over.

    ``subscribe(after)`` returns an async context manager yielding an async iterator of record batches
    that ends by itself after the terminal entry (for a turn) and raises the runtime's ``Lagged`` when
    the reader fell behind, and whose ``poke()`` makes a pending read return an empty batch (the cue for
    a heartbeat) — :class:`engine.runtime.Subscription` is one. ``is_last(record)`` says whether a record
    ends the response.
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
    encode: Callable[[Record], bytes] = format_record,
    trailer: bytes = b"",
) -> None:
    """Send an SSE response of everything after ``after``, live, until the source's last record.

    ``encode`` turns a record into its SSE bytes (:func:`format_record` by default; another protocol may
    map a record to several events or to none, ``b""``). ``trailer`` is sent once the last record was.

    Cancellation: the response simply ends (the client reconnects with ``Last-Event-ID``); nothing in
    the log or the runtime depends on this response finishing.
    """
    # Per event this loop does no more than wait for a batch and send it: the heartbeat and the send
    # deadline are kept by one watchdog task per response instead of a cancel scope per event (each
    # costs a deadline-heap entry, and at thousands of events a second that showed in the profiles).
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope)
        out = Sender(send)
        nursery.start_soon(out.watch, heartbeat_s, send_timeout_s, nursery.cancel_scope)
        start = {
            "type": "http.response.start",
            "status": status,
            "headers": SSE_HEADERS + (extra_headers or []),
        }
        # A comment first, so clients and proxies see the stream open at once. The retry hint rides in
        # the first event's block: a block holding only `retry:` dispatches no event per the standard,
        # but some clients (httpx-sse) report one anyway.
        if not await out.send(start) or not await out.body(b": stream\n\n"):
            nursery.cancel_scope.cancel()
            return
        retry_line = b"retry: %d\n" % retry_ms
        last = after
        done = False
        ended = False  # the last record went out, or the source ended (not: the client left)
        while not done:
            try:
                async with source.subscribe(last) as sub:
                    out.poke = sub.poke
                    async for batch in sub:
                        if not batch:
                            # Nothing for heartbeat_s: the watchdog poked the subscription.
                            if not await out.body(b": heartbeat\n\n"):
                                done = True
                                break
                            continue
                        chunk = []
                        for rec in batch:
                            if rec.entry.seq <= last:
                                continue  # never a duplicate, whatever a resubscription replays
                            event = encode(rec)
                            if event:
                                chunk.append(event)
                            last = rec.entry.seq
                            if source.is_last(rec):
                                done = ended = True
                                break
                        if chunk and retry_line:
                            chunk[0] = retry_line + chunk[0]
                            retry_line = b""
                        if chunk and not await out.body(b"".join(chunk)):
                            done = True  # the client stopped reading: drop it, it resumes from the log
                        if done:
                            break
                    else:
                        done = ended = True  # the source ended (a session stream whose log closed)
            except source.lagged:
                # Fell behind the live buffer: the log is the buffer, so just read on from `last`.
                if on_lag is not None:
                    on_lag()
                continue
            except StorageFailed as exc:
                # Nothing more can be written, so nothing more can be sent: say so rather than hang.
                await out.body(format_storage_failed(exc))
                done = True
            finally:
                out.poke = None
        if ended and trailer:
            await out.body(trailer)
        await out.send({"type": "http.response.body", "body": b"", "more_body": False})
        nursery.cancel_scope.cancel()


class Sender:
    """One response's ASGI ``send``, with the bookkeeping its watchdog needs (no timers per send)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.sending_since: float | None = None
        self.last_send = trio.current_time()
        #: Wakes the subscription's pending read with an empty batch (``Subscription.poke``), if it can.
        self.poke: Callable[[], None] | None = None

    async def body(self, data: bytes) -> bool:
        return await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def send(self, message: Message) -> bool:
        """Send; False when the client is gone. The watchdog cancels a send that takes too long."""
        self.sending_since = trio.current_time()
        try:
            await self._send(message)
        except OSError:
            return False
        except Exception as exc:  # hypercorn raises its own ClientDisconnected-style errors
            if type(exc).__name__ in {"ClientDisconnected", "ClosedResourceError", "BrokenResourceError"}:
                return False
            raise
        finally:
            self.sending_since = None
            self.last_send = trio.current_time()
        return True

    async def watch(self, heartbeat_s: float, send_timeout_s: float, scope: trio.CancelScope) -> None:
        """Drop the client when one send takes ``send_timeout_s``; poke for a heartbeat after ``heartbeat_s``
        without a send. Wakes only when one of those instants may have come, not per event."""
        while True:
            now = trio.current_time()
            since = self.sending_since
            if since is not None:
                if now - since >= send_timeout_s:
                    scope.cancel()  # the client takes nothing: end the response (it resumes from the log)
                    return
                wake = since + send_timeout_s
            elif now - self.last_send >= heartbeat_s:
                if self.poke is not None:
                    self.poke()  # the sender sends the heartbeat (it is the only task that sends)
                # Look again once that send could have stalled (or a resubscription is in place).
                wake = now + min(send_timeout_s, heartbeat_s)
            else:
                wake = min(self.last_send + heartbeat_s, now + send_timeout_s)
            await trio.sleep_until(max(wake, now + 0.001))


async def cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the client disconnects (a streamed response's companion task)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
