"""Serve Turnstile's AI SDK chat endpoints at the SDK's default path, /api/chat, in your own Starlette app."""

from __future__ import annotations

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.routing import Mount

from turnstile.adapters.ai_sdk.routes import create_chat_app
from turnstile.adapters.hypercorn_send import install as install_send_timeout
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig
from turnstile.engine.runtime.runtime import open_runtime


async def main(port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """POST /api/chat, GET /api/chat/{id}/stream, ... on one port until cancelled."""
    config = RuntimeConfig(default_agent=AgentConfig(agent="sim", extra_args=("--speed", "0")))
    async with open_runtime(config) as runtime:
        # useChat's defaults are POST /api/chat and GET /api/chat/{id}/stream: a page served by this app
        # needs no `api` option at all.
        app = Starlette(routes=[Mount("/api", app=create_chat_app(runtime, path="/chat"))])
        hc = Config()
        hc.bind = [f"127.0.0.1:{port}"]
        install_send_timeout(10.0)  # drop clients that stop reading (hypercorn's writes are shielded)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, app, hc)  # type: ignore[arg-type]
            task_status.started()


if __name__ == "__main__":
    trio.run(main, 8800)
