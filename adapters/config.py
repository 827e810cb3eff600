"""The server's configuration: one msgspec Struct, from flags and ``TURNSTILE_*`` environment variables.

Precedence: a flag given on the command line, else the environment variable, else the default below.
The runtime's own limits (:class:`engine.runtime.config.RuntimeConfig`) are read the same way.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

import msgspec

from turnstile.engine.errors import ConfigError

__all__ = ["ServerConfig", "is_loopback"]

# Environment variables of earlier releases, still read (the new name wins).
_ENV_ALIASES = {"allowed_origins": "TURNSTILE_CORS_ORIGINS"}


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How ``turnstile serve`` listens and what clients may do (``docs/api.md``, "Security model").

    ``host``/``port``: the HTTP, SSE and console listener (127.0.0.1:8700). ``ws_port``: the WebSocket
    listener (8701; 0 picks a free port; -1 disables it). ``token``: required on every request when set,
    and required when binding to anything but loopback.

    Browser safety (:mod:`adapters.guard`): ``allowed_hosts``: Host names the server answers for besides
    loopback addresses, ``localhost`` and the bound address (``*``: any — only behind a proxy that checks
    Host itself). ``allowed_origins``: web origins besides the console's own that may call the API and
    open WebSockets (CORS preflights are answered for them). ``workspace_root``: the directory a
    client-chosen ``cwd`` must lie in (default: the server's working directory).

    Limits: ``max_prompt_bytes``: a turn's request body (1 MiB); ``max_body_bytes``: any other request
    body (64 KiB); both answered 413 from ``Content-Length`` before reading, or as soon as a chunked body
    passes them. ``max_replay_bytes``: a log replayed for the replay viewer — a session's, or a file sent to
    ``POST /v1/replay`` (as JSON) — (32 MiB). ``header_timeout_s``: a request's headers must arrive within
    this (10 s). ``heartbeat_s``:
    SSE comment interval (15 s). ``send_timeout_s``: a client (SSE or WebSocket) that does not take a write
    for this long is dropped (10 s); it resumes with ``Last-Event-ID`` (SSE) or ``after`` (WebSocket).
    ``sse_retry_ms``: the reconnect delay suggested to EventSource (1000 ms). ``max_ws_message``: larger
    WebSocket frames close the connection with 1009 (1 MiB). ``max_ws_subscriptions``: per connection (64).

    ``agent_check``: probe the default ``claude`` agent's CLI once at start, offline (``turnstile doctor``;
    shown in ``/readyz``, ``GET /v1/agent`` and the console; on by default).
    """

    host: str = "127.0.0.1"
    port: int = 8700
    ws_port: int = 8701
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    workspace_root: str | None = None
    heartbeat_s: float = 15.0
    send_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    sse_retry_ms: int = 1000
    max_prompt_bytes: int = 1 << 20
    max_body_bytes: int = 64 << 10
    max_replay_bytes: int = 32 << 20
    max_ws_message: int = 1 << 20
    max_ws_subscriptions: int = 64
    agent_check: bool = True

    def __post_init__(self) -> None:
        if not (0 <= self.port <= 65535):
            raise ConfigError(f"port must be 0-65535, got {self.port}")
        if not (-1 <= self.ws_port <= 65535):
            raise ConfigError(f"ws_port must be -1 (off) or 0-65535, got {self.ws_port}")
        if self.token is not None and not self.token:
            raise ConfigError("token must not be empty; leave it unset to disable authentication")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(
                f"binding to {self.host!r} exposes the agent to the network: set --token or TURNSTILE_TOKEN "
                "(every HTTP, SSE and WebSocket request must then carry it), or bind to 127.0.0.1"
            )
        for name in ("heartbeat_s", "send_timeout_s", "header_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_prompt_bytes", "max_body_bytes", "max_replay_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServerConfig:
        """Defaults, then ``TURNSTILE_<FIELD>`` variables, then ``overrides`` (flags; None = not given)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            raw = env.get(f"TURNSTILE_{field.name.upper()}")
            if raw is None and field.name in _ENV_ALIASES:
                raw = env.get(_ENV_ALIASES[field.name])
            if raw is not None:
                values[field.name] = _parse(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(values, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid server setting: {exc}") from exc


def _parse(name: str, typ: Any, raw: str) -> Any:
    text = str(typ)
    try:
        if "tuple" in text:
            return tuple(x.strip() for x in raw.split(",") if x.strip())
        if typ is bool or text == "bool":
            return raw.strip().lower() not in ("0", "false", "no", "off", "")
        if typ is int or text == "int":
            return int(raw)
        if typ is float or text == "float":
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"TURNSTILE_{name.upper()}={raw!r} is not a valid {text}") from exc
    return raw


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
