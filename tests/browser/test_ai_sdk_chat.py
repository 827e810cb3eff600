"""The AI SDK chat page (``docs/examples/ai-sdk-chat/``: the SDK's framework-free ``AbstractChat``,
bundled here with esbuild for ``ai`` 5, 6 and 7) in Chromium against a real ``turnstile serve``: send a
prompt, watch the answer stream in, reload mid-turn and see it resume into the same bubble."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import REPO, Server
from tests.node import js_packages

pytestmark = pytest.mark.slow

LONG = 60_000  # ms
EXAMPLE = REPO / "docs" / "examples" / "ai-sdk-chat"
WORDS = " ".join(f"word{n}" for n in range(1, 41))
# At --sim-speed 0.1: 40 deltas 120 ms apart, ~5 s of answer to reload in the middle of.
SLOW_PROMPT = f'tell me [[sim say="{WORDS}" tokens=40 token_ms=1200 ttft_ms=0]]'


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Path]]:
    js = js_packages()
    out = tmp_path_factory.mktemp("ai-sdk-bundles")
    made: dict[int, Path] = {}
    for version in (5, 6, 7):
        target = out / f"chat{version}.js"
        subprocess.run(
            ["node", str(js / "bundle.mjs"), str(EXAMPLE / "chat.js"), str(target), str(version)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        made[version] = target
    yield made


def open_page(page: Page, server: Server, bundle: Path, chat: str) -> None:
    """The example page, as if the server served it at /demo/ (same origin as the API)."""

    def serve(route: Route) -> None:
        if route.request.url.split("#")[0].endswith("/chat.bundle.js"):
            route.fulfill(body=bundle.read_bytes(), content_type="text/javascript")
        else:
            route.fulfill(body=(EXAMPLE / "index.html").read_bytes(), content_type="text/html")

    page.route(f"{server.url}/demo/**", serve)
    page.goto(f"{server.url}/demo/index.html#{chat}")


def assistant_text(page: Page) -> str:
    texts: list[str] = page.locator(".message[data-role=assistant] .text").all_text_contents()
    return " ".join(texts)


@pytest.mark.parametrize("version", [5, 6, 7])
def test_send_stream_reload_mid_turn_and_resume(
    server_factory: Any, page_factory: Any, bundles: dict[int, Path], version: int
) -> None:
    server: Server = server_factory(sim_speed=0.1)
    page: Page = page_factory()
    chat = f"browser-{version}"
    stream_url = f"{server.url}/v1/chat/{chat}/stream"
    with page.expect_response(stream_url, timeout=LONG) as resumed:
        open_page(page, server, bundles[version], chat)  # a new chat: nothing to resume
    assert resumed.value.status == 204
    expect(page.locator("#status")).to_have_text("ready", timeout=LONG)

    # Send a prompt; the answer streams in (visible while the status is "streaming").
    page.locator("#prompt").fill(SLOW_PROMPT)
    page.locator("#send").click()
    expect(page.locator(".message[data-role=user]")).to_have_text(SLOW_PROMPT, timeout=LONG)
    page.wait_for_function(
        "() => (document.querySelector('.message[data-role=assistant] .text')?.textContent || '')"
        ".split(' ').length >= 5",
        timeout=LONG,
    )
    partial = assistant_text(page)
    assert page.locator("#status").text_content() == "streaming"
    assert WORDS.startswith(partial) and partial != WORDS

    # Reload mid-turn: the history shows the partial answer, and the page resumes it to the end.
    with page.expect_response(stream_url, timeout=LONG) as resumed:
        page.reload()
    assert resumed.value.status == 200  # a running turn to resume
    expect(page.locator(".message[data-role=assistant] .text")).to_have_text(WORDS, timeout=LONG)
    expect(page.locator("#status")).to_have_text("ready", timeout=LONG)
    expect(page.locator(".message[data-role=assistant]")).to_have_count(1)  # replaced, not duplicated
    expect(page.locator(".message[data-role=user]")).to_have_count(1)
    expect(page.locator(".timing")).to_contain_text("completed")

    # Once more after the end: the whole chat from the log, nothing to resume.
    with page.expect_response(stream_url, timeout=LONG) as resumed:
        page.reload()
    assert resumed.value.status == 204
    expect(page.locator(".message[data-role=assistant] .text")).to_have_text(WORDS, timeout=LONG)
    expect(page.locator("#status")).to_have_text("ready", timeout=LONG)
    expect(page.locator(".message[data-role=assistant]")).to_have_count(1)
    assert page.watch.errors == [] and page.watch.server_errors() == []
    assert page.locator("#error").is_hidden()
