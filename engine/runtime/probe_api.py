"""A tiny stand-in for Anthropic's Messages API on 127.0.0.1, so ``turnstile doctor`` probes a CLI offline.

It answers ``POST /v1/messages`` (streaming, as the CLI asks, or plain JSON) with a reply chosen from the
request itself, so concurrent probe processes need no shared script:

* the last user message carries a ``tool_result`` → a short text (the turn ends);
* it contains :data:`SLOW` → a long text, one word per ``slow_delay_s`` (something to interrupt);
* it contains :data:`TOOL` → a Bash ``tool_use`` running ``tool_command`` (to make the CLI ask);
* anything else → a short text in three deltas.

``/v1/messages/count_tokens`` gets a count; everything else a 404 JSON error. Every messages request body
is kept in :attr:`ProbeAPI.requests` with its ``x-api-key`` (the doctor gives each process its own key).
HTTP/1.1 with keep-alive and chunked SSE, written by hand: the CLI is the only client and needs no more.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Final

import trio

__all__ = ["SLOW", "TOOL", "ProbeAPI"]

SLOW: Final = "[turnstile-probe:slow]"
TOOL: Final = "[turnstile-probe:tool]"
_MAX_HEAD: Final = 64 * 1024
_MAX_BODY: Final = 64 * 1024 * 1024


class _Closed(Exception):
    """The client went away."""


class ProbeAPI:
    """Serve with ``port = await nursery.start(api.serve)``; ``base_url`` is then set."""

    def __init__(
        self, *, tool_command: str = "true", slow_words: int = 60, slow_delay_s: float = 0.05
    ) -> None:
        self.tool_command = tool_command
        self.slow_words = slow_words
        self.slow_delay_s = slow_delay_s
        #: ``(x-api-key header, request body)`` of every messages request, in arrival order.
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.base_url = ""
        self._ids = itertools.count(1)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on an ephemeral loopback port until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = int(listeners[0].socket.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{port}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._connection, listeners)
            task_status.started(port)

    # --- HTTP -----------------------------------------------------------------------------------------

    async def _connection(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        try:
            async with stream:
                while True:
                    head = await _read_until(stream, buffer, b"\r\n\r\n", _MAX_HEAD)
                    if head is None:
                        return
                    lines = head.decode("latin-1").split("\r\n")
                    method, target = [*lines[0].split(" "), "", ""][:2]
                    headers = {
                        k.strip().lower(): v.strip()
                        for k, _, v in (ln.partition(":") for ln in lines[1:])
                        if k
                    }
                    body = await _read_body(stream, buffer, headers)
                    path = target.split("?", 1)[0].rstrip("/")
                    await self._answer(stream, method, path, headers.get("x-api-key", ""), body)
                    if headers.get("connection", "").lower() == "close":
                        return
        except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError):
            return

    async def _answer(self, stream: trio.SocketStream, method: str, path: str, key: str, body: bytes) -> None:
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            request = {}
        if method == "POST" and path == "/v1/messages/count_tokens":
            await _send_json(stream, 200, {"input_tokens": max(1, len(body) // 4)})
        elif method == "POST" and path == "/v1/messages" and isinstance(request, dict):
            self.requests.append((key, request))
            model = str(request.get("model") or "claude-probe")
            blocks, stop = self._reply(request)
            if request.get("stream"):
                await self._stream(stream, model, blocks, stop)
            else:
                content = [b for b, _ in blocks]
                await _send_json(stream, 200, self._message(model, content, stop))
        else:
            error = {"type": "not_found_error", "message": f"not found: {method} {path}"}
            await _send_json(stream, 404, {"type": "error", "error": error})

    # --- replies --------------------------------------------------------------------------------------

    def _reply(self, request: dict[str, Any]) -> tuple[list[tuple[dict[str, Any], list[str]]], str]:
        """Content blocks with their delta pieces, and the stop reason, for this request."""
        last = _last_user_blocks(request)
        text = " ".join(str(b.get("text", "")) for b in last if b.get("type") == "text")
        if any(b.get("type") == "tool_result" for b in last):
            return [_text("Noted.", 1)], "end_turn"
        if SLOW in text:
            return [_text("word " * self.slow_words, self.slow_words)], "end_turn"
        if TOOL in text:
            tool = {
                "type": "tool_use",
                "id": f"toolu_probe_{next(self._ids):04d}",
                "name": "Bash",
                "input": {"command": self.tool_command},
            }
            return [(tool, ["", json.dumps(tool["input"])])], "tool_use"
        return [_text("Turnstile probe: ok.", 3)], "end_turn"

    def _message(self, model: str, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
        return {
            "id": f"msg_probe_{next(self._ids):04d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }

    async def _stream(
        self,
        stream: trio.SocketStream,
        model: str,
        blocks: list[tuple[dict[str, Any], list[str]]],
        stop: str,
    ) -> None:
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        await _event(
            stream, "message_start", {"type": "message_start", "message": self._message(model, [], None)}
        )
        for index, (block, pieces) in enumerate(blocks):
            start = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
            await _event(
                stream,
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
            for piece in pieces:
                if block["type"] == "text":
                    if len(pieces) > 1:
                        await trio.sleep(self.slow_delay_s if len(pieces) > 3 else 0)
                    delta = {"type": "text_delta", "text": piece}
                else:
                    delta = {"type": "input_json_delta", "partial_json": piece}
                await _event(
                    stream,
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            await _event(stream, "content_block_stop", {"type": "content_block_stop", "index": index})
        await _event(
            stream,
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        )
        await _event(stream, "message_stop", {"type": "message_stop"})
        await stream.send_all(b"0\r\n\r\n")


def _text(text: str, pieces: int) -> tuple[dict[str, Any], list[str]]:
    """A text block and its deltas: ``pieces`` runs of whole words (fewer if there are fewer words)."""
    words = text.split()
    if pieces <= 1 or len(words) <= 1:
        return {"type": "text", "text": text.strip()}, [text.strip()]
    size = -(-len(words) // pieces)  # ceiling: at most `pieces` deltas
    runs = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    parts = [run + " " for run in runs[:-1]] + [runs[-1]]
    return {"type": "text", "text": "".join(parts)}, parts


def _last_user_blocks(request: dict[str, Any]) -> list[dict[str, Any]]:
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return [{"type": "text", "text": content}]
            return [b for b in content or [] if isinstance(b, dict)]
    return []


async def _event(stream: trio.SocketStream, name: str, data: dict[str, Any]) -> None:
    payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
    await stream.send_all(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")


async def _send_json(stream: trio.SocketStream, status: int, obj: Any) -> None:
    data = json.dumps(obj).encode()
    reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    await stream.send_all(head.encode() + data)


async def _read_until(stream: trio.SocketStream, buffer: bytearray, mark: bytes, limit: int) -> bytes | None:
    """Bytes up to ``mark`` (consumed with it); None at a clean end of stream before any byte."""
    while True:
        at = buffer.find(mark)
        if at >= 0:
            out = bytes(buffer[:at])
            del buffer[: at + len(mark)]
            return out
        if len(buffer) > limit:
            raise _Closed
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buffer:
                raise _Closed
            return None
        buffer += chunk


async def _read_exactly(stream: trio.SocketStream, buffer: bytearray, size: int) -> bytes:
    while len(buffer) < size:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise _Closed
        buffer += chunk
    out = bytes(buffer[:size])
    del buffer[:size]
    return out


async def _read_body(stream: trio.SocketStream, buffer: bytearray, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        total = 0
        while True:
            line = await _read_until(stream, buffer, b"\r\n", _MAX_HEAD)
            size = int((line or b"0").split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await _read_until(stream, buffer, b"\r\n", _MAX_HEAD)  # the empty trailer line
                return b"".join(parts)
            total += size
            if total > _MAX_BODY:
                raise _Closed
            parts.append(await _read_exactly(stream, buffer, size))
            await _read_exactly(stream, buffer, 2)
    length = int(headers.get("content-length") or 0)
    if length > _MAX_BODY:
        raise _Closed
    return await _read_exactly(stream, buffer, length) if length > 0 else b""
