"""The web console in a real browser (Debian's Chromium via Playwright), against a real ``turnstile serve``.

These are the seed's failure modes — a page that said "Done, 388.4 s total, 37 tools" and stayed at
RECONNECTING — replayed on purpose: a long turn, a server killed mid-turn, a connection cut mid-stream,
interrupts (honoured and ignored), and a page opened while the pool is still warming. The agent is the
built-in simulator; its behaviour is set per turn by ``[[sim ...]]`` directives in the prompt.

Every wait is on DOM state (``expect``); the time bounds are generous except where the issue states one
(an honoured interrupt shows ``cancelled`` within 1 s), and those are measured inside the page.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import Server, save_screenshot
from turnstile.engine.agents.sim import parse_directives

pytestmark = pytest.mark.slow

LONG = 60_000  # ms: a bound for things that normally take a second or two, on a noisy 2-core machine


class ConsolePage:
    """The console as a user sees it, addressed by ``data-testid``."""

    def __init__(self, page: Page, base_url: str, token: str | None = None) -> None:
        self.page = page
        self.base_url = base_url
        self.token = token

    def open(self, session: str | None = None) -> ConsolePage:
        query = f"?token={self.token}" if self.token else ""
        self.page.goto(f"{self.base_url}/{query}" + (f"#{session}" if session else ""))
        expect(self.page.get_by_test_id("pool-state")).to_contain_text("pool ", timeout=LONG)
        return self

    def new_session(self) -> str:
        """New session with the dialog's defaults; returns its id."""
        before = self.page.evaluate("location.hash")
        self.page.get_by_test_id("new-session").click()
        self.page.get_by_test_id("ns-create").click()
        self.page.wait_for_function("(before) => location.hash && location.hash !== before", arg=before)
        sid: str = self.page.evaluate("decodeURIComponent(location.hash.slice(1))")
        expect(self.page.get_by_test_id("session-id")).to_have_text(sid)
        return sid

    def send(self, prompt: str) -> Locator:
        """Type ``prompt`` and press Enter; returns the new turn's element."""
        turns = self.page.get_by_test_id("turn")
        count = turns.count()
        box = self.page.get_by_test_id("prompt")
        box.fill(prompt)
        box.press("Enter")
        expect(turns).to_have_count(count + 1, timeout=LONG)
        turn = turns.nth(count)
        expect(turn.get_by_test_id("turn-prompt")).to_have_text(shown(prompt))
        return turn

    def wait_outcome(self, turn: Locator, outcome: str, timeout: float = LONG) -> None:
        expect(turn.get_by_test_id("turn-outcome")).to_have_text(outcome, timeout=timeout)
        expect(turn.get_by_test_id("turn-badge")).to_have_attribute("data-state", "DONE", timeout=timeout)

    def wait_text(self, turn: Locator, at_least: int) -> str:
        """Until the turn's rendered text has ``at_least`` characters; returns it."""
        turn.get_by_test_id("text-block").first.wait_for(timeout=LONG)
        handle = turn.element_handle()
        self.page.wait_for_function(
            "([el, n]) => [...el.querySelectorAll('[data-testid=text-block]')]"
            ".map(b => b.markdownSource).join('').length >= n",
            arg=[handle, at_least],
            timeout=LONG,
        )
        return "".join(texts(turn))

    def open_event_sources(self) -> list[int]:
        """readyState of every turn EventSource the page ever created (0 connecting, 1 open, 2 closed);
        the session list's own feed stays open by design and is not counted."""
        states: list[int] = self.page.evaluate(
            "window.__eventSources.filter(es => es.url.includes('/turns/')).map(es => es.readyState)"
        )
        return states

    def show_machines(self) -> None:
        toggle = self.page.get_by_test_id("machines-toggle")
        if toggle.get_attribute("aria-pressed") != "true":
            toggle.click()
        expect(self.page.get_by_test_id("machines")).to_be_visible()


def shown(prompt: str) -> str:
    """A prompt as its bubble shows it: without the simulator's ``[[sim ...]]`` directives (removed as the
    simulator itself reads them)."""
    return re.sub(r"[ \t]+\n", "\n", parse_directives(prompt)[1]).strip()


def texts(turn: Locator) -> list[str]:
    """The turn's text blocks as the model wrote them (the markdown source each block renders)."""
    found: list[str] = turn.get_by_test_id("text-block").evaluate_all("els => els.map(e => e.markdownSource)")
    return found


def badge_history(turn: Locator) -> list[str]:
    return (turn.get_by_test_id("turn-badge").get_attribute("data-history") or "").split(",")


def log_texts(entries: list[dict[str, Any]], tid: str) -> list[str]:
    """The turn's text blocks as the log has them: its ``text_delta``s, per content block, in seq order."""
    blocks: dict[tuple[str, int], str] = {}
    message = ""
    for e in entries:
        if e.get("stream") != tid or e["kind"] != "cli" or e["type"] != "stream_event":
            continue
        event = e["msg"]["event"]
        if event["type"] == "message_start":
            message = event["message"]["id"]
        elif event["type"] == "content_block_start" and event["content_block"]["type"] == "text":
            blocks[(message, event["index"])] = ""
        elif event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
            blocks[(message, event["index"])] += event["delta"]["text"]
    return list(blocks.values())


def next_states(machines: dict[str, Any], kind: str, state: str) -> list[str]:
    """The states ``kind`` can go to from ``state``, from GET /v1/machines (what the page must show)."""
    out: list[str] = []
    for t in machines[kind]["transitions"]:
        if state in t["source"] and t["dest"] not in ("=", state) and t["dest"] not in out:
            out.append(t["dest"])
    return out


def turn_id(turn: Locator) -> str:
    tid = turn.get_attribute("data-turn-id")
    assert tid
    return tid


# Installed before an interrupt: resolves with the outcome and the milliseconds from the user's action
# (the first `trigger` event: pointerdown or keydown) to the outcome appearing in the DOM, on the page's
# own clock — so the Playwright round trips do not count.
MEASURE_INTERRUPT = """
([turn, trigger, limitMs]) => {
  const outcome = turn.querySelector('[data-testid=turn-outcome]');
  let t0 = null;
  window.addEventListener(trigger, () => { if (t0 === null) t0 = performance.now(); }, { capture: true });
  window.__interruptTiming = new Promise((resolve) => {
    const check = () => {
      if (outcome.textContent && t0 !== null) {
        observer.disconnect();
        resolve({ outcome: outcome.textContent, ms: performance.now() - t0 });
      }
    };
    const observer = new MutationObserver(check);
    observer.observe(outcome, { childList: true, characterData: true, subtree: true });
    setTimeout(() => resolve({ outcome: outcome.textContent, ms: null }), limitMs);
  });
}
"""


def measure_interrupt(page: Page, turn: Locator, trigger: str, action: Any, limit_s: float) -> dict[str, Any]:
    page.evaluate(MEASURE_INTERRUPT, [turn.element_handle(), trigger, int(limit_s * 1000)])
    action()
    result: dict[str, Any] = page.evaluate("window.__interruptTiming")
    return result


# --- 1 -------------------------------------------------------------------------------------------------


def test_long_turn_with_37_tools_ends_done_and_stays_done(
    server_factory: Any, page_factory: Any, artifacts_dir: Path
) -> None:
    """The seed's bug: "Done, 388.4 s total, 37 tools" under a badge stuck at RECONNECTING. Here the
    terminal entry turns the badge DONE, the page closes its EventSource itself, and nothing reconnects."""
    server: Server = server_factory(pool_size=1)
    ui = ConsolePage(page_factory(viewport={"width": 1280, "height": 900}), server.url).open()
    sid = ui.new_session()
    first = ui.send("What is in this repo? [[sim tools=2 tool_s=0.3 ttft_ms=20 token_ms=10 text=14]]")
    ui.wait_outcome(first, "completed")
    expect(first.get_by_test_id("timing-tools")).to_have_text("2 tools")

    turn = ui.send("Now tidy it up [[sim tools=37 tool_s=0.05 ttft_ms=20 token_ms=5 thinking=3 text=24]]")
    expect(turn.get_by_test_id("turn-badge")).to_have_attribute("data-state", re.compile("LIVE|DONE"))
    ui.wait_outcome(turn, "completed")

    expect(turn.get_by_test_id("timing-tools")).to_have_text("37 tools")
    expect(turn.get_by_test_id("timing-total")).to_contain_text("total")
    expect(turn.get_by_test_id("timing")).to_contain_text("Done")
    expect(turn.get_by_test_id("tool")).to_have_count(37)
    expect(turn.locator("[data-testid=tool][data-status=ok]")).to_have_count(37)
    expect(turn.get_by_test_id("thinking")).to_have_count(1)
    expect(turn.get_by_test_id("tool-group-summary")).to_have_text("37 tool calls · 37 ok")
    expect(turn.get_by_test_id("tool-name").first).to_have_text("Bash")
    expect(turn.get_by_test_id("tool-duration").first).to_contain_text("ms")
    tid = turn_id(turn)
    assert server.get_json(f"/v1/sessions/{sid}/turns/{tid}")["timing"]["tool_calls"] == 37

    # DONE, and it stays DONE: wait past the server's retry hint (1 s) and EventSource's own reconnect.
    page = ui.page
    page.wait_for_timeout(2500)
    history = badge_history(turn)
    assert history[-1] == "DONE" and history.count("DONE") == 1, history
    assert "RECONNECTING" not in history, history
    assert ui.open_event_sources() and all(s == 2 for s in ui.open_event_sources())
    expect(page.get_by_test_id("badge")).to_have_text("DONE")
    assert turn.get_attribute("data-duplicates") is None
    assert texts(turn) == log_texts(server.log(sid), tid)

    # The machines (behind their toggle): the session's state and where it can go next, as GET
    # /v1/machines has them.
    ui.show_machines()
    machines = server.get_json("/v1/machines")
    state = server.get_json(f"/v1/sessions/{sid}")["state"]
    session_machine = page.get_by_test_id("session-machine")
    expect(session_machine.get_by_test_id("machine-state")).to_have_text(state, timeout=LONG)
    expected_next = next_states(machines, "session", state)
    expect(session_machine.get_by_test_id("machine-next")).to_have_text(expected_next)
    stream_machine = page.get_by_test_id("stream-machine")
    expect(stream_machine.get_by_test_id("machine-state")).to_have_text("completed")
    expect(stream_machine.get_by_test_id("machine-next")).to_have_count(0)
    assert not page.watch.errors, page.watch.errors

    # The first picture in docs/console.md (TURNSTILE_DOCS_SCREENSHOT=1): two turns, a tool call opened, the
    # 37 tool calls folded, the answers and the timings.
    first.get_by_test_id("tool").first.locator("summary").click()
    page.get_by_test_id("transcript").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    save_screenshot(page, "console.png", artifacts_dir)


# --- 2 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("front", ["direct", "gateway"])
def test_server_killed_mid_turn_and_restarted(
    server_factory: Any, page_factory: Any, proxy_factory: Any, front: str
) -> None:
    """SIGKILL the server mid-turn, restart it on the same port and data directory: the page (never
    reloaded) reconnects on its own, shows the turn failed (server restarted), and a new turn works.

    ``direct``: while the server is down the browser's connections are refused, which EventSource keeps
    retrying by itself. ``gateway``: the page talks through a reverse proxy that answers 502 while the
    server is down — EventSource gives up for good on that, so the page must retry on its own."""
    server: Server = server_factory(pool_size=1)
    proxy = proxy_factory(server.port, bad_gateway=True) if front == "gateway" else None
    ui = ConsolePage(page_factory(), proxy.url if proxy else server.url).open()
    page = ui.page
    page.evaluate("window.__notReloaded = true")
    ui.new_session()

    turn = ui.send("Write a long answer [[sim text=800 token_ms=25 ttft_ms=20]]")
    ui.wait_text(turn, 40)
    expect(turn.get_by_test_id("turn-badge")).to_have_attribute("data-state", "LIVE")

    server.kill()
    expect(turn.get_by_test_id("turn-badge")).to_have_attribute("data-state", "RECONNECTING", timeout=LONG)
    expect(page.get_by_test_id("pool-state")).to_contain_text("unreachable", timeout=LONG)
    if proxy is not None:
        # Down long enough for the stream itself to get a 502 (EventSource's reconnect or our probe).
        deadline = time.monotonic() + 30
        while not any(s == 502 and "/events" in url for s, url in page.watch.responses):
            assert time.monotonic() < deadline, (
                "the page never asked for the stream while the server was down"
            )
            page.wait_for_timeout(100)
    else:
        page.wait_for_timeout(1500)  # let the native reconnect fail at least once (connection refused)
    server.start()

    ui.wait_outcome(turn, "failed")
    expect(turn.get_by_test_id("turn-reason")).to_contain_text("server restarted")
    expect(turn.get_by_test_id("turn-badge")).to_have_attribute("data-state", "DONE")
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
    assert turn.get_attribute("data-duplicates") is None
    expect(page.get_by_test_id("pool-state")).not_to_contain_text("unreachable", timeout=LONG)
    # The session is shown for what it is, live (no reload): not a red "crashed" but a restart.
    expect(page.get_by_test_id("session-state-chip")).to_have_text("restarted", timeout=LONG)
    expect(page.get_by_test_id("restart-note")).to_contain_text("next turn resumes the conversation")
    expect(page.get_by_test_id("session-item").get_by_test_id("session-state")).to_have_text("restarted")

    second = ui.send("And now? [[sim text=6 ttft_ms=10 token_ms=5]]")
    ui.wait_outcome(second, "completed")
    expect(page.get_by_test_id("restart-note")).to_be_hidden()
    expect(page.get_by_test_id("session-state-chip")).to_have_text("idle", timeout=LONG)
    assert "".join(texts(second)).strip()
    page.wait_for_timeout(1200)
    assert all(s == 2 for s in ui.open_event_sources()), ui.open_event_sources()
    assert "RECONNECTING" not in badge_history(second)
    assert not page.watch.errors, page.watch.errors


# --- 3 -------------------------------------------------------------------------------------------------


def test_connection_cut_mid_stream_resumes_without_gap_or_duplicate(
    server_factory: Any, page_factory: Any, proxy_factory: Any
) -> None:
    """Every connection between the page and the server is cut mid-stream (by a proxy the page talks
    through): EventSource resumes with Last-Event-ID and the rendered text equals the log's, exactly."""
    server: Server = server_factory(pool_size=1)
    proxy = proxy_factory(server.port)
    ui = ConsolePage(page_factory(), proxy.url).open()
    sid = ui.new_session()

    turn = ui.send("Stream for a while [[sim text=220 token_ms=20 ttft_ms=20]]")
    for at_least in (30, 300):  # cut twice, at two points of the answer
        before = ui.wait_text(turn, at_least)
        assert turn.get_by_test_id("turn-outcome").text_content() == "", "the turn ended before the cut"
        assert proxy.cut() >= 1
        page = ui.page
        page.wait_for_function(
            "(el) => el.dataset.history.split(',').includes('RECONNECTING')",
            arg=turn.get_by_test_id("turn-badge").element_handle(),
        )
        expect(turn.get_by_test_id("turn-badge")).to_have_attribute("data-state", "LIVE", timeout=LONG)
        assert len("".join(texts(turn))) >= len(before)

    ui.wait_outcome(turn, "completed")
    tid = turn_id(turn)
    expected = log_texts(server.log(sid), tid)
    assert texts(turn) == expected
    assert len("".join(expected)) > 300
    assert turn.get_attribute("data-duplicates") is None, "the page received an entry twice"
    resumes = [
        r for r in proxy.requests() if f"/turns/{tid}/events" in r and re.search(r"(?i)last-event-id: \d+", r)
    ]
    assert resumes, "no reconnect carried Last-Event-ID"
    history = badge_history(turn)
    assert history[-1] == "DONE" and history.count("DONE") == 1, history
    assert not ui.page.watch.errors, ui.page.watch.errors


# --- 4 -------------------------------------------------------------------------------------------------

GRACE_S = 1.5
KILL_AFTER_S = 1.0


def test_interrupt_honoured_and_ignored(server_factory: Any, page_factory: Any) -> None:
    """The interrupt button (and Esc) end the turn ``cancelled``: within 1 s when the agent honours the
    interrupt, and within the grace period plus kill time when it ignores it (the runtime escalates)."""
    server: Server = server_factory(
        pool_size=1,
        env={"TURNSTILE_INTERRUPT_GRACE_S": str(GRACE_S), "TURNSTILE_KILL_AFTER_S": str(KILL_AFTER_S)},
    )
    ui = ConsolePage(page_factory(), server.url).open()
    page = ui.page
    ui.new_session()

    # A well-behaved agent acknowledges at once: the whole path (click, POST, control_request on stdin,
    # the CLI's result, stream.ended, SSE, DOM) is a few tens of milliseconds on an idle machine. 1 s is
    # the bound; it is measured on the page's clock from the click to the outcome in the DOM.
    turn = ui.send("Talk slowly [[sim text=600 token_ms=25 ttft_ms=20]]")
    ui.wait_text(turn, 20)
    expect(page.get_by_test_id("interrupt")).to_be_enabled()
    button = page.get_by_test_id("interrupt")
    timing = measure_interrupt(page, turn, "pointerdown", button.click, 10)
    assert timing["outcome"] == "cancelled", timing
    print(f"honoured interrupt: cancelled on screen {timing['ms']:.0f} ms after the click")
    assert timing["ms"] is not None and timing["ms"] < 1000, timing
    ui.wait_outcome(turn, "cancelled")
    expect(turn.get_by_test_id("turn-error")).to_contain_text("Cancelled")
    expect(page.get_by_test_id("interrupt")).to_be_disabled()

    # An agent that ignores interrupts: SIGTERM to its process group after the grace period (SIGKILL
    # kill_after_s later if needed). Bound: grace + kill time + 3 s of slack for a noisy machine. Esc.
    turn = ui.send("Ignore me [[sim text=600 token_ms=25 ttft_ms=20 ignore_interrupt]]")
    ui.wait_text(turn, 20)
    page.get_by_test_id("prompt").click()  # focus in the page; Esc works from anywhere
    limit = GRACE_S + KILL_AFTER_S + 3.0
    timing = measure_interrupt(page, turn, "keydown", lambda: page.keyboard.press("Escape"), limit + 5)
    assert timing["outcome"] == "cancelled", timing
    print(f"ignored interrupt: cancelled on screen {timing['ms']:.0f} ms after Esc")
    assert timing["ms"] is not None and timing["ms"] < limit * 1000, timing
    assert timing["ms"] >= GRACE_S * 1000 * 0.9, f"the agent was meant to ignore the interrupt: {timing}"
    ui.wait_outcome(turn, "cancelled")
    expect(turn.get_by_test_id("note").filter(has_text="ignored the interrupt")).to_have_count(1)

    # And the session carries on.
    third = ui.send("Still there? [[sim text=4 ttft_ms=10 token_ms=5]]")
    ui.wait_outcome(third, "completed")
    assert not page.watch.errors, page.watch.errors


# --- 5 -------------------------------------------------------------------------------------------------


def test_page_opened_while_the_pool_warms(server_factory: Any, page_factory: Any) -> None:
    """A pool whose processes take 30 s to count as warm: the page opened the moment the port answers
    loads, shows the pool warming, and runs a turn at once on a cold process — no 503 anywhere."""
    server: Server = server_factory(start=False, pool_size=2, env={"TURNSTILE_POOL_READY_AFTER_S": "30"})
    server.start(wait=False)
    server.wait_healthy()
    page = page_factory()
    ui = ConsolePage(page, server.url).open()
    expect(page.get_by_test_id("pool-state")).to_contain_text("warming")

    started = time.monotonic()
    sid = ui.new_session()
    turn = ui.send("Quick one [[sim text=6 ttft_ms=10 token_ms=5]]")
    ui.wait_outcome(turn, "completed")
    elapsed = time.monotonic() - started
    assert elapsed < 20, f"the turn waited for the pool: {elapsed:.1f} s"
    expect(page.get_by_test_id("pool-state")).to_contain_text("warming")
    spawned = [e for e in server.log(sid) if e["kind"] == "process.spawned"]
    assert spawned and spawned[0]["warm"] is False, spawned

    assert not [r for r in page.watch.responses if r[0] == 503], page.watch.responses
    assert not page.watch.server_errors(), page.watch.server_errors()
    assert not page.watch.errors, page.watch.errors


# --- text without partial messages ---------------------------------------------------------------------


def test_text_without_partial_messages_comes_from_assistant_lines(
    server_factory: Any, page_factory: Any
) -> None:
    """With partial messages off the CLI sends only whole ``assistant`` lines; with them on it sends
    deltas *and* the whole lines. Either way each text is shown once, and equals the CLI's result."""
    server: Server = server_factory(pool_size=0)
    status, body = server.request("POST", "/v1/sessions", {"partial_messages": False})
    assert status == 201, body
    sid = json.loads(body)["id"]
    page = page_factory()
    ui = ConsolePage(page, server.url).open(session=sid)
    expect(page.get_by_test_id("session-id")).to_have_text(sid)

    turn = ui.send("No deltas please [[sim tools=1 tool_s=0.05 thinking=2 text=12 ttft_ms=10 token_ms=5]]")
    ui.wait_outcome(turn, "completed")
    entries = server.log(sid)
    tid = turn_id(turn)
    assert not [e for e in entries if e.get("type") == "stream_event"], "partial messages were on"
    result = next(e["msg"] for e in entries if e.get("stream") == tid and e.get("type") == "result")
    assert texts(turn) == [result["result"]]
    expect(turn.get_by_test_id("thinking")).to_have_count(1)
    expect(turn.locator("[data-testid=tool][data-status=ok]")).to_have_count(1)
    expect(turn.get_by_test_id("tool-result")).to_have_text("sim-tool-1")
    assert not page.watch.errors, page.watch.errors


# --- narrow screen, token, keyboard -------------------------------------------------------------------


def test_narrow_screen_with_token_and_keyboard(server_factory: Any, page_factory: Any) -> None:
    """On a phone-sized screen, with ``--token`` (the console opened once as ``/?token=``: the token then
    lives only in an HttpOnly cookie, not in the address bar or page script): Shift+Enter adds a line,
    Enter sends (creating a session), the turn renders, a turn started through the API is followed too,
    and nothing overflows sideways."""
    server: Server = server_factory(pool_size=1, token="s3cret")
    page = page_factory(viewport={"width": 390, "height": 844})
    ui = ConsolePage(page, server.url, token="s3cret").open()
    assert "s3cret" not in page.url, page.url
    assert "s3cret" not in page.evaluate("document.cookie"), "the token cookie must be HttpOnly"
    assert server.request("GET", "/v1/sessions")[0] == 200
    box = page.get_by_test_id("prompt")
    box.click()
    box.type("first line")
    box.press("Shift+Enter")
    box.type("second line [[sim text=8 ttft_ms=10 token_ms=5 tools=1 tool_s=0.05]]")
    expect(page.get_by_test_id("turn")).to_have_count(0)
    box.press("Enter")
    turn = page.get_by_test_id("turn").first
    expect(turn.get_by_test_id("turn-prompt")).to_have_text("first line\nsecond line")
    ui.wait_outcome(turn, "completed")
    expect(page.get_by_test_id("session-item")).to_have_count(1)
    expect(turn.get_by_test_id("timing-tools")).to_have_text("1 tool")

    # A turn started by someone else (here: the API) shows up and is followed to its end.
    sid = page.evaluate("decodeURIComponent(location.hash.slice(1))")
    status, _ = server.request("POST", f"/v1/sessions/{sid}/turns", {"prompt": "from the API [[sim text=5]]"})
    assert status == 202
    other = page.get_by_test_id("turn").nth(1)
    ui.wait_outcome(other, "completed")
    expect(other.get_by_test_id("turn-prompt")).to_have_text("from the API")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the screen"
    assert not [r for r in page.watch.responses if r[0] == 401], "a request went out without the token"
    assert not page.watch.errors, page.watch.errors


# --- the agent check -----------------------------------------------------------------------------------


def test_the_top_bar_says_what_the_agent_cli_lacks(
    server_factory: Any, page_factory: Any, tmp_path: Any
) -> None:
    """The server's agent check (``turnstile doctor`` at start) reaches the page: a stand-in ``claude`` (the
    simulator behind a script) lacks ``get_context_usage``, and the top bar says so, with what Turnstile does
    without it in the chip's title."""
    import sys

    from tests.browser.conftest import REPO

    claude = tmp_path / "claude"
    claude.write_text(
        f'#!/bin/sh\nPYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" '
        '-m turnstile.engine.agents.sim "$@"\n'
    )
    claude.chmod(0o755)
    server: Server = server_factory(pool_size=0, args=("--agent", "claude", "--claude-bin", str(claude)))
    page = page_factory()
    ConsolePage(page, server.url).open()
    chip = page.get_by_test_id("agent-state")
    expect(chip).to_have_attribute("data-state", "degraded", timeout=LONG)
    expect(chip).to_contain_text("agent degraded: without")
    expect(chip).to_contain_text("get_context_usage")
    assert "primed with `initialize` only" in (chip.get_attribute("title") or "")
    assert not page.watch.errors, page.watch.errors
