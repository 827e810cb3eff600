"""A running Turnstile driven by the AI SDK's own client code (``DefaultChatTransport`` and
``readUIMessageStream`` from ``ai`` 5, 6 and 7, in ``node``): the messages the SDK assembles, every chunk
through its schema, resume after a dropped connection, and one tool turn of the real Claude Code CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.adapters.ai_sdk.conftest import VERSIONS, assert_all_valid, run_js
from tests.adapters.conftest import Server, start_server
from tests.fakeapi import FakeModelAPI, Text, ToolUse
from tests.realcli import claude_binary_or_skip, offline_cli_env
from turnstile.adapters.config import ServerConfig
from turnstile.adapters.server import run_server
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig

pytestmark = pytest.mark.slow

SLOW = "[[sim tokens=40 token_ms=400 ttft_ms=0]]"  # ~1.6 s of text deltas at the server's --speed 0.1


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> Server:
    return await start_server(nursery, tmp_path, speed=0.1)


def job(server: Server, version: int, chat: str, **fields: Any) -> dict[str, Any]:
    return {"op": "send", "version": version, "api": f"{server.base}/v1/chat", "chatId": chat, **fields}


async def history(server: Server, chat: str) -> list[dict[str, Any]]:
    async with server.client() as c:
        r = await c.get(f"/v1/chat/{chat}/messages")
        assert r.status_code == 200
        messages: list[dict[str, Any]] = r.json()
        return messages


def part_types(message: dict[str, Any]) -> list[str]:
    return [p["type"] for p in message["parts"]]


@pytest.mark.parametrize("version", VERSIONS)
async def test_text_reasoning_and_a_tool(js: Path, server: Server, version: int) -> None:
    prompt = 'check [[sim thinking=3 tools=1 tool_s=0 say="All done here."]]'
    result = await run_js(js, job(server, version, "chat-t", text=prompt))
    (body,) = result["bodies"]
    assert body["status"] == 200 and body["method"] == "POST"
    assert_all_valid(body)
    first = result["first"]
    assert first["errors"] == []
    message = first["message"]
    assert message["id"] == "t1" and message["role"] == "assistant"
    assert part_types(message) == [
        "step-start",
        "reasoning",
        "dynamic-tool",
        "step-start",
        "text",
        "data-turnstile-timing",
    ]
    reasoning, tool, text = message["parts"][1], message["parts"][2], message["parts"][4]
    assert reasoning["text"].startswith("Considering check") and reasoning["state"] == "done"
    assert reasoning["providerMetadata"]["anthropic"]["signature"]
    assert tool["toolName"] == "Bash" and tool["state"] == "output-available"
    assert tool["input"]["command"].endswith("echo sim-tool-1") and tool["output"] == "sim-tool-1"
    assert text == {"type": "text", "text": "All done here.", "state": "done"}
    timing = message["parts"][5]["data"]
    assert timing["outcome"] == "completed" and timing["toolCalls"] == 1
    assert first["chunks"][-1] == {"type": "finish", "finishReason": "stop"}
    # A page load shows what the stream showed, and the prompt as the user's message.
    user, assistant = await history(server, "chat-t")
    assert assistant == message
    assert user["parts"] == [{"type": "text", "text": prompt}]


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_interrupted_turn(js: Path, server: Server, version: int) -> None:
    result = await run_js(js, job(server, version, "chat-i", text=f"talk {SLOW}", stopAfter=6))
    assert result["stop"] == {"status": 202, "body": {"chat_id": "chat-i", "interrupted": ["t1"]}}
    assert_all_valid(result["bodies"][0])
    first = result["first"]
    assert first["errors"] == []
    assert first["chunks"][-1]["type"] == "abort"
    assert "interrupt requested by client" in first["chunks"][-1]["reason"]
    message = first["message"]
    text = next(p for p in message["parts"] if p["type"] == "text")
    assert text["state"] == "done" and 0 < len(text["text"].split()) < 40  # cut short
    assert message["parts"][-1]["data"]["outcome"] == "cancelled"
    assert (await history(server, "chat-i"))[1] == message


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_api_error(js: Path, server: Server, version: int) -> None:
    result = await run_js(js, job(server, version, "chat-e", text="[[sim api_error=529 retries=2]]"))
    assert_all_valid(result["bodies"][0])
    first = result["first"]
    assert first["errors"] == ["API Error: 529 Overloaded"]  # the real reason, through the SDK's onError
    retries = [c for c in first["chunks"] if c["type"] == "data-turnstile-api-retry"]
    assert len(retries) == 2 and all(c["transient"] for c in retries)
    assert [p["type"] for p in first["message"]["parts"]] == [
        "data-turnstile-timing"
    ]  # transient: not stored
    assert first["message"]["parts"][0]["data"]["reason"] == "API Error: 529 Overloaded"


@pytest.mark.parametrize("version", VERSIONS)
async def test_resume_after_a_dropped_connection(js: Path, server: Server, version: int) -> None:
    result = await run_js(
        js, job(server, version, "chat-r", text=f"go {SLOW}", dropAfter=8, resume=True, listen=True)
    )
    first, resumed, listener = result["first"], result["resumed"], result["listener"]
    assert first["dropped"] and first["count"] >= 8  # chunks already on their way may still arrive
    assert first["message"]["parts"][-1]["type"] == "text"  # mid-answer when dropped
    post, get = result["bodies"]
    assert (post["method"], get["method"], get["status"]) == ("POST", "GET", 200)
    assert get["url"].endswith("/v1/chat/chat-r/stream")
    assert_all_valid(get)
    assert_all_valid(listener["body"])
    assert post["invalid"] == []
    # The resumed stream is the whole message again (same id: it replaces the partial bubble) ...
    assert resumed["chunks"][0] == {"type": "start", "messageId": "t1"}
    assert resumed["errors"] == [] and resumed["chunks"][-1]["type"] == "finish"
    # ... and assembles to exactly what an uninterrupted client got, and what a page load shows.
    assert resumed["message"] == listener["message"]
    assert resumed["message"]["parts"][1]["text"].count(" ") >= 39
    assert (await history(server, "chat-r"))[1] == resumed["message"]
    # After the end there is nothing to resume.
    after = await run_js(
        js, {"op": "resume", "version": version, "api": f"{server.base}/v1/chat", "chatId": "chat-r"}
    )
    assert after["status"] == 204


# --- the real Claude Code CLI ---------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeModelAPI]:
    with FakeModelAPI() as fake:
        yield fake


@pytest.mark.realcli
async def test_a_real_claude_code_tool_turn(
    js: Path, api: FakeModelAPI, nursery: trio.Nursery, tmp_path: Path
) -> None:
    binary = claude_binary_or_skip()
    workdir = tmp_path / "wd"
    workdir.mkdir()
    agent = AgentConfig(
        agent="claude",
        binary=binary,
        cwd=str(workdir),
        allowed_tools=("Bash",),
        env=offline_cli_env(api, tmp_path),
        inherit_env=False,
    )
    runtime = RuntimeConfig(data_dir=str(tmp_path / "data"), pool_size=1, default_agent=agent)
    ports = await nursery.start(run_server, ServerConfig(port=0, ws_port=-1), runtime)
    base = f"http://127.0.0.1:{ports.http}/v1/chat"
    seen: list[dict[str, Any]] = []
    for version in VERSIONS:
        api.push(
            ToolUse(input={"command": f"echo tool-ran-{version}"}, text_before="Running it."),
            Text(f"It said tool-ran-{version}."),
        )
        result = await run_js(
            js,
            {
                "op": "send",
                "version": version,
                "api": base,
                "chatId": "real",
                "text": "run it",
                "history": seen,
            },
            limit_s=120,
        )
        assert_all_valid(result["bodies"][0])
        first = result["first"]
        assert first["errors"] == [], first["chunks"]
        message = first["message"]
        assert part_types(message) == [
            "step-start",
            "text",
            "dynamic-tool",
            "step-start",
            "text",
            "data-turnstile-timing",
        ]
        tool = message["parts"][2]
        assert (tool["toolName"], tool["state"]) == ("Bash", "output-available")
        assert tool["input"] == {"command": f"echo tool-ran-{version}"}
        assert tool["output"] == f"tool-ran-{version}"  # the CLI really ran it
        assert message["parts"][4]["text"] == f"It said tool-ran-{version}."
        assert first["chunks"][-1] == {"type": "finish", "finishReason": "stop"}
        seen += [result["user"], message]
    assert len(api.message_requests()) == 2 * len(VERSIONS)
