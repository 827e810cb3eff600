"""Lean loopback clients for the latency and fan-out benchmarks (trio sockets; h11 and wsproto where needed).

Each client stamps what it receives with ``time.time_ns()`` and subtracts the ``"t_ns":...`` the emitter
wrote into each delta line (same machine, same clock): that is the event's latency from the agent's write
to the client's read. Clients are deliberately lean (no httpx on the hot path) so that the client side
costs the same whichever server it talks to.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

T_NS = re.compile(rb'"t_ns":(\d+)')


@dataclass
class Received:
    """What one client got: per-event latencies (ns), and when its response started and ended."""

    latencies: list[int] = field(default_factory=list)
    started_ns: int = 0
    ended_ns: int = 0
    status: int = 0

    def take(self, data: bytes, now: int) -> None:
        for m in T_NS.finditer(data):
            self.latencies.append(now - int(m.group(1)))


async def http_json(
    port: int, method: str, path: str, body: Any = None, limit_s: float = 30
) -> tuple[int, Any]:
    """One HTTP/1.1 request with a JSON body; the status and the decoded JSON answer (None when empty,
    the raw bytes when it is not JSON). A connection that breaks or closes early raises ``OSError``."""
    with trio.fail_after(limit_s):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            data = b"" if body is None else json.dumps(body).encode()
            headers = [("host", "127.0.0.1"), ("content-length", str(len(data))), ("connection", "close")]
            if body is not None or method in ("POST", "PUT", "PATCH"):
                # The server refuses state-changing requests without it (browser safety: adapters.guard).
                headers.append(("content-type", "application/json"))
            out = conn.send(h11.Request(method=method, target=path, headers=headers))
            await stream.send_all(out + conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage()))
            status = 0
            chunks: list[bytes] = []
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    # The server closed the connection before its answer was complete (e.g. it was
                    # killed): a transport failure like a reset, which callers retry as such.
                    raise ConnectionError(f"{method} {path}: the server hung up mid-answer ({exc})") from exc
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(262144))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    raw = b"".join(chunks)
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:
        return status, raw


async def sse_client(
    port: int,
    path: str,
    out: Received,
    *,
    connected: trio.Semaphore | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """GET an SSE stream and record every delta's latency until the response ends.

    ``task_status.started()`` fires once the response headers arrived (the subscription is live).
    ``connected`` bounds how many connections are being opened at once (listen backlogs are small).
    Lean on purpose: the request is written by hand and the chunked body is not parsed — the raw bytes
    are scanned for timestamps (chunk-size lines hold none) and the response ends at the last chunk
    (``0\\r\\n\\r\\n``) or EOF — so the client's own CPU stays small next to the server's.
    """
    if connected is not None:
        await connected.acquire()
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    finally:
        if connected is not None:
            connected.release()
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n"
        await stream.send_all(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(65536)
            if not data:
                task_status.started()
                return
            head += data
        head, _, body = head.partition(b"\r\n\r\n")
        out.status = int(head.split(b" ", 2)[1])
        out.started_ns = time.time_ns()
        task_status.started()
        if b"transfer-encoding: chunked" in head.lower():  # else: no body (a 204, an error)
            carry = b""
            data = body
            while True:
                if data:
                    now = time.time_ns()
                    # Scan up to the last newline (a read may end mid-line; the rest is scanned, and
                    # stamped, when its line is complete).
                    buf = carry + data
                    cut = buf.rfind(b"\n") + 1
                    out.take(buf[:cut], now)
                    carry = buf[cut:]
                    if buf.endswith(b"\r\n0\r\n\r\n") or buf == b"0\r\n\r\n":
                        break  # the last chunk: the response is complete
                data = await stream.receive_some(262144)
                if not data:
                    break
        out.ended_ns = time.time_ns()


async def ws_client(
    port: int,
    session: str,
    turn: str,
    out: Received,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Subscribe to a turn over Turnstile's WebSocket protocol; record latencies until its ``end``.

    Lean on purpose, like the SSE client (which only runs a regex over the raw bytes), so that the
    client's own CPU stays small next to the server's: wsproto does the handshake and builds the frames
    this client sends (they must be masked); the server's frames (unmasked) are split here by their
    header alone. (wsproto's own parser cost ~20-40 us per message: at 100 streams the client's parsing
    delayed its reads and showed up as WebSocket latency.)
    """
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Ping, Request, TextMessage

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="127.0.0.1", target="/")))
        while True:  # the handshake (the server sends nothing more until it gets the subscribe)
            data = await stream.receive_some(65536)
            if not data:
                task_status.started()
                return
            ws.receive_data(data)
            if any(isinstance(e, AcceptConnection) for e in ws.events()):
                break
        subscribe = {"op": "subscribe", "session": session, "turn": turn, "id": "b"}
        await stream.send_all(ws.send(TextMessage(data=json.dumps(subscribe))))
        started = False
        buf = b""
        message = b""
        done = False
        while not done:
            data = await stream.receive_some(262144)
            if not data:
                break
            now = time.time_ns()
            buf += data
            while len(buf) >= 2:
                fin, opcode, size, at = buf[0] & 0x80, buf[0] & 0x0F, buf[1] & 0x7F, 2
                if size == 126:
                    size, at = int.from_bytes(buf[2:4], "big"), 4
                elif size == 127:
                    size, at = int.from_bytes(buf[2:10], "big"), 10
                if len(buf) < at + size:
                    break  # (also when the extended length itself is not all here yet)
                payload, buf = buf[at : at + size], buf[at + size :]
                if opcode == 0x9:  # ping
                    await stream.send_all(ws.send(Ping(payload=payload).response()))
                    continue
                if opcode == 0x8:  # close
                    done = True
                    break
                if opcode not in (0x0, 0x1):
                    continue
                message += payload
                if not fin:
                    continue
                if not started:
                    started = True
                    out.started_ns = time.time_ns()
                    out.status = 101 if b'"ack"' in message else 0
                    task_status.started()
                else:
                    out.take(message, now)
                    if message.startswith(b'{"type":"end"'):
                        done = True
                message = b""
        out.ended_ns = time.time_ns()
        if not started:
            task_status.started()


@asynccontextmanager
async def emitter_turn(
    argv: list[str], prompt: str, clock: Callable[[], float] = time.time_ns
) -> AsyncIterator[AsyncIterator[tuple[float, list[bytes]]]]:
    """Run the emitter (``argv``) as our own child for one turn, read over a plain pipe.

    Yields an iterator of ``(clock() at the read, the complete lines it brought)``, one per pipe read, up
    to the turn's ``result`` line. On exit the emitter's stdin is closed and it is reaped (killed after
    5 s).
    """
    proc = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout

    async def reads() -> AsyncIterator[tuple[float, list[bytes]]]:
        pending = b""
        while True:
            data = await stdout.receive_some(65536)
            if not data:
                return
            now = clock()
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            yield now, lines
            if lines and lines[-1].startswith(b'{"type":"result"'):
                return

    try:
        msg = {"type": "user", "message": {"role": "user", "content": prompt}}
        await proc.stdin.send_all(json.dumps(msg).encode() + b"\n")
        yield reads()
    finally:
        await proc.stdin.aclose()
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def pipe_client(
    argv: list[str],
    prompt: str,
    out: Received,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The floor: run the emitter as our own child and read its stdout lines directly."""
    async with emitter_turn(argv, prompt) as reads:
        out.started_ns = time.time_ns()
        task_status.started()
        async for now, lines in reads:
            for line in lines:
                out.take(line, int(now))
        out.ended_ns = time.time_ns()
