"""A stand-in agent for the benchmarks: speaks the CLI's stream-json, emits timestamped token deltas.

Run as ``python -S bench/emitter.py [any CLI flags, ignored]`` (stdlib only, starts in ~20 ms). For each
``user`` message on stdin it writes one turn on stdout, shaped like the real CLI's with
``--include-partial-messages`` (``system/init``, ``message_start``, ``content_block_start``, the deltas,
``content_block_stop``, the ``assistant`` line, ``message_delta``, ``message_stop``, ``result``). Settings
come from the prompt text as ``key=value`` words:

``n=N``             token deltas in the turn (default 100)
``interval_us=U``   microseconds between deltas; 0 = as fast as the pipe takes them (default 0)
``block=1``         with ``interval_us=0``: write the deltas in 64 KiB blocks instead of one ``write`` per
                    line (the CLI writes each line on its own)
``start_ns=T``      wall-clock instant (``time.time_ns()``) of the first delta: the emitter sleeps until
                    then, so that every client is subscribed before anything is emitted (default: at once)

Every delta line carries ``"t_ns":<time.time_ns() at the write>`` as its last field (an unknown field: the
log keeps it verbatim), so a receiver on the same machine computes each event's latency. A delta line
is ~300 bytes, like the CLI's (``session_id``, ``uuid``, ``parent_tool_use_id`` included). stdin EOF ends
the process (exit 0).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

SESSION = str(uuid.uuid4())
BLOCK = 65536


def _settings(prompt: str) -> dict[str, int]:
    out = {"n": 100, "interval_us": 0, "start_ns": 0, "block": 0}
    for word in prompt.split():
        key, _, value = word.partition("=")
        if key in out and value.lstrip("-").isdigit():
            out[key] = int(value)
    return out


def _line(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def _event(event: dict[str, object]) -> bytes:
    return _line(
        {
            "type": "stream_event",
            "event": event,
            "session_id": SESSION,
            "parent_tool_use_id": None,
            "uuid": str(uuid.uuid4()),
        }
    )


def _turn(prompt: str, turn: int) -> None:
    cfg = _settings(prompt)
    n, interval_ns, start_ns = cfg["n"], cfg["interval_us"] * 1000, cfg["start_ns"]
    msg_id = f"msg_bench_{turn}"
    _write(
        _line(
            {
                "type": "system",
                "subtype": "init",
                "cwd": os.getcwd(),
                "session_id": SESSION,
                "tools": [],
                "model": "bench",
                "permissionMode": "default",
                "claude_code_version": "bench-emitter",
                "uuid": str(uuid.uuid4()),
            }
        )
    )
    _write(
        _event(
            {
                "type": "message_start",
                "message": {"id": msg_id, "type": "message", "role": "assistant", "model": "bench"},
            }
        )
        + _event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    )
    # One delta line, split around its timestamp; the uuid field is a constant (its length is what counts).
    head = _event(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tok "}}
    ).rstrip(b"}\n")
    head += b',"t_ns":'
    if start_ns:
        while True:
            left = start_ns - time.time_ns()
            if left <= 0:
                break
            time.sleep(min(left / 1e9, 0.5))
    if interval_ns <= 0 and not cfg["block"]:
        # As fast as the pipe takes it, one write per line like the CLI.
        now_ns = time.time_ns
        for _ in range(n):
            _write(head + str(now_ns()).encode() + b"}\n")
    elif interval_ns <= 0:
        # As fast as the pipe takes it: 64 KiB blocks of lines, each stamped when its block is built.
        per_block = max(1, BLOCK // (len(head) + 22))
        left_n = n
        while left_n > 0:
            k = min(per_block, left_n)
            stamp = head + str(time.time_ns()).encode() + b"}\n"
            _write(stamp * k)
            left_n -= k
    else:
        due = time.time_ns()
        for _ in range(n):
            now = time.time_ns()
            if due > now:
                time.sleep((due - now) / 1e9)
            _write(head + str(time.time_ns()).encode() + b"}\n")
            due += interval_ns
    text = "tok " * min(n, 1000)
    _write(
        _event({"type": "content_block_stop", "index": 0})
        + _line(
            {
                "type": "assistant",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": "bench",
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": None,
                    "usage": {"input_tokens": 3, "output_tokens": n},
                },
                "parent_tool_use_id": None,
                "session_id": SESSION,
                "uuid": str(uuid.uuid4()),
            }
        )
        + _event(
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": n}}
        )
        + _event({"type": "message_stop"})
        + _line(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "duration_ms": 1,
                "duration_api_ms": 1,
                "num_turns": 1,
                "result": text[:200],
                "session_id": SESSION,
                "total_cost_usd": 0.0,
                "usage": {"input_tokens": 3, "output_tokens": n},
                "terminal_reason": "completed",
                "uuid": str(uuid.uuid4()),
            }
        )
    )


def _prompt(message: dict[str, object]) -> str:
    inner = message.get("message")
    content = inner.get("content") if isinstance(inner, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def main() -> int:
    turn = 0
    for raw in sys.stdin.buffer:
        if not raw.strip():
            continue
        try:
            message = json.loads(raw)
        except ValueError:
            sys.stderr.write("bench emitter: stdin line is not JSON\n")
            return 1
        if isinstance(message, dict) and message.get("type") == "user":
            turn += 1
            _turn(_prompt(message), turn)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)
