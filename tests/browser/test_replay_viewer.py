"""The replay viewer (/replay) in Chromium against a real server: a recorded log from tests/fixtures opened
(from a file input, and dropped on the page), scrubbed to a tool call, shows ``tool_running`` highlighted in
the turn's state diagram — the state the engine's fold computed — with the transition just taken, and the
entries there; a live session opened from the server plays to its end at 100 times real time."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, save_screenshot
from tests.browser.test_console import LONG

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
TURNSTILE_LOG = FIXTURES / "turnstile__tool-use-two-turns.ndjson"
RAW_TRANSCRIPT = FIXTURES / "jackey8616__roma__test__fixtures__claude-stream__tool-use-partial-messages.jsonl"


def current(page: Page, diagram: str) -> list[str]:
    """The states drawn as current in a diagram (exactly one is expected)."""
    states: list[str] = page.locator(f"[data-testid={diagram}] [data-current=true]").evaluate_all(
        "els => els.map(e => e.dataset.state)"
    )
    return states


def tool_changes(path: Path) -> list[dict[str, Any]]:
    """The call_tool changes `turnstile replay --json --trace` finds in a file (the expected answers)."""
    from turnstile.adapters.commands.replay import replay_text

    report = json.loads(replay_text(path, as_json=True, trace=True))
    return [c for c in report["changes"] if c["dest"] == "tool_running"]


def drop_file(page: Page, path: Path) -> None:
    """Drop ``path`` on the page as a person would drag it from a file manager."""
    page.evaluate(
        """([name, text]) => {
            const data = new DataTransfer();
            data.items.add(new File([text], name, { type: "application/x-ndjson" }));
            document.body.dispatchEvent(new DragEvent("dragenter", { dataTransfer: data, bubbles: true }));
            document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }""",
        [path.name, path.read_text()],
    )


def test_a_recorded_log_scrubbed_to_a_tool_call_shows_tool_running(
    server_factory: Any, page_factory: Any, artifacts_dir: Path
) -> None:
    server: Server = server_factory(pool_size=0)
    page = page_factory(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server.url}/replay")
    expect(page.get_by_test_id("replay-empty")).to_be_visible()
    page.get_by_test_id("replay-file").set_input_files(str(TURNSTILE_LOG))
    expect(page.get_by_test_id("replay-name")).to_have_text(TURNSTILE_LOG.name)
    expect(page.get_by_test_id("replay-facts")).to_contain_text("Turnstile log")
    expect(page.get_by_test_id("turn-row")).to_have_count(2)
    expect(page.get_by_test_id("summary-row")).to_have_count(2)

    # Opened at its end: both turns completed, the session as the fold left it.
    expect(page.get_by_test_id("stream-now")).to_have_text("completed")
    assert current(page, "stream-diagram") == ["completed"]

    # Scrub to t1's second tool call: click its phase in the waterfall.
    calls = [c for c in tool_changes(TURNSTILE_LOG) if c["id"] == "t1"]
    assert len(calls) == 2
    tools = page.locator("[data-testid=phase][data-state=tool_running][data-stream=t1]")
    expect(tools).to_have_count(2)
    second = page.evaluate(f"window.turnstileReplay.model.index.get({calls[1]['seq']})")
    tools.and_(page.locator(f"[data-index='{second}']")).click()
    body = page.get_by_test_id("replay-body")
    expect(body).to_have_attribute("data-cursor-seq", str(calls[1]["seq"]))
    assert current(page, "stream-diagram") == ["tool_running"]
    expect(page.get_by_test_id("stream-now")).to_have_text("tool_running")
    expect(page.get_by_test_id("stream-id")).to_have_text("t1")
    expect(page.get_by_test_id("stream-caption")).to_contain_text(
        f"{calls[1]['source']} → tool_running on call_tool"
    )
    expect(page.locator("[data-testid=stream-diagram] [data-testid=taken-label]")).to_have_text("call_tool")
    expect(page.locator("[data-testid=stream-diagram] .edge-group.taken")).to_have_count(1)
    assert current(page, "session-diagram") == ["busy"]
    entry = page.locator("[data-testid=entry][data-current=true]")
    expect(entry).to_have_attribute("data-seq", str(calls[1]["seq"]))
    expect(entry).to_contain_text("tool_use Bash")
    save_screenshot(page, "replay.png", artifacts_dir, full_page=True)

    # One entry back: before the call, the turn was thinking.
    page.keyboard.press("ArrowLeft")
    expect(body).to_have_attribute("data-cursor-seq", str(calls[1]["seq"] - 1))
    assert current(page, "stream-diagram") == [calls[1]["source"]]
    # The scrubber itself, to the first call.
    index = page.evaluate(f"window.turnstileReplay.model.index.get({calls[0]['seq']})")
    page.get_by_test_id("scrubber").fill(str(index))
    expect(body).to_have_attribute("data-cursor-seq", str(calls[0]["seq"]))
    assert current(page, "stream-diagram") == ["tool_running"]
    page.keyboard.press("Home")  # (the scrubber has focus: it moves itself)
    expect(body).to_have_attribute("data-cursor-seq", "1")
    assert not page.watch.errors, page.watch.errors


def test_a_dropped_raw_transcript_is_replayed_too(server_factory: Any, page_factory: Any) -> None:
    server: Server = server_factory(pool_size=0)
    page = page_factory(viewport={"width": 1280, "height": 900})
    page.goto(f"{server.url}/replay")
    drop_file(page, RAW_TRANSCRIPT)
    expect(page.get_by_test_id("replay-facts")).to_contain_text("CLI transcript")
    expect(page.get_by_test_id("turn-row")).to_have_count(1)
    (call,) = tool_changes(RAW_TRANSCRIPT)
    page.locator("[data-testid=phase][data-state=tool_running]").click()
    expect(page.get_by_test_id("replay-body")).to_have_attribute("data-cursor-seq", str(call["seq"]))
    assert current(page, "stream-diagram") == ["tool_running"]
    expect(page.get_by_test_id("clock")).to_contain_text("+")  # the recorder's times, not entry numbers

    # Not a log at all: said plainly, and the replay shown before stays.
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["just some notes\\n"], "notes.txt", { type: "text/plain" }));
            document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }"""
    )
    expect(page.get_by_test_id("replay-error")).to_contain_text(
        "neither a Turnstile log nor a CLI transcript"
    )
    expect(page.get_by_test_id("turn-row")).to_have_count(1)
    assert not page.watch.errors, page.watch.errors


def test_a_live_session_opened_from_the_server_plays_to_its_end(
    server_factory: Any, page_factory: Any
) -> None:
    server: Server = server_factory(pool_size=1)
    status, body = server.request("POST", "/v1/sessions", {})
    sid = json.loads(body)["id"]
    prompts = [
        "Run the tests [[sim thinking=2 tools=3 tool_s=0.2 text=20 ttft_ms=30 token_ms=5]]",
        "Now flaky ones only [[sim api_error=529 retries=2 ttft_ms=20]]",
    ]
    for prompt in prompts:
        status, body = server.request("POST", f"/v1/sessions/{sid}/turns", {"prompt": prompt})
        assert status == 202, body
    tid = json.loads(body)["turn_id"]
    page = page_factory(viewport={"width": 1280, "height": 900})
    # The log must hold both turns before the viewer reads it: poll for the second one's end.
    deadline = time.monotonic() + LONG / 1000
    while not server.get_json(f"/v1/sessions/{sid}/turns/{tid}")["ended"]:
        assert time.monotonic() < deadline, "the second turn did not end"
        page.wait_for_timeout(100)

    page.goto(f"{server.url}/replay#{sid}")
    expect(page.get_by_test_id("replay-name")).to_have_text(sid)
    expect(page.get_by_test_id("turn-row")).to_have_count(2)
    expect(page.locator("[data-testid=replay-session] option", has_text=sid)).to_have_count(1)
    expect(page.locator("[data-testid=turn-row][data-stream=t2] [data-testid=retry-mark]")).to_have_count(2)
    expect(page.locator("[data-testid=phase][data-stream=t1][data-state=tool_running]")).to_have_count(3)

    page.get_by_test_id("speed-100").click()
    page.keyboard.press("Home")
    expect(page.get_by_test_id("replay-body")).to_have_attribute("data-cursor-seq", "1")
    page.get_by_test_id("play").click()
    last = len(server.log(sid))
    expect(page.get_by_test_id("replay-body")).to_have_attribute("data-cursor-seq", str(last), timeout=LONG)
    expect(page.get_by_test_id("play")).to_have_attribute("aria-label", "Play")  # stopped at the end
    assert current(page, "stream-diagram") == ["failed"]
    expect(page.get_by_test_id("clock")).to_contain_text(re.compile(rf"\({last}/{last}\)"))
    assert not page.watch.errors, page.watch.errors
