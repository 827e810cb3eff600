"""Send and header timeouts for hypercorn's trio worker: one slow client cannot hold anything up.

hypercorn's ``TCPServer.protocol_send`` writes to the socket inside a *shielded* cancel scope. An SSE
response whose client stopped reading therefore blocks in ``send`` for ever once the kernel's buffers
are full: the ASGI app's own ``move_on_after`` cannot interrupt it, the client is never dropped, and a
graceful shutdown waits on it. (Found by tests/reliability/test_slow_clients.py.)

:func:`install` swaps in a subclass whose writes keep the shield against *outside* cancellation (the
reason hypercorn shields: never leave half a frame on the wire) but carry a deadline of their own: a
write that makes no progress for ``send_timeout_s`` closes that connection, and the app's ``send``
raises as for any vanished client. A write the kernel takes whole at once (the common case) goes straight
to the socket, with no lock or timer (:mod:`adapters.direct_write`). It is installed by
:func:`adapters.server.run_server`; embedders that serve :func:`adapters.http.create_app` with their own
hypercorn call it too (``docs/embedding.md``).
"""

from __future__ import annotations

from math import inf

import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turnstile.adapters.direct_write import write_now

__all__ = ["ShieldLastSend", "install"]


class _TimedTCPServer(TCPServer):
    send_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    #: The running idle timer (between requests): a request's first byte shortens it to the header timeout.
    _idle_scope: trio.CancelScope | None = None

    async def _idle_timeout(self) -> None:
        # hypercorn runs this while no request is in progress (from the connection's start, and again after
        # each response) and cancels it once a request's headers are complete.
        with trio.move_on_after(self.config.keep_alive_timeout) as scope:
            self._idle_scope = scope
            try:
                await self.context.terminated.wait()
            finally:
                self._idle_scope = None
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    async def _read_data(self) -> None:
        # hypercorn's loop, plus: bytes that arrive while no request is in progress start the header clock.
        while True:
            try:
                with trio.fail_after(self.config.read_timeout or inf):
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            scope = self._idle_scope
            if data and scope is not None:
                scope.deadline = min(scope.deadline, trio.current_time() + self.header_timeout_s)
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())

    async def protocol_send(self, event: Event) -> None:
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        data = event.data
        # hypercorn annotates the stream as an SSLStream, but plain TCP gives it a SocketStream.
        stream: object = self.stream
        if not self.send_lock.locked() and isinstance(stream, trio.SocketStream):
            # Fast path: the socket takes the whole write at once (almost always: a live stream's
            # events are small and the kernel buffer is large), so there is nothing to wait for: no
            # lock, timer or cancel scope is needed. Synchronous, so no other send can start in
            # between; anything the kernel does not take goes the normal (timed) way.
            try:
                sent = write_now(stream, data)
            except OSError:
                await self.protocol.handle(Closed())  # reset, broken pipe or closed: the client is gone
                return
            if sent == len(data):
                # Still one scheduling point, as a send_all has: hypercorn decides whether a connection
                # can be kept alive right after a response's last write, and the pass lets its reader
                # take a request body that is already waiting (without it, a keep-alive client that
                # sent a body the app did not read finds its connection closed under its next request).
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            data = data[sent:]
        async with self.send_lock:
            try:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + self.send_timeout_s
                    await self.stream.send_all(data)
                stalled = scope.cancelled_caught
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                stalled = False
                await self.protocol.handle(Closed())
                return
        if stalled:
            # The client took nothing for send_timeout_s. A cancelled send_all leaves the stream broken,
            # so close it; the protocol then tells the app the client is gone.
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
                await self.protocol.handle(Closed())


def install(send_timeout_s: float, *, header_timeout_s: float = 10.0) -> None:
    """Make hypercorn's trio worker drop a connection whose writes stall for ``send_timeout_s``, or whose
    request headers take longer than ``header_timeout_s`` from their first byte.

    Process-wide (hypercorn builds its connection class by name); the latest call's timeouts win.
    """
    _TimedTCPServer.send_timeout_s = send_timeout_s
    _TimedTCPServer.header_timeout_s = header_timeout_s
    hypercorn_run.TCPServer = _TimedTCPServer  # type: ignore[attr-defined]


class ShieldLastSend:
    """ASGI middleware: an HTTP response's last body message is sent shielded from the app's own
    cancellation (see the module docstring). Bounded: socket writes carry the send timeout."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_last_shielded(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
                return
            await send(message)

        await self.app(scope, receive, send_last_shielded)
