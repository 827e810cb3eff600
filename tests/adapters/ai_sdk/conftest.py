"""Helpers for the AI SDK adapter's tests: turns made from recorded CLI output, and the SDK's own client
code (``tests/js/client.mjs``, for ``ai`` 5, 6 and 7) run with ``node``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from tests.node import js_packages
from turnstile.adapters.ai_sdk.chunks import DONE, Chunk, sse_events
from turnstile.adapters.ai_sdk.mapping import TurnMapper
from turnstile.engine.fold import SessionFold
from turnstile.engine.log import AnyEntry, Entry, StreamEnded, TurnRequested, entry_from_frame

ROOT = Path(__file__).resolve().parents[3]
CLI_FIXTURES = ROOT / "tests" / "fixtures" / "cli-2.1.327"
RECORDINGS = ROOT / "engine" / "agents" / "recordings"
VERSIONS = (5, 6, 7)

#: Recorded turns, with (partial messages) and without: every one must map to chunks the SDK takes.
TURN_FILES = {
    "plain-text": CLI_FIXTURES / "plain-text.jsonl",
    "tool-turn": CLI_FIXTURES / "tool-turn.jsonl",
    "interrupted-turn": CLI_FIXTURES / "interrupted-turn.jsonl",
    "api-error-400": CLI_FIXTURES / "api-error-400.jsonl",
    "tool-use-no-partials": RECORDINGS
    / "jackey8616__roma__test__fixtures__claude-stream__tool-use-turn.jsonl",
    "tool-use-partials": RECORDINGS
    / "jackey8616__roma__test__fixtures__claude-stream__tool-use-partial-messages.jsonl",
    "haiku-partials": RECORDINGS / "foksa__open-claude-agent-sdk__tests__snapshots__streaming-haiku.jsonl",
}


def turn_entries(path: Path, turn_id: str = "t1") -> list[Entry]:
    """The first turn of a recorded CLI transcript as the runtime logs it: ``turn.requested``, the CLI's
    lines up to its first ``result``, and the ``stream.ended`` the fold calls for (outcome, reason, timing)."""
    fold = SessionFold("s")
    entries: list[Entry] = [TurnRequested(seq=1, ts=1000.0, stream=turn_id, prompt="recorded prompt")]
    fold.apply(entries[0])
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        seq = len(entries) + 1
        made = entry_from_frame(line, seq=seq, ts=1000.0 + seq / 100, stream=turn_id)
        assert made is not None
        entry, view = made
        entries.append(entry)
        fold.apply(entry, view)
        if fold.unended():
            break
    (stream,) = fold.unended()
    seq = len(entries) + 1
    entries.append(
        StreamEnded(
            seq=seq,
            ts=1000.0 + seq / 100,
            stream=turn_id,
            outcome=stream.outcome or "failed",
            reason=stream.reason,
            timing=stream.timing,
        )
    )
    return entries


def map_turn(entries: list[Entry] | list[AnyEntry], turn_id: str = "t1") -> list[tuple[int, list[Chunk]]]:
    """Each entry's seq and the chunks it maps to."""
    mapper = TurnMapper(turn_id)
    return [(e.seq, mapper.feed(e)) for e in entries]


def sse_body(mapped: list[tuple[int, list[Chunk]]]) -> str:
    """The SSE body Turnstile sends for these chunks."""
    return (b"".join(sse_events(chunks, seq) for seq, chunks in mapped) + DONE).decode()


def as_json(chunk: Chunk) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(msgspec.json.encode(chunk))
    return data


# --- the SDK's client code ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def js() -> Path:
    """``tests/js`` with its packages installed."""
    return js_packages()


async def run_js(js_dir: Path, job: dict[str, Any], *, limit_s: float = 90.0) -> dict[str, Any]:
    """Run one job of ``client.mjs`` (see its header) and return its JSON result; fail on its errors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_OPTIONS")}
    with trio.fail_after(limit_s):
        done = await trio.run_process(
            ["node", str(js_dir / "client.mjs"), json.dumps(job)],
            cwd=js_dir,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
    stderr = done.stderr.decode(errors="replace")
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"client.mjs printed no result (exit {done.returncode}); stderr:\n{stderr}"
        ) from None
    assert result.get("ok"), f"client.mjs failed: {result.get('error')}\nstderr:\n{stderr}"
    return result


def assert_all_valid(body: dict[str, Any]) -> None:
    """Every chunk of a response passed the SDK's own schema, and the response ended with ``[DONE]``."""
    assert body["invalid"] == [], f"chunks the SDK rejects: {body['invalid']}"
    assert body["done"], "the response did not end with data: [DONE]"
    ids = body["ids"]
    assert ids == sorted(set(ids)), f"id: lines must be strictly increasing log seqs, got {ids}"
