"""``GET /v1/sessions/events``: every session's summary, live, as Server-Sent Events.

What a session list needs to stay current without polling: on connect one ``sessions`` event with every
session (``{"sessions": [...]}``, as ``GET /v1/sessions``), then a ``session`` event with a session's
summary whenever an engine entry is appended to its log (a turn requested or ended, a process spawned or
exited, a title, a stop) or a CLI line moves one of its machines (a turn starts thinking, responding or
running a tool) — never per token —, and ``session.deleted`` (``{"id": ...}``) when one is
deleted. Changes are coalesced per session (:class:`engine.runtime.watch.SessionWatch`): a client that
reads slowly gets each session's latest summary, never a backlog. A ``: heartbeat`` comment follows
``heartbeat_s`` of silence; a client that does not take a write within ``send_timeout_s`` is dropped.

There is nothing to resume: a reconnecting client gets a fresh ``sessions`` snapshot. Each summary carries
the session's ``last_seq``, so a client that also follows a turn's own stream can tell which is newer.
"""

from __future__ import annotations

import msgspec
import trio

from turnstile.adapters.sse import SSE_HEADERS, Receive, Send, Sender, cancel_on_disconnect
from turnstile.engine.errors import SessionNotFound
from turnstile.engine.runtime.runtime import Runtime

__all__ = ["stream_session_summaries"]

_encode = msgspec.json.encode


def _event(name: bytes, data: object) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name, _encode(data))


async def stream_session_summaries(
    runtime: Runtime,
    receive: Receive,
    send: Send,
    *,
    retry_ms: int,
    heartbeat_s: float,
    send_timeout_s: float,
) -> None:
    """Send the summary feed until the client goes away (or the runtime closes)."""
    await runtime.wait_recovered()
    with runtime.watch_sessions() as watch:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope)
            out = Sender(send)
            out.poke = watch.poke
            nursery.start_soon(out.watch, heartbeat_s, send_timeout_s, nursery.cancel_scope)
            start = {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
            # Marks made while the snapshot is taken are kept by the watch: the next event repeats them.
            snapshot = b"retry: %d\n" % retry_ms + _event(b"sessions", {"sessions": runtime.sessions()})
            if not await out.send(start) or not await out.body(snapshot):
                nursery.cancel_scope.cancel()
                return
            while not watch.closed:
                changed = await watch.changed()
                if watch.closed:
                    break  # the runtime is shutting down
                if not changed:
                    if not await out.body(b": heartbeat\n\n"):
                        break
                    continue
                chunk = []
                for sid in changed:
                    try:
                        info = runtime.session(sid).info()
                    except SessionNotFound:
                        chunk.append(_event(b"session.deleted", {"id": sid}))
                        continue
                    chunk.append(_event(b"session", info))
                if not await out.body(b"".join(chunk)):
                    break  # the client stopped reading: it reconnects and gets a fresh snapshot
            await out.send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()
