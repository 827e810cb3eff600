"""Mount Turnstile's HTTP/SSE API inside your own Starlette app, served by hypercorn on trio."""

from __future__ import annotations

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from turnstile.adapters.http import create_app
from turnstile.adapters.hypercorn_send import install as install_send_timeout
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig
from turnstile.engine.runtime.runtime import open_runtime


async def home(request: Request) -> JSONResponse:
    return JSONResponse({"app": "my dashboard", "agent_api": "/agent/v1/sessions"})


async def main(port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``/`` (yours) and ``/agent/...`` (Turnstile) on one port until cancelled."""
    config = RuntimeConfig(default_agent=AgentConfig(agent="sim", extra_args=("--speed", "0")))
    # The runtime and the web server share one trio nursery tree: cancelling main() ends every turn
    # with its terminal entry and reaps every agent process.
    async with open_runtime(config) as runtime:
        app = Starlette(routes=[Route("/", home), Mount("/agent", app=create_app(runtime))])
        hc = Config()
        hc.bind = [f"127.0.0.1:{port}"]
        # Drop clients that stop reading (hypercorn's writes are shielded) or trickle their headers.
        install_send_timeout(10.0, header_timeout_s=10.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, app, hc)  # type: ignore[arg-type]
            task_status.started()


if __name__ == "__main__":
    trio.run(main, 8800)
