"""The HTTP API (v1), SSE endpoints, metrics and the console, as one ASGI app over a :class:`Runtime`.

Build it with :func:`create_app` and serve it with any ASGI server running on trio (``turnstile serve``
uses hypercorn's trio worker), or mount it inside another Starlette/ASGI app. Every path is listed in
``docs/api.md``. Errors are JSON ``{"error": {"code", "message"}}``; bad input always gets a 4xx.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from turnstile.adapters import views
from turnstile.adapters.agentcheck import AgentCheck
from turnstile.adapters.ai_sdk.routes import chat_routes
from turnstile.adapters.bodies import decode_json, read_body
from turnstile.adapters.config import ServerConfig
from turnstile.adapters.errors import ApiError, error_body, status_for
from turnstile.adapters.guard import BrowserGuard, request_policy
from turnstile.adapters.hypercorn_send import ShieldLastSend
from turnstile.adapters.metrics import exposition, metrics_registry
from turnstile.adapters.replay_view import ReplayUpload, replay_document
from turnstile.adapters.session_feed import stream_session_summaries
from turnstile.adapters.sse import SseSource, stream_sse
from turnstile.adapters.workspace import inside_workspace, list_dirs
from turnstile.engine.errors import Lagged, TurnstileError
from turnstile.engine.log import Record, SessionStopped, StreamEnded
from turnstile.engine.runtime.info import MetricsSnapshot
from turnstile.engine.runtime.runtime import Runtime

__all__ = ["create_app"]

CONSOLE_DIR: Final = Path(__file__).parent / "console"
_JSON: Final = "application/json"
MAX_TITLE: Final = 200
"""The longest session title accepted (characters)."""
FEATURES: Final = ("session_titles", "session_delete", "session_feed", "workspace_dirs", "replay")
"""What ``GET /v1/server`` advertises; clients show controls only for what is listed."""


class SessionOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sessions`` body. Agent settings a client may choose; the rest is server config."""

    agent: str | None = None
    model: str | None = None
    cwd: str | None = None
    allowed_tools: list[str] | None = None
    partial_messages: bool | None = None
    session_id: str | None = None


class SessionPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PATCH /v1/sessions/{sid}`` body. ``title``: what session lists show (``""``: the first prompt)."""

    title: str


class TurnBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sessions/{sid}/turns`` body."""

    prompt: str


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response encoded with msgspec (structs, dicts and lists alike)."""
    return Response(msgspec.json.encode(data), status_code=status, media_type=_JSON)


def error_response(status: int, code: str, message: str) -> Response:
    """The JSON error document as a response."""
    return Response(error_body(code, message), status_code=status, media_type=_JSON)


def create_app(
    runtime: Runtime,
    config: ServerConfig | None = None,
    agent_check: AgentCheck | None = None,
    *,
    guard: bool = True,
) -> ASGIApp:
    """The ASGI app serving ``runtime``. Needs to run on trio (the runtime's event loop).

    ``agent_check`` (what ``turnstile serve`` runs at start) feeds ``GET /v1/agent`` and ``/readyz``.

    Every request passes the browser-safety rules and the token check (:mod:`adapters.guard`) first;
    ``guard=False`` leaves that to the caller, who must then wrap the app (or its server) in
    :class:`adapters.guard.BrowserGuard` itself (``turnstile serve`` guards its whole port).
    """
    config = config or ServerConfig()
    api = _Api(runtime, config, agent_check)
    routes: list[BaseRoute] = [
        Route("/healthz", api.healthz, methods=["GET", "HEAD"]),
        Route("/readyz", api.readyz, methods=["GET", "HEAD"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/v1/machines", api.machines, methods=["GET"]),
        Route("/v1/agent", api.agent, methods=["GET"]),
        Route("/v1/server", api.server_info, methods=["GET"]),
        Route("/v1/workspace/dirs", api.workspace_dirs, methods=["GET"]),
        Route("/v1/replay", api.replay_upload, methods=["POST"]),
        Route("/v1/sessions", api.list_sessions, methods=["GET"]),
        Route("/v1/sessions", api.create_session, methods=["POST"]),
        # Before /v1/sessions/{sid}, which would take "events" for a session id.
        Route("/v1/sessions/events", api.sessions_feed, methods=["GET"]),
        Route("/v1/sessions/{sid}", api.get_session, methods=["GET"]),
        Route("/v1/sessions/{sid}", api.update_session, methods=["PATCH"]),
        Route("/v1/sessions/{sid}", api.delete_session, methods=["DELETE"]),
        Route("/v1/sessions/{sid}/events", api.session_events, methods=["GET"]),
        Route("/v1/sessions/{sid}/log", api.session_log, methods=["GET"]),
        Route("/v1/sessions/{sid}/replay", api.session_replay, methods=["GET"]),
        Route("/v1/sessions/{sid}/turns", api.start_turn, methods=["POST"]),
        Route("/v1/sessions/{sid}/turns/{tid}", api.get_turn, methods=["GET"]),
        Route("/v1/sessions/{sid}/turns/{tid}/events", api.turn_events, methods=["GET"]),
        Route("/v1/sessions/{sid}/turns/{tid}/interrupt", api.interrupt, methods=["POST"]),
        Route("/", api.console, methods=["GET"]),
        *chat_routes(runtime, config),  # the Vercel AI SDK's chat protocol at /v1/chat (docs/ai-sdk.md)
        Route("/replay", api.replay_page, methods=["GET"]),
    ]
    if CONSOLE_DIR.is_dir():
        routes.append(Mount("/console", app=StaticFiles(directory=CONSOLE_DIR), name="console"))
    middleware = []
    if config.allowed_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.allowed_origins),
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=["authorization", "content-type", "last-event-id"],
                allow_credentials=True,
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            HTTPException: _http_exception,
            ApiError: _api_error,
            TurnstileError: _turnstile_error,
        },
    )
    app.state.runtime = runtime
    finished = ShieldLastSend(app)
    if not guard:
        return finished
    # Every request passes the browser-safety rules (and the token) before routing: adapters.guard.
    return BrowserGuard(finished, request_policy(config))


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message)


async def _turnstile_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TurnstileError)
    status, code = status_for(exc)
    return error_response(status, code, str(exc))


def parse_seq(raw: str, source: str, code: str) -> int:
    """A log seq from text: plain ASCII digits only (``int()`` would also take "+3", "1_0", "٣")."""
    text = raw.strip()
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise ApiError(400, code, f"{source} must not be negative, got {text}")
    if not (text.isascii() and text.isdigit()):
        raise ApiError(400, code, f"{source} must be a log seq (a non-negative integer), got {raw!r}")
    return int(text)


def parse_after(request: Request, *, last_seq: int) -> int:
    """The resume point: ``Last-Event-ID`` header, else ``?after=``, else 0. Validated."""
    raw = request.headers.get("last-event-id")
    source = "Last-Event-ID"
    if raw is None:
        raw = request.query_params.get("after")
        source = "after"
    if raw is None or raw.strip() == "":
        return 0
    value = parse_seq(raw, source, "invalid_last_event_id")
    if value > last_seq:
        raise ApiError(
            400,
            "invalid_last_event_id",
            f"{source} {value} is beyond the end of this session's log (last seq {last_seq}); "
            "was it from another server's data directory?",
        )
    return value


class _Api:
    def __init__(self, runtime: Runtime, config: ServerConfig, agent_check: AgentCheck | None = None) -> None:
        self.runtime = runtime
        self.config = config
        self.agent_check = agent_check or AgentCheck(runtime.config.default_agent, enabled=False)
        self.sse_lagged = 0
        self.workspace = Path(config.workspace_root or os.getcwd()).resolve()
        self.registry = metrics_registry(self._metrics_snapshot)

    # --- health ------------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        ready = self.runtime.readiness()
        body = msgspec.to_builtins(ready)
        problem = self.agent_check.problem()
        if problem:
            body["ready"] = False
            body["reasons"].append(problem)
        body["reason"] = "; ".join(body["reasons"]) if body["reasons"] else None
        body["agent"] = self.agent_check.brief()
        return json_response(body, 200 if body["ready"] else 503)

    async def agent(self, request: Request) -> Response:
        return json_response(self.agent_check.report)

    def _metrics_snapshot(self) -> MetricsSnapshot:
        # SSE subscribers that lagged are ended here, not in the runtime: count them with its own.
        snapshot = self.runtime.metrics()
        lagged = snapshot.lagged_subscribers + self.sse_lagged
        return msgspec.structs.replace(snapshot, lagged_subscribers=lagged)

    async def metrics(self, request: Request) -> Response:
        body, content_type = exposition(self.registry, request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    async def machines(self, request: Request) -> Response:
        from turnstile.adapters.machines_view import machines_json

        return json_response(machines_json())

    async def server_info(self, request: Request) -> Response:
        base = self.runtime.config.default_agent
        return json_response(
            {
                "agent": base.agent,
                "model": base.model,
                "workspace_root": str(self.workspace),
                "features": list(FEATURES),
            }
        )

    async def workspace_dirs(self, request: Request) -> Response:
        rel = request.query_params.get("path", "")
        hidden = request.query_params.get("hidden", "") in ("1", "true", "yes")
        return json_response(list_dirs(self.workspace, rel, hidden=hidden))

    # --- sessions ----------------------------------------------------------------------------------

    async def list_sessions(self, request: Request) -> Response:
        return json_response({"sessions": await self.runtime.list_sessions()})

    async def create_session(self, request: Request) -> Response:
        body = await read_body(request, self.config.max_body_bytes, what="session options")
        options = decode_json(body, SessionOptions) if body.strip() else SessionOptions()
        base = self.runtime.config.default_agent
        changes: dict[str, Any] = {}
        if options.agent is not None:
            if options.agent not in ("sim", "claude"):
                raise ApiError(
                    400, "invalid_agent", f"agent must be 'sim' or 'claude', got {options.agent!r}"
                )
            if options.agent != base.agent:
                raise ApiError(
                    403,
                    "agent_not_allowed",
                    f"this server runs the {base.agent!r} agent; a client cannot choose {options.agent!r} "
                    "(start the server with --agent to change it)",
                )
        for name in ("model", "partial_messages"):
            if getattr(options, name) is not None:
                changes[name] = getattr(options, name)
        if options.cwd is not None:
            changes["cwd"] = str(inside_workspace(self.workspace, options.cwd))
        if options.allowed_tools is not None:
            extra = sorted(set(options.allowed_tools) - set(base.allowed_tools))
            if extra:
                allowed = ", ".join(base.allowed_tools) or "none"
                raise ApiError(
                    403,
                    "tools_not_allowed",
                    f"tools {', '.join(extra)} are not allowed on this server (allowed: {allowed}); "
                    "start the server with --allowed-tools to allow more",
                )
            changes["allowed_tools"] = tuple(options.allowed_tools)
        if options.session_id == "events":
            raise ApiError(
                400,
                "invalid_config",
                "session id 'events' is reserved (GET /v1/sessions/events); pick another",
            )
        agent = msgspec.structs.replace(base, **changes) if changes else None
        info = await self.runtime.create_session(agent, session_id=options.session_id)
        return json_response(info, 201)

    async def get_session(self, request: Request) -> Response:
        return json_response(await views.session_info(self.runtime, request.path_params["sid"]))

    async def delete_session(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        purge = request.query_params.get("purge", "")
        if purge not in ("", "0", "false", "1", "true"):
            raise ApiError(400, "invalid_purge", f"purge must be true or false, got {purge!r}")
        if purge in ("1", "true"):
            await views.session(self.runtime, sid)  # 404 before anything is stopped
            await self.runtime.delete_session(sid)
            return json_response({"id": sid, "deleted": True})
        await self.runtime.stop_session(sid)
        return json_response(await views.session_info(self.runtime, sid), 202)

    async def update_session(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        body = await read_body(request, self.config.max_body_bytes, what="session update")
        patch = decode_json(body, SessionPatch)
        title = " ".join(patch.title.split())  # one line: newlines and runs of spaces become one space
        if len(title) > MAX_TITLE:
            raise ApiError(
                400, "invalid_title", f"a title is at most {MAX_TITLE} characters, got {len(title)}"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in title):
            raise ApiError(400, "invalid_title", "a title must not contain control characters")
        return json_response(await self.runtime.set_title(sid, title))

    async def sessions_feed(self, request: Request) -> Response:
        return _SessionFeedResponse(self)

    # --- turns -------------------------------------------------------------------------------------

    async def start_turn(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        body = await read_body(request, self.config.max_prompt_bytes, what="turn", code="prompt_too_large")
        turn = decode_json(body, TurnBody)
        if not turn.prompt.strip():
            raise ApiError(400, "empty_prompt", "prompt must not be empty")
        tid = await self.runtime.start_turn(sid, turn.prompt)
        # Under a mount (embedding), URLs we hand out carry the mount's prefix.
        events_url = f"{request.scope.get('root_path', '')}/v1/sessions/{sid}/turns/{tid}/events"
        if "text/event-stream" in request.headers.get("accept", ""):
            return _SseResponse(self, sid, tid, after=0, headers=[(b"x-turn-id", tid.encode())])
        return json_response({"turn_id": tid, "session_id": sid, "events_url": events_url}, 202)

    async def get_turn(self, request: Request) -> Response:
        sid, tid = request.path_params["sid"], request.path_params["tid"]
        return json_response(await views.turn_info(self.runtime, sid, tid))

    async def interrupt(self, request: Request) -> Response:
        sid, tid = request.path_params["sid"], request.path_params["tid"]
        await self.runtime.interrupt(sid, tid)
        return json_response({"turn_id": tid, "session_id": sid, "interrupt": "requested"}, 202)

    # --- streams -----------------------------------------------------------------------------------

    async def turn_events(self, request: Request) -> Response:
        sid, tid = request.path_params["sid"], request.path_params["tid"]
        _start, end = await views.stream_bounds(self.runtime, sid, tid)
        after = parse_after(request, last_seq=await views.last_seq(self.runtime, sid))
        if end is not None and after >= end:
            return Response(status_code=204)  # EventSource: stop reconnecting, the turn is over
        self.runtime.check_storage(sid)  # 503 while its log cannot be written (nothing could be sent)
        return _SseResponse(self, sid, tid, after=after)

    async def session_events(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        last = await views.last_seq(self.runtime, sid)
        after = parse_after(request, last_seq=last)
        self.runtime.check_storage(sid)  # 503 while its log cannot be written (its end may not be yet)
        if await views.session_closed(self.runtime, sid) and after >= last:
            return Response(status_code=204)
        return _SseResponse(self, sid, None, after=after)

    async def session_log(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        last = await views.last_seq(self.runtime, sid)
        raw = request.query_params.get("after", "0")
        after = parse_seq(raw, "after", "invalid_after")
        if after > last:
            raise ApiError(400, "invalid_after", f"after must be between 0 and {last}, got {after}")

        async def lines() -> AsyncIterator[bytes]:
            async for chunk in views.read_log(self.runtime, sid, after=after, upto=last):
                yield b"".join(r.data + b"\n" for r in chunk)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    # --- replay viewer ------------------------------------------------------------------------------

    async def session_replay(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        last = await views.last_seq(self.runtime, sid)
        limit = self.config.max_replay_bytes
        parts: list[bytes] = []
        size = 0
        async for chunk in views.read_log(self.runtime, sid, after=0, upto=last):
            for rec in chunk:
                size += len(rec.data) + 1
                if size > limit:
                    raise ApiError(
                        413,
                        "log_too_large",
                        f"session {sid}'s log is over {limit} bytes (max_replay_bytes); replay it with "
                        "`turnstile replay --json --trace` on the file instead",
                    )
                parts.append(rec.data)
        data = b"\n".join(parts) + b"\n"
        return Response(await replay_document(data, name=sid), media_type=_JSON)

    async def replay_upload(self, request: Request) -> Response:
        body = await read_body(request, self.config.max_replay_bytes, what="replay", code="log_too_large")
        upload = decode_json(body, ReplayUpload)
        name = upload.name[:200] or "upload"
        return Response(await replay_document(upload.text.encode("utf-8"), name=name), media_type=_JSON)

    # --- console -----------------------------------------------------------------------------------

    async def console(self, request: Request) -> Response:
        index = CONSOLE_DIR / "index.html"
        if not index.exists():
            return error_response(404, "no_console", "the web console is not installed in this build")
        return FileResponse(index, media_type="text/html")

    async def replay_page(self, request: Request) -> Response:
        page = CONSOLE_DIR / "replay.html"
        if not page.exists():
            return error_response(404, "no_console", "the replay viewer is not installed in this build")
        return FileResponse(page, media_type="text/html")


class _SseResponse(Response):
    """Streams a turn's (``tid``) or a whole session's entries as SSE; see :mod:`adapters.sse`."""

    def __init__(
        self,
        api: _Api,
        sid: str,
        tid: str | None,
        *,
        after: int,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(status_code=200)
        self.api, self.sid, self.tid, self.after, self.extra = api, sid, tid, after, headers or []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime, sid, tid = self.api.runtime, self.sid, self.tid

        def subscribe(after: int) -> Any:
            return runtime.subscribe(sid, after=after, stream=tid)

        def is_last(rec: Record) -> bool:
            if tid is not None:
                return type(rec.entry) is StreamEnded and rec.entry.stream == tid
            return type(rec.entry) is SessionStopped

        def lagged() -> None:
            self.api.sse_lagged += 1

        cfg = self.api.config
        await stream_sse(
            receive,
            send,
            SseSource(subscribe, is_last, Lagged),
            after=self.after,
            retry_ms=cfg.sse_retry_ms,
            heartbeat_s=cfg.heartbeat_s,
            send_timeout_s=cfg.send_timeout_s,
            extra_headers=self.extra,
            on_lag=lagged,
        )


class _SessionFeedResponse(Response):
    """``GET /v1/sessions/events``: see :mod:`adapters.session_feed`."""

    def __init__(self, api: _Api) -> None:
        super().__init__(status_code=200)
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.api.config
        await stream_session_summaries(
            self.api.runtime,
            receive,
            send,
            retry_ms=cfg.sse_retry_ms,
            heartbeat_s=cfg.heartbeat_s,
            send_timeout_s=cfg.send_timeout_s,
        )
