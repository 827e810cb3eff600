"""``turnstile serve``: the runtime, the HTTP/SSE app on hypercorn's trio worker, and the WebSocket port.

Start-up order is what keeps liveness honest: the HTTP port is bound *first*, with an app that answers
``/healthz`` at once and holds every other request (briefly, never with a 503) until the runtime has
reopened its logs. The pool warms in the background after that and never blocks anything.

Shutdown (SIGTERM, SIGINT, or cancelling :func:`run_server`): the runtime is closed first, while the
HTTP server still runs, so every open stream gets its terminal entry and every SSE/WebSocket subscriber
receives it; then the listeners close. Every child process is reaped before the function returns.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from turnstile.adapters.agentcheck import AgentCheck
from turnstile.adapters.config import ServerConfig
from turnstile.adapters.errors import error_body
from turnstile.adapters.guard import BrowserGuard, request_policy
from turnstile.adapters.http import create_app
from turnstile.adapters.hypercorn_send import install as install_send_timeout
from turnstile.adapters.websocket import Connections, serve_websockets
from turnstile.engine.runtime.config import RuntimeConfig
from turnstile.engine.runtime.runtime import open_runtime

__all__ = ["ServerPorts", "freeze_startup_heap", "run_server"]

log = logging.getLogger("turnstile.server")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ServerPorts(msgspec.Struct, frozen=True):
    """Where the server listens (useful when it was asked for port 0)."""

    http: int
    ws: int | None


class _StartingApp:
    """Answers /healthz from the first instant; holds other requests until the runtime is up."""

    def __init__(self, wait_s: float = 60.0) -> None:
        self.app: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
        self.ready = trio.Event()
        self.wait_s = wait_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if self.app is None and scope["type"] == "http" and scope.get("path") == "/healthz":
            await _json(send, 200, b'{"status":"ok","runtime":"starting"}')
            return
        if self.app is None:
            with trio.move_on_after(self.wait_s):
                await self.ready.wait()
        if self.app is None:
            if scope["type"] == "http":
                await _json(send, 503, error_body("starting", "the runtime is still starting; retry shortly"))
            return
        await self.app(scope, receive, send)


async def _json(send: Send, status: int, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


async def run_server(
    server: ServerConfig,
    runtime_config: RuntimeConfig,
    *,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[ServerPorts] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until cancelled (or, with ``handle_signals``, until SIGTERM/SIGINT).

    Either way the shutdown is graceful and bounded: open streams end with their terminal entry, which
    every SSE and WebSocket subscriber receives before the listeners close (see the module docstring).
    """
    stop = trio.Event()
    # The servers run shielded from our caller's cancellation: a cancellation only sets `stop`, and the
    # shielded part then shuts down in order. Every step of that is bounded.
    async with trio.open_nursery() as nursery:
        try:
            ports: ServerPorts = await nursery.start(
                _serve_until, server, runtime_config, stop, handle_signals
            )
            task_status.started(ports)
            await stop.wait()
        finally:
            stop.set()  # also when cancelled while starting: the shielded part then shuts down at once


async def _serve_until(
    server: ServerConfig,
    runtime_config: RuntimeConfig,
    stop: trio.Event,
    handle_signals: bool,
    task_status: trio.TaskStatus[ServerPorts],
) -> None:
    starting = _StartingApp()
    # The browser-safety rules guard everything on the port, /healthz while starting included.
    policy = request_policy(server)
    guarded = BrowserGuard(starting, policy)
    install_send_timeout(server.send_timeout_s, header_timeout_s=server.header_timeout_s)
    hc = HypercornConfig()
    host = f"[{server.host}]" if ":" in server.host else server.host
    hc.bind = [f"{host}:{server.port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 2.0
    hc.keep_alive_timeout = 75.0
    http_stop = trio.Event()
    connections = Connections()
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            signals = trio.CancelScope()
            if handle_signals:
                nursery.start_soon(_wait_for_signals, stop, signals)
            # HTTP first: /healthz answers from the first instant, before the runtime has reopened logs.
            bound: list[str] = await nursery.start(
                partial(hypercorn_serve, guarded, hc, shutdown_trigger=http_stop.wait)  # type: ignore[arg-type]
            )
            http_port = _port_of(bound, server.port)
            # The real port (also when asked for 0): the browser-safety rules need the console's origin.
            server = msgspec.structs.replace(server, port=http_port)
            policy.http_port = http_port
            async with open_runtime(runtime_config) as runtime:
                agent_check = AgentCheck(runtime_config.default_agent, enabled=server.agent_check)
                starting.app = create_app(runtime, server, agent_check, guard=False)
                starting.ready.set()
                async with trio.open_nursery() as front:
                    front.start_soon(agent_check.run)  # in the background; cancelled at shutdown
                    ws_port: int | None = None
                    if server.ws_port >= 0:
                        ws_port = await front.start(serve_websockets, runtime, server, connections)
                    task_status.started(ServerPorts(http=http_port, ws=ws_port))
                    log.info(
                        "turnstile listening on http://%s:%d (websocket %s)", server.host, http_port, ws_port
                    )
                    await stop.wait()
                    log.info("shutting down: ending open turns, then closing the listeners")
                    # 1. End every stream while the front-ends still run: subscribers get the terminal
                    #    entries, their subscriptions end, SSE responses finish by themselves.
                    await runtime.close()
                    # 2. Let WebSocket connections send what they were given, then close the listener.
                    await connections.drain(limit_s=2.0)
                    front.cancel_scope.cancel()
            # 3. Stop accepting HTTP; hypercorn waits (bounded) for responses still finishing.
            http_stop.set()
            signals.cancel()
            nursery.cancel_scope.deadline = trio.current_time() + hc.graceful_timeout + 1.0


def freeze_startup_heap() -> None:
    """Collect once, then move everything alive into the collector's permanent generation.

    For a process that runs the server and little else (``turnstile serve``), call it once the server
    has started: modules, the app and the configuration live as long as the process, and a full
    collection then scans only what was made since. Measured: full collections that paused every
    stream for 20-60 ms. Not done by :func:`run_server` itself, which may be embedded in a process
    whose heap is not ours to freeze.
    """
    gc.collect()
    gc.freeze()


def _port_of(bound: list[str], fallback: int) -> int:
    for url in bound:
        tail = url.rsplit(":", 1)[-1]
        if tail.isdigit():
            return int(tail)
    return fallback


async def _wait_for_signals(stop: trio.Event, scope: trio.CancelScope) -> None:
    with scope, trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            stop.set()
            return
