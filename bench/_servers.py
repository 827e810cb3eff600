"""Servers the latency and fan-out benchmarks talk to, each in a child process of its own.

``python bench/_servers.py turnstile DATA_DIR [FSYNC [REDIS_URL NODE]]`` runs ``turnstile serve``
(``turnstile.adapters.server.run_server``) with ``bench/emitter.py`` as the agent and pool size 0; with
``REDIS_URL`` its logs are in Redis Streams (shared with the other servers given the same URL) and it is
node ``NODE``.
``python bench/_servers.py sse-starlette`` runs the alternative a user would likely write: a Starlette
app under hypercorn's trio worker that spawns the same emitter on ``POST /start?prompt=...``, reads its
stdout lines and fans each one out to every ``GET /events`` subscriber through a memory stream, sent by
``sse_starlette.EventSourceResponse``.

Both print one JSON line ``{"http": port, "ws": port | null}`` once they listen, and stop when their stdin
closes (so they never outlive the benchmark). Also: :class:`ServerProcess`, the parent's handle.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import _common
import trio

from turnstile.adapters.config import ServerConfig


class ServerProcess:
    """Run one of these servers as a child; ``.http`` / ``.ws`` are its ports; close ends it."""

    def __init__(self, kind: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), kind, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(_common.ROOT),
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(f"the {kind} bench server did not start")
        ports = json.loads(line)
        self.http: int = ports["http"]
        self.ws: int | None = ports["ws"]
        self.pid = self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _stdin_closed() -> None:
    stdin = trio.lowlevel.FdStream(os.dup(0))
    while await stdin.receive_some(1024):
        pass


def _announce(http: int, ws: int | None) -> None:
    sys.stdout.write(json.dumps({"http": http, "ws": ws}) + "\n")
    sys.stdout.flush()


async def serve_turnstile(
    data_dir: str, fsync: str = "lifecycle", redis_url: str | None = None, node: str | None = None
) -> None:
    from turnstile.adapters.server import freeze_startup_heap, run_server
    from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig

    binary = _common.emitter_binary(Path(data_dir))
    runtime = RuntimeConfig(
        data_dir=str(Path(data_dir) / "data"),
        fsync=fsync,  # type: ignore[arg-type]
        pool_size=0,
        default_agent=AgentConfig(agent="sim", binary=binary),
        max_queued_turns=64,
        redis_url=redis_url or None,
        node_id=node,
    )
    server = ServerConfig(port=0, ws_port=0, heartbeat_s=15.0, send_timeout_s=30.0)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(run_server, server, runtime)
        freeze_startup_heap()  # as `turnstile serve` does
        _announce(ports.http, ports.ws)
        await _stdin_closed()
        nursery.cancel_scope.cancel()


async def serve_sse_starlette() -> None:
    import anyio
    from anyio.streams.memory import MemoryObjectSendStream
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    subscribers: set[MemoryObjectSendStream[tuple[int, str]]] = set()
    state: dict[str, Any] = {"seq": 0}

    async def pump(prompt: str) -> None:
        msg = {"type": "user", "message": {"role": "user", "content": prompt}}
        async with await anyio.open_process(_common.emitter_argv()) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            await proc.stdin.send(json.dumps(msg).encode() + b"\n")
            pending = b""
            async for chunk in proc.stdout:
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for raw in lines:
                    state["seq"] += 1
                    item = (state["seq"], raw.decode())
                    for sub in list(subscribers):
                        try:
                            sub.send_nowait(item)
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                            subscribers.discard(sub)  # that client went away
                    if raw.startswith(b'{"type":"result"'):
                        for sub in list(subscribers):
                            sub.close()
                        subscribers.clear()
                        await proc.stdin.aclose()
                        return

    async def start(request: Request) -> JSONResponse:
        nursery.start_soon(pump, request.query_params["prompt"])
        return JSONResponse({"started": True}, status_code=202)

    async def events(request: Request) -> EventSourceResponse:
        send, receive = anyio.create_memory_object_stream[tuple[int, str]](math.inf)
        subscribers.add(send)

        async def gen() -> Any:
            async with receive:
                async for seq, line in receive:
                    yield {"id": str(seq), "event": "cli", "data": line}

        return EventSourceResponse(gen(), ping=15)

    app = Starlette(routes=[Route("/start", start, methods=["POST"]), Route("/events", events)])
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.backlog = 2048
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, app, config)
        _announce(int(bound[0].rsplit(":", 1)[1]), None)
        await _stdin_closed()
        nursery.cancel_scope.cancel()


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    kind = sys.argv[1]
    if kind == "turnstile":
        trio.run(serve_turnstile, *sys.argv[2:6])
    elif kind == "sse-starlette":
        trio.run(serve_sse_starlette)
    else:
        raise SystemExit(f"unknown server {kind!r}")


if __name__ == "__main__":
    main()
