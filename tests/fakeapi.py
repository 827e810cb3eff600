"""A scriptable fake of Anthropic's Messages API, for driving the real Claude Code CLI offline.

Stdlib only: a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) served from a daemon thread, so it
works the same from plain sync tests, trio tests and scripts::

    with FakeModelAPI() as api:
        api.push(ToolUse(), Text("done"))
        env = {..., "ANTHROPIC_BASE_URL": api.base_url}
        ...  # run the CLI
        assert api.message_requests()[1].last_user_blocks()[0]["type"] == "tool_result"

Each ``POST /v1/messages`` (the CLI adds ``?beta=true``) takes the next scripted reply from the
queue, or the default reply ("ok") when the queue is empty. Streaming requests (``"stream": true``,
which is what CLI 2.1.327 sends) get Anthropic's SSE event stream; non-streaming requests get the
same reply as one JSON message; ``/v1/messages/count_tokens`` gets ``{"input_tokens": N}``.
Everything else is a 404 JSON error. Every request is recorded in :attr:`FakeModelAPI.requests`.

What CLI 2.1.327 was seen to call (with ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``): exactly
one streaming ``POST /v1/messages?beta=true`` per model round trip (a tool turn makes two), no
preflight, no title/quota request, no count_tokens.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ApiError",
    "FakeModelAPI",
    "Hang",
    "RecordedRequest",
    "Reply",
    "Slow",
    "Text",
    "Thinking",
    "ToolUse",
]


# --------------------------------------------------------------------------------------------
# Scripted replies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """An assistant text answer.

    ``text`` is split into ``chunks`` ``text_delta`` events (by characters); ``token_delay`` seconds
    pass before each of them, so ``Text("x" * 50, token_delay=0.1, chunks=50)`` streams for ~5 s.
    """

    text: str = "ok"
    token_delay: float = 0.0
    chunks: int = 1
    stop_reason: str = "end_turn"


@dataclass(frozen=True)
class ToolUse:
    """A ``tool_use`` block (``stop_reason: tool_use``), optionally preceded by a text block.

    The CLI runs the tool and calls the API again with a ``tool_result``; script that second
    reply too (or let the default "ok" answer it).
    """

    name: str = "Bash"
    input: dict[str, Any] = field(default_factory=lambda: {"command": "echo hi"})
    text_before: str | None = None
    id: str | None = None  # default: a deterministic toolu_fake_NNNN
    json_chunks: int = 2
    token_delay: float = 0.0


@dataclass(frozen=True)
class Thinking:
    """A thinking block (``thinking_delta`` + ``signature_delta``) followed by ``then``'s blocks."""

    thinking: str = "Let me think."
    then: Text | ToolUse = field(default_factory=Text)
    signature: str = "fake-signature"
    chunks: int = 1
    token_delay: float = 0.0


@dataclass(frozen=True)
class ApiError:
    """An API error.

    By default an HTTP error status with Anthropic's JSON error body. ``in_stream=True`` instead
    answers 200, sends ``message_start`` and then an SSE ``error`` event (what the real API does
    when it fails mid-stream, e.g. ``overloaded_error``). ``should_retry`` sets the
    ``x-should-retry`` header the Anthropic client honours (None: header absent).
    """

    status: int = 500
    message: str = "fake API error"
    error_type: str | None = None  # default: derived from status
    in_stream: bool = False
    should_retry: bool | None = None


@dataclass(frozen=True)
class Hang:
    """A response that never finishes: headers (and ``message_start``) then silence until close.

    With ``send_message_start=False`` only the response headers are sent. With ``ping_every_s`` the
    stream is not silent: an SSE ``ping`` event every that many seconds (what the real API sends while
    a response is slow), but still no content.
    """

    send_message_start: bool = True
    ping_every_s: float | None = None


@dataclass(frozen=True)
class Slow:
    """Wait ``delay_s`` before sending anything (time to first byte), then answer with ``then``."""

    delay_s: float
    then: Reply = field(default_factory=Text)


Reply = Text | ToolUse | Thinking | ApiError | Hang | Slow

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


# --------------------------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One HTTP request the fake received (``body`` is parsed JSON, or None if absent/invalid)."""

    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    t: float  # time.monotonic() at arrival
    reply: Reply | None = None  # the scripted reply used (messages requests only)

    @property
    def stream(self) -> bool:
        """True if the body asked for ``"stream": true``."""
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` list of a Messages API request (empty if absent)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return list(self.body["messages"])
        return []

    def last_user_blocks(self) -> list[dict[str, Any]]:
        """Content blocks of the last ``user`` message (a string content becomes one text block)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return [{"type": "text", "text": content}]
                return [b for b in content or [] if isinstance(b, dict)]
        return []


# --------------------------------------------------------------------------------------------
# Rendering a reply as content blocks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    kind: str  # "text" | "tool_use" | "thinking"
    pieces: tuple[str, ...]  # delta payloads
    delay: float
    tool_id: str = ""
    tool_name: str = ""
    tool_input: Any = None
    signature: str = ""

    def final(self) -> dict[str, Any]:
        """The complete content block, as a non-streaming response would carry it."""
        if self.kind == "text":
            return {"type": "text", "text": "".join(self.pieces)}
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": "".join(self.pieces), "signature": self.signature}
        return {"type": "tool_use", "id": self.tool_id, "name": self.tool_name, "input": self.tool_input}


def _split(text: str, n: int) -> tuple[str, ...]:
    n = max(1, min(n, len(text)))
    if not text:
        return ("",)
    size, extra = divmod(len(text), n)
    out: list[str] = []
    pos = 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        out.append(text[pos : pos + step])
        pos += step
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class _Disconnected(Exception):
    """The client went away (e.g. the CLI aborted the request on interrupt) or we are closing."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # handler threads must never keep the test process alive
    allow_reuse_address = True
    fake: FakeModelAPI


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the CLI's keep-alive connections behave like against the real API.
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.fake._track(self.connection, add=False)

    # -- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _record(self, raw: bytes) -> RecordedRequest:
        url = urlsplit(self.path)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = RecordedRequest(
            method=self.command,
            path=url.path,
            query=url.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw_body=raw,
            t=time.monotonic(),
        )
        self.server.fake._add_request(rec)
        return rec

    def _send_json(self, status: int, obj: Any, extra_headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("request-id", self.server.fake._next_id("req"))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _not_found(self) -> None:
        self._send_json(
            404,
            {"type": "error", "error": {"type": "not_found_error", "message": f"Not found: {self.path}"}},
        )

    # -- HTTP verbs --------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._record(b"")
        self._not_found()

    def do_GET(self) -> None:
        self._record(b"")
        self._not_found()

    def do_PUT(self) -> None:
        self._record(self._read_body())
        self._not_found()

    def do_DELETE(self) -> None:
        self._record(b"")
        self._not_found()

    def do_POST(self) -> None:
        rec = self._record(self._read_body())
        path = rec.path.rstrip("/")
        try:
            if path == "/v1/messages/count_tokens":
                # Rough but stable: ~4 characters per token.
                self._send_json(200, {"input_tokens": max(1, len(rec.raw_body) // 4)})
            elif path == "/v1/messages":
                reply = self.server.fake._take_reply()
                rec.reply = reply
                self._serve(rec, reply)
            else:
                self._not_found()
        except (_Disconnected, OSError):
            # Client hung up mid-response (interrupt) or the fake is shutting down.
            self.close_connection = True

    # -- Messages API --------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.server.fake._closing.wait(seconds):
            raise _Disconnected

    def _serve(self, rec: RecordedRequest, reply: Reply) -> None:
        fake = self.server.fake
        model = rec.body.get("model", "claude-fake") if isinstance(rec.body, dict) else "claude-fake"
        while isinstance(reply, Slow):
            self._sleep(reply.delay_s)
            reply = reply.then
        if isinstance(reply, ApiError) and not reply.in_stream:
            headers = {}
            if reply.should_retry is not None:
                headers["x-should-retry"] = "true" if reply.should_retry else "false"
            error_type = reply.error_type or _ERROR_TYPES.get(reply.status, "api_error")
            self._send_json(
                reply.status,
                {"type": "error", "error": {"type": error_type, "message": reply.message}},
                headers,
            )
            return
        if not rec.stream:
            self._serve_json(model, reply)
            return

        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", fake._next_id("req"))
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

        msg_id = fake._next_id("msg")
        if isinstance(reply, Hang) and not reply.send_message_start:
            self._hang(reply.ping_every_s)
        self._event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 10,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 1,
                    },
                },
            },
        )
        if isinstance(reply, Hang):
            self._hang(reply.ping_every_s)
        if isinstance(reply, ApiError):
            error_type = reply.error_type or _ERROR_TYPES.get(reply.status, "api_error")
            self._event("error", {"type": "error", "error": {"type": error_type, "message": reply.message}})
            self._end_chunks()
            return
        assert not isinstance(reply, Hang | Slow)
        blocks, stop_reason = self._blocks(reply)
        output_tokens = 1
        for index, block in enumerate(blocks):
            start: dict[str, Any]
            if block.kind == "text":
                start = {"type": "text", "text": ""}
            elif block.kind == "thinking":
                start = {"type": "thinking", "thinking": "", "signature": ""}
            else:
                start = {"type": "tool_use", "id": block.tool_id, "name": block.tool_name, "input": {}}
            self._event(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
            )
            for piece in block.pieces:
                self._sleep(block.delay)
                delta: dict[str, Any]
                if block.kind == "text":
                    delta = {"type": "text_delta", "text": piece}
                elif block.kind == "thinking":
                    delta = {"type": "thinking_delta", "thinking": piece}
                else:
                    delta = {"type": "input_json_delta", "partial_json": piece}
                output_tokens += 1
                self._event(
                    "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
                )
            if block.kind == "thinking":
                self._event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": block.signature},
                    },
                )
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        )
        self._event("message_stop", {"type": "message_stop"})
        self._end_chunks()

    def _serve_json(self, model: str, reply: Reply) -> None:
        if isinstance(reply, Hang):
            self._hang()
        assert isinstance(reply, Text | ToolUse | Thinking)
        blocks, stop_reason = self._blocks(reply)
        for block in blocks:
            self._sleep(block.delay * len(block.pieces))
        self._send_json(
            200,
            {
                "id": self.server.fake._next_id("msg"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [b.final() for b in blocks],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 10,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": sum(len(b.pieces) for b in blocks) + 1,
                },
            },
        )

    def _blocks(self, reply: Text | ToolUse | Thinking) -> tuple[list[_Block], str]:
        if isinstance(reply, Text):
            return [_Block("text", _split(reply.text, reply.chunks), reply.token_delay)], reply.stop_reason
        if isinstance(reply, ToolUse):
            blocks: list[_Block] = []
            if reply.text_before is not None:
                blocks.append(_Block("text", (reply.text_before,), reply.token_delay))
            payload = json.dumps(reply.input)
            # The real API's first input_json_delta is often empty; mimic that.
            pieces = ("", *_split(payload, reply.json_chunks))
            blocks.append(
                _Block(
                    "tool_use",
                    pieces,
                    reply.token_delay,
                    tool_id=reply.id or self.server.fake._next_id("toolu"),
                    tool_name=reply.name,
                    tool_input=reply.input,
                )
            )
            return blocks, "tool_use"
        rest, stop_reason = self._blocks(reply.then)
        thinking = _Block(
            "thinking",
            _split(reply.thinking, reply.chunks),
            reply.token_delay,
            signature=reply.signature,
        )
        return [thinking, *rest], stop_reason

    def _event(self, name: str, data: dict[str, Any]) -> None:
        payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        self._chunk(payload)

    def _chunk(self, payload: bytes) -> None:
        if self.server.fake._closing.is_set():
            raise _Disconnected
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _hang(self, ping_every_s: float | None = None) -> None:
        if ping_every_s is None:  # (the non-streaming path passes None: no SSE to ping on)
            self.server.fake._closing.wait()
            raise _Disconnected
        while not self.server.fake._closing.wait(ping_every_s):
            self._event("ping", {"type": "ping"})
        raise _Disconnected


class FakeModelAPI:
    """Scriptable fake Messages API on ``127.0.0.1:<ephemeral port>``.

    Use as a context manager (or call :meth:`start` / :meth:`close`). Replies are consumed
    first-in first-out by ``POST /v1/messages``; when the queue is empty ``default`` is used.

    Attributes:
        requests: every request received, in arrival order (thread-safe to read a snapshot of).
        base_url: ``http://127.0.0.1:PORT``, the value for ``ANTHROPIC_BASE_URL``.
    """

    def __init__(self, replies: Iterable[Reply] = (), *, default: Reply | None = None) -> None:
        self._replies: collections.deque[Reply] = collections.deque(replies)
        #: Reply used when the queue is empty (may be reassigned by a test at any time).
        self.default: Reply = default if default is not None else Text("ok")
        self._cond = threading.Condition()
        self.requests: list[RecordedRequest] = []
        self._closing = threading.Event()
        self._conns: set[socket.socket] = set()
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeModelAPI:
        """Bind and start serving in a daemon thread; returns self."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        host, port = server.server_address[:2]
        self.base_url = f"http://{host!s}:{port}"
        # A short poll interval keeps shutdown() prompt.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeapi", daemon=True
        )
        self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving. Bounded: never blocks longer than about ``timeout`` seconds.

        Hanging/slow responses are released, and every open connection is shut down so the
        client sees the close immediately.
        """
        self._closing.set()
        server = self._server
        if server is None:
            return
        self._server = None
        # shutdown() waits for serve_forever to notice; run it in a helper thread so a wedged
        # server can never hang the test session.
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout)
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> FakeModelAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scripting ------------------------------------------------------------------------------

    def push(self, *replies: Reply) -> None:
        """Append replies to the queue (served in order by the next messages requests)."""
        with self._cond:
            self._replies.extend(replies)

    @property
    def pending(self) -> int:
        """Number of scripted replies not yet consumed."""
        with self._cond:
            return len(self._replies)

    # -- inspection -----------------------------------------------------------------------------

    def message_requests(self) -> list[RecordedRequest]:
        """The ``POST /v1/messages`` requests (not count_tokens), in arrival order."""
        with self._cond:
            return [r for r in self.requests if r.method == "POST" and r.path.rstrip("/") == "/v1/messages"]

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``n`` messages requests arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                reqs = [
                    r for r in self.requests if r.method == "POST" and r.path.rstrip("/") == "/v1/messages"
                ]
                if len(reqs) >= n:
                    return reqs
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"fake API saw {len(reqs)} messages requests, expected {n}")
                self._cond.wait(remaining)

    # -- internals used by the handler ----------------------------------------------------------

    def _take_reply(self) -> Reply:
        with self._cond:
            return self._replies.popleft() if self._replies else self.default

    def _add_request(self, rec: RecordedRequest) -> None:
        with self._cond:
            self.requests.append(rec)
            self._cond.notify_all()

    def _next_id(self, prefix: str) -> str:
        # Deterministic ids keep recordings diff-friendly across runs.
        return f"{prefix}_fake_{next(self._ids):04d}"

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)


@contextlib.contextmanager
def fake_model_api(*replies: Reply) -> Iterator[FakeModelAPI]:
    """Functional shorthand for ``with FakeModelAPI(replies) as api``."""
    with FakeModelAPI(replies) as api:
        yield api
