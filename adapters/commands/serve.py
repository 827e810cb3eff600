"""``turnstile serve``: run the server (HTTP API, SSE, WebSocket, web console) on the simulator by default."""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial
from typing import Any

import msgspec
import trio

from turnstile.engine.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``serve``."""
    p = subparsers.add_parser(
        "serve",
        help="run the server: HTTP API + SSE, WebSocket, web console (default agent: the built-in simulator)",
        description="Run Turnstile's server. Every flag can also be set with a TURNSTILE_* environment "
        "variable (e.g. TURNSTILE_POOL_SIZE=0); a flag wins over the environment.",
        epilog="exit status:\n"
        "  0  stopped cleanly by SIGTERM or Ctrl-C (every open stream ended, every agent process reaped)\n"
        "  2  bad configuration (a flag or TURNSTILE_* variable) or a port that cannot be bound",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1; anything else requires --token)")
    p.add_argument("--port", type=int, help="HTTP/SSE/console port (default 8700; 0 = any free port)")
    p.add_argument("--ws-port", type=int, help="WebSocket port (default 8701; 0 = any; -1 = off)")
    p.add_argument("--agent", choices=["sim", "claude"], help="agent CLI to run (default sim)")
    p.add_argument(
        "--claude-bin", help="path of the Claude Code CLI (default: $TURNSTILE_CLAUDE_BIN, PATH, bundled)"
    )
    p.add_argument("--model", help="model passed to the agent")
    p.add_argument("--cwd", help="working directory of agent processes")
    p.add_argument("--allowed-tools", help="comma-separated tools the agent may use (e.g. Bash,Read)")
    p.add_argument(
        "--pool-size", type=int, help="warm processes kept per configuration (default 2; 0 = one-shot)"
    )
    p.add_argument("--data-dir", help="where session logs live (default: ./turnstile-data)")
    p.add_argument(
        "--redis-url",
        help="keep every session log in Redis Streams, shared with other servers: redis://HOST:PORT/DB "
        "(needs the 'redis' extra; the data directory then holds only the process ledger; docs/scaling.md)",
    )
    p.add_argument(
        "--redis-trim",
        help="per session stream with --redis-url: maxlen:N (default maxlen:100000), age:SECONDS, or none",
    )
    p.add_argument(
        "--node-id",
        help="this server's name among the servers sharing --redis-url: unique, and the same across its "
        "restarts (default: the host name)",
    )
    p.add_argument("--token", help="require this bearer token on every request")
    p.add_argument(
        "--allowed-origin",
        "--cors-origin",
        dest="allowed_origin",
        action="append",
        help="a web origin (scheme://host:port) whose pages may call the API and open WebSockets, besides "
        "the console's own (repeatable; see docs/api.md, Security model)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        help="a Host name the server answers for besides loopback addresses, localhost and the bound "
        "address, e.g. the name a proxy forwards (repeatable; defeats DNS rebinding)",
    )
    p.add_argument(
        "--workspace-root",
        help="the directory a client-chosen session cwd must lie in (default: the current directory)",
    )
    p.add_argument(
        "--sim-speed", type=float, help="simulator pacing multiplier (1 = realistic, 0 = no sleeps)"
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p.set_defaults(func=run)


def build_configs(args: argparse.Namespace, env: dict[str, str] | None = None) -> tuple[Any, Any]:
    """The ServerConfig and RuntimeConfig for these flags over the environment."""
    import os

    from turnstile.adapters.config import ServerConfig
    from turnstile.engine.runtime.config import RuntimeConfig

    environ = dict(os.environ if env is None else env)
    server = ServerConfig.from_env(
        environ,
        host=args.host,
        port=args.port,
        ws_port=args.ws_port,
        token=args.token,
        allowed_origins=tuple(args.allowed_origin) if args.allowed_origin else None,
        allowed_hosts=tuple(args.allowed_host) if args.allowed_host else None,
        workspace_root=args.workspace_root,
    )
    overrides: dict[str, Any] = {}
    if args.pool_size is not None:
        overrides["pool_size"] = args.pool_size
    data_dir = args.data_dir or environ.get("TURNSTILE_DATA_DIR") or "turnstile-data"
    overrides["data_dir"] = data_dir
    if args.redis_url is not None:
        overrides["redis_url"] = args.redis_url
    if args.node_id is not None:
        overrides["node_id"] = args.node_id
    if args.redis_trim is not None:
        overrides["redis_trim"] = args.redis_trim
    runtime = RuntimeConfig.from_env(environ, **overrides)
    if runtime.redis_url is not None:
        from turnstile.engine.stores.redis import HAVE_COREDIS

        if not HAVE_COREDIS:
            raise ConfigError(
                "--redis-url needs the coredis package: pip install 'turnstile[redis]' (coredis>=6.9,<7)"
            )
    agent_changes: dict[str, Any] = {}
    if args.agent is not None:
        agent_changes["agent"] = args.agent
    if args.claude_bin is not None:
        agent_changes["binary"] = args.claude_bin
    if args.model is not None:
        agent_changes["model"] = args.model
    if args.cwd is not None:
        agent_changes["cwd"] = args.cwd
    if args.allowed_tools is not None:
        agent_changes["allowed_tools"] = tuple(t for t in args.allowed_tools.split(",") if t)
    if args.sim_speed is not None:
        extra = (*tuple(runtime.default_agent.extra_args), "--speed", str(args.sim_speed))
        agent_changes["extra_args"] = extra
    if agent_changes:
        agent = msgspec.structs.replace(runtime.default_agent, **agent_changes)
        runtime = msgspec.structs.replace(runtime, default_agent=agent)
    return server, runtime


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT. Exit 0 after a clean shutdown, 2 for bad configuration."""
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        server, runtime = build_configs(args)
    except ConfigError as exc:
        print(f"turnstile serve: {exc}", file=sys.stderr)
        return 2
    from turnstile.adapters.server import freeze_startup_heap, run_server

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_server, server, runtime, handle_signals=True))
            freeze_startup_heap()

    if runtime.redis_url is not None:
        settings = runtime.redis_settings()
        where = f"logs in Redis at {settings.where} as node {settings.node_name}"
    else:
        where = f"data in {runtime.data_dir}"
    print(
        f"turnstile: serving on http://{server.host}:{server.port} (agent {runtime.default_agent.agent}, "
        f"pool size {runtime.pool_size}, {where}); Ctrl-C to stop",
        file=sys.stderr,
    )
    try:
        trio.run(serve)
    except OSError as exc:
        print(f"turnstile serve: cannot listen: {exc}", file=sys.stderr)
        return 2
    return 0
