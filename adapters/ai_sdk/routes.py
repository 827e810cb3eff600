"""The AI SDK chat endpoints over a :class:`Runtime`: ``POST {path}``, ``GET {path}/{id}/stream``,
``POST {path}/{id}/stop``, ``GET {path}/{id}/messages`` (``path`` is ``/v1/chat`` in ``turnstile serve``).

A chat is a Turnstile session (created on the first POST that names it), and one POST is one turn. Its
answer is the turn's UI message stream, mapped from the log by :class:`TurnMapper` as it is read, with
the SDK's headers, ``id: <seq>`` lines and ``data: [DONE]``; the SSE machinery (heartbeats, dropping a
client that stops reading, re-reading the log after a lag) is :func:`adapters.sse.stream_sse`'s.

Resume is a replay: the stream of a running turn always starts again at the turn's first log entry, so a
client that reconnects gets the whole assistant message (same ``messageId``, which replaces the partial
one it holds), then the rest live. A ``Last-Event-ID`` (or ``?after=``), which the SDK never sends but
other clients may, resumes exactly after that seq instead.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from turnstile.adapters import views
from turnstile.adapters.ai_sdk.chunks import DONE, sse_events
from turnstile.adapters.ai_sdk.mapping import TurnMapper
from turnstile.adapters.ai_sdk.messages import ChatHistory
from turnstile.adapters.ai_sdk.requests import approval_responses, decode_request, prompt_of
from turnstile.adapters.bodies import read_body
from turnstile.adapters.config import ServerConfig
from turnstile.adapters.errors import ApiError, error_body, status_for
from turnstile.adapters.sse import SseSource, stream_sse
from turnstile.engine.errors import Lagged, LogError, SessionExists, SessionNotFound, TurnstileError
from turnstile.engine.log import Record, StreamEnded
from turnstile.engine.runtime.runtime import Runtime
from turnstile.engine.stores.file import validate_session_id

__all__ = ["BODY_LIMIT_FACTOR", "chat_routes", "create_chat_app"]

BODY_LIMIT_FACTOR: Final = 8
"""A chat POST may be this many times ``max_prompt_bytes`` (it carries the page's whole history)."""

UI_STREAM_HEADERS: Final = [(b"x-vercel-ai-ui-message-stream", b"v1")]
"""Added to :data:`adapters.sse.SSE_HEADERS` (``text/event-stream``, ``no-cache``, ``x-accel-buffering``)."""

_JSON: Final = "application/json"

Handler = Callable[["_Chat", Request], Awaitable[Response]]


def chat_routes(
    runtime: Runtime, config: ServerConfig | None = None, *, path: str = "/v1/chat"
) -> list[BaseRoute]:
    """The chat endpoints under ``path``, to add to a Starlette app's routes (``create_app`` does)."""
    chat = _Chat(runtime, config or ServerConfig())
    return [
        Route(path, chat.send, methods=["POST"]),
        Route(path + "/{chat_id}/stream", chat.resume, methods=["GET"]),
        Route(path + "/{chat_id}/stop", chat.stop, methods=["POST"]),
        Route(path + "/{chat_id}/messages", chat.messages, methods=["GET"]),
    ]


def create_chat_app(
    runtime: Runtime, config: ServerConfig | None = None, *, path: str = "/v1/chat"
) -> Starlette:
    """Only the chat endpoints, as an app of their own, to mount in yours (it runs on trio, like the
    runtime). ``turnstile serve`` does not use it: its app (``create_app``) carries the same routes."""
    return Starlette(
        routes=chat_routes(runtime, config, path=path), exception_handlers={HTTPException: _http_exception}
    )


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type=_JSON)


def _error(status: int, code: str, message: str) -> Response:
    return Response(error_body(code, message), status_code=status, media_type=_JSON)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


def _answers_errors(handler: Handler) -> Handler:
    """Bad input and runtime refusals as the API's JSON errors, in whichever app the route sits."""

    @functools.wraps(handler)
    async def wrapped(chat: _Chat, request: Request) -> Response:
        try:
            return await handler(chat, request)
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message)
        except TurnstileError as exc:
            status, code = status_for(exc)
            return _error(status, code, str(exc))

    return wrapped


def _chat_id(raw: str) -> str:
    try:
        return validate_session_id(raw)
    except LogError:
        raise ApiError(
            400,
            "invalid_chat_id",
            f"invalid chat id {raw!r}: a chat is a session, so use 1-128 letters, digits, '_', '-' and '.', "
            "starting with a letter or digit",
        ) from None


class _Chat:
    def __init__(self, runtime: Runtime, config: ServerConfig) -> None:
        self.runtime = runtime
        self.config = config

    @_answers_errors
    async def send(self, request: Request) -> Response:
        """``POST {path}``: a new turn from the last user message; answers with its UI message stream."""
        body = await read_body(request, self.config.max_prompt_bytes * BODY_LIMIT_FACTOR, what="chat")
        chat = decode_request(body)
        sid = _chat_id(chat.id)
        if approval_responses(chat):
            # Tool approvals (issue "Tool approvals from any client") answer the pending request of the
            # running turn here and stream that same turn on; until then no request can be pending.
            raise ApiError(
                409,
                "no_pending_approval",
                "this message answers a tool approval, but no approval is pending in this chat "
                "(this server does not ask for tool approvals yet)",
            )
        prompt = prompt_of(chat)
        size = len(prompt.encode())
        if size > self.config.max_prompt_bytes:
            raise ApiError(
                413,
                "prompt_too_large",
                f"the prompt is {size} bytes; the limit is {self.config.max_prompt_bytes}",
            )
        await self._ensure_session(sid)
        tid = await self.runtime.start_turn(sid, prompt)
        return _UiStream(self, sid, tid, skip_until=0)

    async def _ensure_session(self, sid: str) -> None:
        try:
            await views.session(self.runtime, sid)
        except SessionNotFound:
            # SessionExists: another request created it first; it is the same chat.
            with contextlib.suppress(SessionExists):
                await self.runtime.create_session(session_id=sid)

    @_answers_errors
    async def resume(self, request: Request) -> Response:
        """``GET {path}/{id}/stream``: 204 when nothing runs; else the running turn from its start, live."""
        sid = _chat_id(request.path_params["chat_id"])
        try:
            info = await views.session_info(self.runtime, sid)
        except SessionNotFound:
            return Response(status_code=204)  # a chat not started yet has no stream to resume
        after = _after(request, last_seq=info.last_seq)
        for turn in info.turns:
            if after is None and not turn.ended:
                return _UiStream(self, sid, turn.id, skip_until=0)
            if after is not None:
                _start, end = await views.stream_bounds(self.runtime, sid, turn.id)
                if end is None or end > after:
                    return _UiStream(self, sid, turn.id, skip_until=after)
        return Response(status_code=204)

    @_answers_errors
    async def stop(self, request: Request) -> Response:
        """``POST {path}/{id}/stop``: interrupt the running turn (and drop queued ones)."""
        sid = _chat_id(request.path_params["chat_id"])
        info = await views.session_info(self.runtime, sid)
        running = [turn.id for turn in info.turns if not turn.ended]
        for tid in running:
            await self.runtime.interrupt(sid, tid)
        return _json({"chat_id": sid, "interrupted": running}, 202 if running else 200)

    @_answers_errors
    async def messages(self, request: Request) -> Response:
        """``GET {path}/{id}/messages``: the chat as ``UIMessage[]``, folded from the log."""
        sid = _chat_id(request.path_params["chat_id"])
        try:
            last = await views.last_seq(self.runtime, sid)
        except SessionNotFound:
            return _json([])
        history = ChatHistory()
        async for records in views.read_log(self.runtime, sid, after=0, upto=last):
            for rec in records:
                history.add(rec.entry)
        return _json(history.messages())


def _after(request: Request, *, last_seq: int) -> int | None:
    """``Last-Event-ID`` or ``?after=``: a seq of this session's log, or None when not given."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > last_seq:
        raise ApiError(
            400, "invalid_last_event_id", f"{raw!r} is not a seq of this chat's log (0 to {last_seq})"
        )
    return int(text)


class _UiStream(Response):
    """One turn as the UI message stream: mapped from its first log entry on, sent after ``skip_until``."""

    def __init__(self, chat: _Chat, sid: str, tid: str, *, skip_until: int) -> None:
        super().__init__(status_code=200)
        self.chat, self.sid, self.tid, self.skip_until = chat, sid, tid, skip_until

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime, sid, tid, skip = self.chat.runtime, self.sid, self.tid, self.skip_until
        mapper = TurnMapper(tid)

        def encode(rec: Record) -> bytes:
            chunks = mapper.feed(rec.entry)  # every entry, also skipped ones: the mapper needs them all
            return sse_events(chunks, rec.entry.seq) if rec.entry.seq > skip else b""

        def subscribe(after: int) -> Any:
            return runtime.subscribe(sid, after=after, stream=tid)

        def is_last(rec: Record) -> bool:
            return type(rec.entry) is StreamEnded

        cfg = self.chat.config
        await stream_sse(
            receive,
            send,
            SseSource(subscribe, is_last, Lagged),
            after=0,
            retry_ms=cfg.sse_retry_ms,
            heartbeat_s=cfg.heartbeat_s,
            send_timeout_s=cfg.send_timeout_s,
            extra_headers=[*UI_STREAM_HEADERS, (b"x-turn-id", tid.encode())],
            encode=encode,
            trailer=DONE,
        )
