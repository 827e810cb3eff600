"""The WebSocket front-end (trio-websocket): the same log entries as JSON text frames, plus client ops.

Serve it on its own port with :func:`serve_websockets`, or call :func:`handle_connection` from your own
``trio_websocket.serve_websocket`` handler. Protocol (``docs/api.md`` has the full table):

Client → server (one JSON object per text frame; ``id`` is optional and echoed back)::

    {"op": "subscribe", "session": "s1", "turn": "t2", "after": 0, "id": "c1"}
    {"op": "unsubscribe", "sub": "c1"}
    {"op": "prompt", "session": "s1", "prompt": "hello", "id": "c2"}
    {"op": "interrupt", "session": "s1", "turn": "t2"}
    {"op": "ping"}

Server → client::

    {"type": "ack", "op": "subscribe", "id": "c1", "sub": "c1"}
    {"type": "entries", "sub": "c1", "entries": [<entry JSON>, ...]}     (coalesced, in log order)
    {"type": "end", "sub": "c1", "last_seq": 42}                         (after the turn's stream.ended)
    {"type": "end", "sub": "c1", "last_seq": 40, "outcome": "failed",
     "reason": "storage failed: ...", "storage_failed": true}            (the log cannot be written)
    {"type": "ack", "op": "prompt", "id": "c2", "turn_id": "t3"}
    {"type": "pong"}
    {"type": "error", "id": "c2", "code": "session_not_found", "message": "..."}

Bad frames never take the server down (an exception escaping a trio-websocket handler would stop the
whole ``serve_websocket`` server, so everything is caught here): binary frames, invalid JSON and unknown
ops get a typed ``error`` frame; frames over the size limit close the connection with 1009; an
unexpected failure closes that connection with 1011 and a reason. A slow client never blocks the turn:
its subscriptions fall behind and catch up from the log.

Frames are written whole or not at all, whatever is cancelled (half a frame would end the connection for
every subscription on it), and an unsubscribe is exact: once its ack is sent, no frame of that
subscription follows; the subscription cap counts running subscriptions, so it cannot be bypassed.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)
from wsproto import WSConnection
from wsproto.connection import ConnectionState as WsState
from wsproto.events import TextMessage

from turnstile.adapters import views
from turnstile.adapters.config import ServerConfig
from turnstile.adapters.direct_write import write_now
from turnstile.adapters.errors import error_body, status_for
from turnstile.adapters.guard import Refusal, RequestPolicy, request_policy
from turnstile.engine.errors import Lagged, StorageFailed, TurnstileError
from turnstile.engine.log import Record, SessionStopped, StreamEnded
from turnstile.engine.runtime.runtime import Runtime

__all__ = ["Connections", "handle_connection", "serve_websockets"]

log = logging.getLogger("turnstile.websocket")

_OUTBOX: Final = 64  # frames
_OUTBOX_BYTES: Final = 1 << 20  # catch-up frames are ~200 KB: without this, 64 of them held 12 MB


class _Op(msgspec.Struct, kw_only=True):
    op: str
    id: str | int | None = None
    session: str | None = None
    turn: str | None = None
    after: int = 0
    sub: str | None = None
    prompt: str | None = None


class Connections:
    """The live connections of one WebSocket server, so a shutdown can let them flush first."""

    def __init__(self) -> None:
        self.live: set[_Connection] = set()

    def busy(self) -> bool:
        """Whether any connection still has a subscription or unsent frames."""
        return any(c.subs or c.outbox for c in self.live)

    async def drain(self, limit_s: float) -> None:
        """Wait (at most ``limit_s``) until every subscription has sent what the log gave it."""
        with trio.move_on_after(limit_s):
            for _ in range(int(limit_s / 0.01) + 1):
                if not self.busy():
                    break
                await trio.sleep(0.01)
            # One more beat for the writers to hand the last frames to the sockets.
            await trio.sleep(0.05)


class _Sub:
    """One subscription of a connection: the cancel scope its pump runs in, and whether it was
    unsubscribed (a plain flag: the writers check it before every frame, and ``cancel_called`` reads
    the clock)."""

    __slots__ = ("scope", "unsubscribed")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.unsubscribed = False

    def cancel(self) -> None:
        """Unsubscribe: no frame of it is started from now on, and its pump ends at its next checkpoint."""
        self.unsubscribed = True
        self.scope.cancel()


class _Outbox:
    """The frames waiting for a connection's one writer task: a bounded queue with no scheduling cost.

    ``put`` is synchronous while there is room (a memory channel's ``send`` passes through the scheduler
    for every frame, which showed per event); a producer that finds it full — ``limit`` frames, or
    ``byte_limit`` bytes or more — waits until the writer took some, so a client that stops reading
    holds up only this connection's subscriptions — which then fall behind and catch up from the log.
    Each frame goes with the subscription it belongs to (None for the connection's own answers), so the
    writer can drop the frames of a subscription unsubscribed while they waited; the byte limit keeps
    that backlog, and the memory it holds, small.
    """

    def __init__(self, limit: int, byte_limit: int) -> None:
        self._frames: deque[tuple[bytes, _Sub | None]] = deque()
        self._limit = limit
        self._byte_limit = byte_limit
        self._bytes = 0
        self._ready = trio.Event()  # set while there are frames
        self._room = trio.Event()  # set while there is room
        self._room.set()

    def __len__(self) -> int:
        return len(self._frames)

    async def put(self, frame: bytes, owner: _Sub | None = None) -> None:
        """Queue ``frame`` (of the subscription ``owner``); waits only while the queue is full."""
        while len(self._frames) >= self._limit or self._bytes >= self._byte_limit:
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()
        self._frames.append((frame, owner))
        self._bytes += len(frame)
        self._ready.set()

    async def get(self) -> tuple[bytes, _Sub | None]:
        """The next frame and its owner, in order; waits while there is none."""
        while not self._frames:
            if self._ready.is_set():
                self._ready = trio.Event()
            await self._ready.wait()
        item = self._frames.popleft()
        self._bytes -= len(item[0])
        if len(self._frames) < self._limit and self._bytes < self._byte_limit:
            self._room.set()
        return item


class _DirectSend:
    """Text frames written straight to the socket when the kernel takes them whole (the common case).

    ``WebSocketConnection.send_message`` passes through a lock and trio's ``send_all`` — two trips
    through the scheduler per frame, which at thousands of frames a second made the WebSocket path
    several times slower than SSE at the tail. This does what it does (wsproto builds the frame, the
    stream lock serialises writers) but writes at once when nobody else is writing, and falls back to
    the locked ``send_all`` for whatever the kernel does not take. It relies on trio-websocket's
    internals (``_wsproto``, ``_stream``, ``_stream_lock``, ``_close_reason``): :meth:`of` checks they
    are there and returns None otherwise (then ``send_message`` is used), and a test fails when a
    trio-websocket release no longer has them.
    """

    def __init__(self, ws: WebSocketConnection, stream: trio.SocketStream, send_timeout_s: float) -> None:
        self._ws = ws
        self._stream = stream
        self._lock: trio.StrictFIFOLock = ws._stream_lock
        self._proto: WSConnection = ws._wsproto
        self._timeout = send_timeout_s
        self._writing: trio.CancelScope | None = None  # the frame being finished (under the lock)
        self._aborted = False

    @classmethod
    def of(cls, ws: WebSocketConnection, send_timeout_s: float = 10.0) -> _DirectSend | None:
        """The direct sender of ``ws``, or None when trio-websocket's internals are not as expected.

        A frame whose write does not finish within ``send_timeout_s`` (a client that stopped reading)
        closes the connection, as for SSE: the client resumes from the log with ``after``.
        """
        stream = getattr(ws, "_stream", None)
        lock = getattr(ws, "_stream_lock", None)
        proto = getattr(ws, "_wsproto", None)
        if (
            isinstance(stream, trio.SocketStream)
            and isinstance(lock, trio.StrictFIFOLock)
            and isinstance(proto, WSConnection)
            and hasattr(ws, "_close_reason")
        ):
            return cls(ws, stream, send_timeout_s)
        return None

    async def send_text(self, frame: bytes, owner: _Sub | None = None) -> None:
        """Send ``frame`` (UTF-8 JSON) as one text message: whole, or not at all.

        Once its first byte is on the wire the rest follows whatever is cancelled meanwhile — half a
        frame would corrupt the stream for every subscription on the connection — bounded by
        ``send_timeout_s`` and :meth:`abort` (either closes the connection). Before that a cancellation
        leaves nothing of it on the wire, and a frame of an ``owner`` unsubscribed by then is dropped
        unwritten. Raises ConnectionClosed when the connection is gone.
        """
        ws = self._ws
        if ws._close_reason is not None or self._proto.state is not WsState.OPEN:
            await ws.send_message(frame.decode())  # raises ConnectionClosed as trio-websocket does
            return
        data = self._proto.send(TextMessage(data=frame.decode()))
        if self._lock.locked():
            # Another frame is being written: wait for it (cancellable, as nothing of this one is out).
            async with self._lock:
                if owner is not None and owner.unsubscribed:
                    return
                if ws._close_reason is not None:  # closed while we waited: no data after a close
                    raise ConnectionClosed(ws._close_reason)
                await self._write_rest(memoryview(data))
            return
        if owner is not None and owner.unsubscribed:
            await trio.lowlevel.checkpoint()
            return
        try:
            sent = write_now(self._stream, data)
        except OSError as exc:
            raise ConnectionClosed(CloseReason(1006, f"write failed: {exc.strerror}")) from exc
        if sent == len(data):
            await trio.lowlevel.cancel_shielded_checkpoint()  # still one scheduling point per send
            return
        # The kernel took part of the frame (or none): the rest under the lock, which nobody can have
        # taken since locked() said no (no checkpoint in between), shielded from here on.
        with trio.CancelScope(shield=True):
            async with self._lock:
                await self._write_rest(memoryview(data)[sent:])

    def abort(self) -> None:
        """The connection is ending: stop finishing a frame for a client that does not read (nothing
        follows it; the socket is closed), so that the connection's tasks end at once."""
        self._aborted = True
        if self._writing is not None:
            self._writing.cancel()

    async def _write_rest(self, data: memoryview) -> None:
        """Write the rest of a frame, the first byte of which is out (or about to be), holding the lock:
        shielded from every cancellation but :meth:`abort`, within ``send_timeout_s``."""
        with trio.CancelScope(shield=True) as writing:
            if self._aborted:
                writing.cancel()
            self._writing = writing
            try:
                with trio.move_on_after(self._timeout) as timer:
                    await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed(CloseReason(1006, "the connection broke")) from exc
            finally:
                self._writing = None
        if timer.cancelled_caught or writing.cancelled_caught:
            # Half a frame may be on the wire: the connection is unusable. Close the socket (its reader
            # then ends the connection for trio-websocket too) and end this one's tasks.
            with trio.CancelScope(shield=True):
                await self._stream.aclose()
            if writing.cancelled_caught:
                raise ConnectionClosed(CloseReason(1006, "the connection is closing"))
            raise ConnectionClosed(CloseReason(1006, f"the client read nothing for {self._timeout:g} s"))


class _WsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def serve_websockets(
    runtime: Runtime,
    config: ServerConfig,
    connections: Connections | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the WebSocket protocol on ``config.host:config.ws_port`` until cancelled.

    ``task_status.started`` reports the bound port (useful with ``ws_port=0``). ``connections`` (if
    given) tracks the live connections, for :meth:`Connections.drain` at shutdown.
    """

    policy = request_policy(config)

    async def handler(request: WebSocketRequest) -> None:
        await handle_request(runtime, config, request, connections, policy)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                handler,
                config.host,
                config.ws_port,
                ssl_context=None,
                max_message_size=config.max_ws_message,
                # The handshake (request headers) must arrive within the header timeout, as on HTTP.
                connect_timeout=config.header_timeout_s,
                task_status=task_status,
            )
        )
        task_status.started(server.port)


async def handle_request(
    runtime: Runtime,
    config: ServerConfig,
    request: WebSocketRequest,
    connections: Connections | None = None,
    policy: RequestPolicy | None = None,
) -> None:
    """Check the handshake (browser-safety rules and token, :mod:`adapters.guard`), accept, and run the
    connection. Never raises (see the module docstring)."""
    policy = policy if policy is not None else request_policy(config)
    try:
        query = urlsplit(request.path).query.encode("latin-1")
        try:
            policy.check("GET", _handshake_headers(request), query)
        except Refusal as refusal:
            await request.reject(
                refusal.status,
                extra_headers=[(b"content-type", b"application/json")],
                body=error_body(refusal.code, refusal.message),
            )
            return
        ws = await request.accept()
    except Exception:  # a handshake that fails is that client's problem only
        log.debug("websocket handshake failed", exc_info=True)
        return
    await handle_connection(runtime, ws, config, connections)


def _handshake_headers(request: WebSocketRequest) -> list[tuple[bytes, bytes]]:
    """The handshake's headers, Host included: wsproto keeps Host apart from the others (as the decoded
    ``host`` of its Request event), and trio-websocket exposes only the others. Without a Host the
    request fails the Host rule — so a trio-websocket release that moves it cannot open a hole, only
    refuse everything (which tests/reliability/test_browser_safety.py would catch)."""
    headers = list(request.headers)
    host = getattr(getattr(request, "_event", None), "host", None)
    if isinstance(host, str):
        headers.append((b"host", host.encode("idna") if not host.isascii() else host.encode()))
    return headers


async def handle_connection(
    runtime: Runtime,
    ws: WebSocketConnection,
    config: ServerConfig | None = None,
    connections: Connections | None = None,
) -> None:
    """Run one accepted connection until it closes. Never raises."""
    config = config or ServerConfig()
    conn = _Connection(runtime, ws, config)
    if connections is not None:
        connections.live.add(conn)
    try:
        await conn.run()
    except ConnectionClosed:
        pass
    except Exception as exc:
        log.exception("websocket connection failed")
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(Exception):
                await ws.aclose(code=1011, reason=f"internal error: {type(exc).__name__}"[:120])
    finally:
        if connections is not None:
            connections.live.discard(conn)


class _Connection:
    def __init__(self, runtime: Runtime, ws: WebSocketConnection, config: ServerConfig) -> None:
        self.runtime = runtime
        self.ws = ws
        self.config = config
        # Subscription id -> the subscription, from the subscribe until the unsubscribe (or the pump's
        # end): an id names one live subscription at a time.
        self.subs: dict[str, _Sub] = {}
        # Pump tasks still running, unsubscribed ones included until they have returned (one may be
        # finishing a frame it started): what the subscription cap counts.
        self.pumps = 0
        self.outbox = _Outbox(_OUTBOX, _OUTBOX_BYTES)
        self.direct: _DirectSend | None = None  # set in run()
        self._next = 0

    async def run(self) -> None:
        self.direct = _DirectSend.of(self.ws, self.config.send_timeout_s)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._writer)
            try:
                while True:
                    message = await self.ws.get_message()
                    await self._dispatch(message)
            except ConnectionClosed:
                pass  # the client went away (or sent a frame over the limit: closed with 1009)
            finally:
                nursery.cancel_scope.cancel()
                if self.direct is not None:
                    self.direct.abort()  # a frame stuck mid-write must not hold the connection open

    async def _writer(self) -> None:
        # One writer per connection: frames from many subscriptions never interleave mid-send, and a
        # client that stops reading blocks only this connection's outbox.
        direct = self.direct
        try:
            while True:
                frame, owner = await self.outbox.get()
                if owner is not None and owner.unsubscribed:
                    continue  # unsubscribed while it waited: its ack is queued behind, nothing may follow
                if direct is not None:
                    await direct.send_text(frame, owner)
                else:
                    await self._send_locked(frame)
        except ConnectionClosed:
            self.nursery.cancel_scope.cancel()

    async def _send_locked(self, frame: bytes) -> None:
        """trio-websocket's own send, for when the direct sender is unavailable: shielded, so that no
        cancellation leaves half a frame on the wire, and bounded by ``send_timeout_s``."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.config.send_timeout_s) as timer:
                await self.ws.send_message(frame.decode())
        if timer.cancelled_caught:
            raise ConnectionClosed(
                CloseReason(1006, f"the client read nothing for {self.config.send_timeout_s:g} s")
            )

    async def _emit(self, obj: dict[str, Any], owner: _Sub | None = None) -> None:
        await self.outbox.put(msgspec.json.encode(obj), owner)

    async def _send_entries(self, frame: bytes, owner: _Sub) -> None:
        """Send a subscription's frame from its own task when nothing is queued ahead of it.

        Handing every frame to the writer task cost a pass through trio's scheduler per event (the
        WebSocket tail at 100 streams was above SSE's). Order still holds: with frames queued, this one
        queues behind them; the writer takes a frame and starts writing it without a scheduling point in
        between; and ``_DirectSend`` finishes a partly written frame under the stream lock, which every
        other writer (the writer task, trio-websocket's pongs and close) waits on in FIFO order.
        Nothing of an unsubscribed subscription is started: ``owner`` is marked before the unsubscribe's
        ack is queued, and checked right before a frame's first byte.
        """
        direct = self.direct
        if direct is None or self.outbox:
            await self.outbox.put(frame, owner)
            return
        try:
            await direct.send_text(frame, owner)
        except ConnectionClosed:
            self.nursery.cancel_scope.cancel()  # as the writer does: the connection is over
            await trio.lowlevel.checkpoint()  # (raises Cancelled here: this task ends with the others)

    async def _dispatch(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await self._emit(
                {"type": "error", "code": "binary_not_supported", "message": "send JSON in text frames"}
            )
            return
        try:
            op = msgspec.json.decode(message, type=_Op)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await self._emit(
                {"type": "error", "code": "invalid_message", "message": f"not a valid op: {exc}"}
            )
            return
        try:
            await self._run_op(op)
        except _WsError as exc:
            await self._emit({"type": "error", "id": op.id, "code": exc.code, "message": exc.message})
        except TurnstileError as exc:
            _, code = status_for(exc)
            await self._emit({"type": "error", "id": op.id, "code": code, "message": str(exc)})

    async def _run_op(self, op: _Op) -> None:
        if op.op == "ping":
            await self._emit({"type": "pong", "id": op.id})
        elif op.op == "subscribe":
            await self._subscribe(op)
        elif op.op == "unsubscribe":
            sub = self.subs.pop(_need(op.sub, "sub"), None)
            if sub is None:
                raise _WsError("unknown_subscription", f"no subscription {op.sub!r} on this connection")
            # From here on none of its frames is started (one mid-write finishes first; the writer drops
            # its queued ones), so nothing of it follows the ack on the wire.
            sub.cancel()
            await self._emit({"type": "ack", "op": "unsubscribe", "id": op.id, "sub": op.sub})
        elif op.op == "prompt":
            session = _need(op.session, "session")
            if not op.prompt or not op.prompt.strip():
                raise _WsError("empty_prompt", "prompt must be a non-empty string")
            tid = await self.runtime.start_turn(session, op.prompt)
            await self._emit({"type": "ack", "op": "prompt", "id": op.id, "session": session, "turn_id": tid})
        elif op.op == "interrupt":
            session, turn = _need(op.session, "session"), _need(op.turn, "turn")
            await self.runtime.interrupt(session, turn)
            await self._emit({"type": "ack", "op": "interrupt", "id": op.id, "turn_id": turn})
        else:
            raise _WsError(
                "unknown_op", f"unknown op {op.op!r}: use subscribe, unsubscribe, prompt, interrupt or ping"
            )

    async def _subscribe(self, op: _Op) -> None:
        session = _need(op.session, "session")
        if self.pumps >= self.config.max_ws_subscriptions:
            raise _WsError(
                "too_many_subscriptions",
                f"at most {self.config.max_ws_subscriptions} subscriptions per connection",
            )
        last = await views.last_seq(self.runtime, session)  # raises SessionNotFound
        if op.after < 0 or op.after > last:
            raise _WsError("invalid_after", f"after must be between 0 and {last}")
        if op.turn is not None:
            await views.stream_bounds(self.runtime, session, op.turn)  # raises StreamNotFound
        self._next += 1
        sub_id = str(op.id) if op.id is not None else f"s{self._next}"
        if sub_id in self.subs:
            raise _WsError("duplicate_subscription", f"subscription {sub_id!r} exists; pick another id")
        sub = self.subs[sub_id] = _Sub()
        await self._emit({"type": "ack", "op": "subscribe", "id": op.id, "sub": sub_id})
        self.pumps += 1  # counted until the pump has returned, whatever ended it
        self.nursery.start_soon(self._run_pump, sub, sub_id, session, op.turn, op.after)

    async def _run_pump(self, sub: _Sub, sub_id: str, session: str, turn: str | None, after: int) -> None:
        try:
            await self._pump(sub, sub_id, session, turn, after)
        finally:
            self.pumps -= 1
            if self.subs.get(sub_id) is sub:  # it ended by itself (once unsubscribed, the id is free)
                del self.subs[sub_id]

    async def _pump(self, owner: _Sub, sub_id: str, session: str, turn: str | None, after: int) -> None:
        last = after
        failed: dict[str, Any] = {}
        prefix = b'{"type":"entries","sub":' + msgspec.json.encode(sub_id) + b',"entries":['
        with owner.scope:
            while True:
                try:
                    async with self.runtime.subscribe(session, after=last, stream=turn) as sub:
                        async for batch in sub:
                            fresh = [r for r in batch if r.entry.seq > last]
                            if not fresh:
                                continue
                            last = fresh[-1].entry.seq
                            frame = prefix + b",".join(r.data for r in fresh) + b"]}"
                            await self._send_entries(frame, owner)
                            if any(_ends(r, turn) for r in fresh):
                                break
                    break
                except Lagged:
                    continue  # behind the live buffer: read on from the log
                except StorageFailed as exc:  # the log cannot be written: end now, resume after last_seq
                    last, failed = exc.last_seq, _storage_failed(exc)
                    break
            await self._emit({"type": "end", "sub": sub_id, "last_seq": last, **failed}, owner)


def _storage_failed(exc: StorageFailed) -> dict[str, Any]:
    """What an ``end`` frame adds when the log cannot be written (``last_seq`` is the last written)."""
    return {"outcome": "failed", "reason": exc.reason, "storage_failed": True}


def _ends(rec: Record, turn: str | None) -> bool:
    if turn is not None:
        return type(rec.entry) is StreamEnded and rec.entry.stream == turn
    return type(rec.entry) is SessionStopped


def _need(value: str | None, name: str) -> str:
    if not value:
        raise _WsError("missing_field", f"this op needs {name!r}")
    return value
