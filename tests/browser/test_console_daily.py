"""The console as a daily driver, in Debian's Chromium against a real ``turnstile serve``: answers rendered
as markdown that nothing injected can make run, a session list the server keeps current (no polling),
rename / stop / delete, the New session options with a directory picker that stays in the workspace, the
keyboard, and a phone-sized screen. Each test leaves pictures in ``$TURNSTILE_ARTIFACTS/screens`` (and, with
``TURNSTILE_DOCS_SCREENSHOT=1``, in ``docs/``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, save_screenshot
from tests.browser.test_console import LONG, ConsolePage, log_texts, texts, turn_id

pytestmark = pytest.mark.slow


def sim_say(text: str, **options: Any) -> str:
    """A ``[[sim say="..."]]`` directive: the simulated agent answers exactly ``text``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    extra = " ".join(f"{k}={v}" for k, v in options.items())
    return f'[[sim say="{escaped}" {extra}]]'


CODE = 'def fold(entries):\n    return [e for e in entries if e.kind != "cli"]'

# A prompt-injected answer: markdown a person should see, and four ways to run script that must not.
ANSWER = f"""## Plan

The log is the only input: **state is a fold over it**, so a replay gives the same states.

| file | what it does |
|---|---|
| `engine/fold.py` | entries in, machine states out |
| `adapters/http.py` | the HTTP API and the SSE streams |

1. Read the session's log
2. Fold it through the machines
3. Compare with the golden trace

```python
{CODE}
```

<script>window.__pwned = "script"</script>

<img src=x onerror="window.__pwned = 'onerror'">

See <a href="javascript:window.__pwned='href'">this javascript: link</a>, [another one](javascript:window.__pwned='md')
and [the docs](https://example.com/docs).

<div onmouseover="window.__pwned='hover'">hover me</div>

![tracking pixel](http://127.0.0.1:9/pixel.png?secret=1)
"""

# Counted inside a turn's rendered answer: anything that could run or fetch.
DANGER = """
(turn) => {
  const body = turn.querySelector('[data-testid=turn-body]');
  const all = [...body.querySelectorAll('*')];
  return {
    scripts: body.querySelectorAll('script, iframe, object, embed, form').length,
    images: body.querySelectorAll('img, picture, source, video, audio').length,
    handlers: all.flatMap(el => [...el.attributes].filter(a => a.name.startsWith('on')).map(a => a.name)),
    badUrls: all.flatMap(el => ['href', 'src', 'xlink:href', 'action', 'formaction']
      .map(n => el.getAttribute(n)).filter(v => v && /^\\s*(javascript|data|vbscript):/i.test(v))),
    styles: all.filter(el => el.hasAttribute('style')).length,
  };
}
"""


def check_nothing_ran(page: Page, turn: Any, dialogs: list[str], requests: list[str]) -> None:
    found = turn.evaluate(DANGER)
    assert found == {"scripts": 0, "images": 0, "handlers": [], "badUrls": [], "styles": 0}, found
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    assert not [url for url in requests if "pixel.png" in url], "the page fetched a URL the answer chose"


def test_markdown_answers_render_and_injected_code_never_runs(
    server_factory: Any, page_factory: Any, artifacts_dir: Path
) -> None:
    server: Server = server_factory(pool_size=1)
    page = page_factory(
        viewport={"width": 1280, "height": 980}, permissions=["clipboard-read", "clipboard-write"]
    )
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    ui = ConsolePage(page, server.url).open()
    sid = ui.new_session()
    prompt = "How does replay work? " + sim_say(ANSWER, tools=1, tool_s=0.2, ttft_ms=20, token_ms=2)
    turn = ui.send(prompt)
    expect(turn.get_by_test_id("turn-prompt")).to_have_text("How does replay work?")
    expect(turn.get_by_test_id("sim-directives")).to_be_visible()
    ui.wait_outcome(turn, "completed")

    answer = turn.get_by_test_id("text-block")
    expect(answer.locator("h2")).to_have_text("Plan")
    expect(answer.locator("strong")).to_have_text("state is a fold over it")
    expect(answer.locator("table tbody tr")).to_have_count(2)
    expect(answer.locator("table td code").first).to_have_text("engine/fold.py")
    expect(answer.locator("ol > li")).to_have_count(3)
    code = answer.get_by_test_id("code-block")
    expect(code.locator(".code-lang")).to_have_text("python")
    expect(code.locator("code.hljs .hljs-keyword").first).to_have_text("def")
    expect(code.locator("code")).to_have_text(CODE)
    docs = answer.get_by_role("link", name="the docs")
    expect(docs).to_have_attribute("href", "https://example.com/docs")
    expect(docs).to_have_attribute("target", "_blank")
    assert "noopener" in (docs.get_attribute("rel") or "")
    # The image is a link to it, never loaded.
    expect(answer.get_by_role("link", name="image: tracking pixel")).to_have_count(1)
    # What the model wrote, exactly: the rendered block keeps its source.
    assert texts(turn) == log_texts(server.log(sid), turn_id(turn))

    # Try every injected way in: hover, click both links (neither has an href any more).
    answer.get_by_text("hover me").hover()
    answer.get_by_text("this javascript: link").click()
    answer.get_by_text("another one").click()
    check_nothing_ran(page, turn, dialogs, requests)

    # Copy puts the code, as written, on the clipboard.
    code.get_by_test_id("copy-code").click()
    expect(code.get_by_test_id("copy-code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == CODE

    code.scroll_into_view_if_needed()
    save_screenshot(page, "console-markdown.png", artifacts_dir)

    # The same answer drawn from the log after a reload: just as inert.
    page.reload()
    turn = page.get_by_test_id("turn").first
    ui.wait_outcome(turn, "completed")
    expect(turn.get_by_test_id("text-block").locator("h2")).to_have_text("Plan")
    expect(turn.get_by_test_id("turn-prompt")).to_have_text("How does replay work?")
    check_nothing_ran(page, turn, dialogs, requests)
    assert not page.watch.errors, page.watch.errors


DEPLOY = """The deploy stopped at **migrate**: the `orders` table is locked by a long-running report.

- stop the report (pid 4121)
- run `make migrate` again

Shall I do both?"""

# Installed before a turn: every state the machine panel shows for the turn, and what it says when the
# turn's badge turns DONE.
WATCH_DONE = """
(turn) => {
  const badge = turn.querySelector('[data-testid=turn-badge]');
  const panel = document.querySelector('[data-testid=stream-machine]');
  window.__panel = [];
  const seen = () => {
    const state = panel.dataset.state;
    if (state && window.__panel[window.__panel.length - 1] !== state) window.__panel.push(state);
  };
  seen();
  new MutationObserver(seen).observe(panel, { attributes: true, childList: true, subtree: true });
  window.__atDone = null;
  const observer = new MutationObserver(() => {
    if (badge.dataset.state === 'DONE' && window.__atDone === null) {
      window.__atDone = {
        panel: document.querySelector('[data-testid=stream-machine]').dataset.state || null,
        card: turn.querySelector('[data-testid=turn-outcome]').textContent,
      };
    }
  });
  observer.observe(badge, { attributes: true });
}
"""


def test_the_session_list_follows_the_server_live(
    server_factory: Any, page_factory: Any, artifacts_dir: Path
) -> None:
    server: Server = server_factory(pool_size=1)
    page = page_factory(viewport={"width": 1280, "height": 860})
    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)))
    ui = ConsolePage(page, server.url).open()
    other = ConsolePage(page_factory(), server.url).open()  # another client, watching
    items = page.get_by_test_id("session-item")
    expect(page.get_by_test_id("no-sessions")).to_be_visible()

    # A session created elsewhere (the API) appears, its first prompt as its title, its turn live.
    status, body = server.request("POST", "/v1/sessions", {})
    assert status == 201
    first = json.loads(body)["id"]
    card = page.locator(f"[data-testid=session-item][data-session-id='{first}']")
    expect(card).to_have_count(1)
    prompt = "Summarize the nightly logs [[sim tools=1 tool_s=0.4 text=12 ttft_ms=20 token_ms=5]]"
    assert server.request("POST", f"/v1/sessions/{first}/turns", {"prompt": prompt})[0] == 202
    expect(card.get_by_test_id("session-name")).to_have_text("Summarize the nightly logs")
    expect(card.get_by_test_id("session-turns")).to_have_text("1 turn")
    expect(card.get_by_test_id("session-state")).to_have_text("idle", timeout=LONG)
    expect(card.get_by_test_id("session-cost")).to_contain_text("$")
    expect(card.get_by_test_id("session-activity")).not_to_have_text("no activity")

    # Rename it here; the other client sees the new title without reloading.
    card.click()
    expect(page.get_by_test_id("session-title")).to_have_text("Summarize the nightly logs")
    page.get_by_test_id("edit-title").click()
    page.get_by_test_id("title-input").fill("Nightly build triage")
    page.get_by_test_id("title-input").press("Enter")
    expect(page.get_by_test_id("session-title")).to_have_text("Nightly build triage")
    other_card = other.page.locator(f"[data-testid=session-item][data-session-id='{first}']")
    expect(other_card.get_by_test_id("session-name")).to_have_text("Nightly build triage")
    assert server.get_json(f"/v1/sessions/{first}")["title"] == "Nightly build triage"

    # A second session from this page. When its turn's card says DONE, the machine panel already says
    # the turn is over: one source of truth, no "responding" left behind.
    second = ui.new_session()
    ui.show_machines()
    turn = page.get_by_test_id("turn")
    page.get_by_test_id("prompt").fill(
        "Why did the deploy fail? "
        + sim_say(DEPLOY, thinking=2, tools=2, tool_s=0.2, ttft_ms=20, token_ms=10)
    )
    page.get_by_test_id("prompt").press("Enter")
    expect(turn).to_have_count(1)
    turn.first.evaluate(WATCH_DONE)
    ui.wait_outcome(turn.first, "completed")
    assert page.evaluate("window.__atDone") == {"panel": "completed", "card": "completed"}
    # The panel followed the turn live, from the server's fold: it saw the tools run and the answer come.
    shown = page.evaluate("window.__panel")
    assert {"tool_running", "responding"} <= set(shown) and shown[-1] == "completed", shown
    expect(items).to_have_count(2)
    expect(items.first).to_have_attribute("data-session-id", second)  # the most recently active first

    # A third, and the keyboard: Alt+Down / Alt+Up walk the list; the filter narrows it.
    status, body = server.request("POST", "/v1/sessions", {})
    third = json.loads(body)["id"]
    server.request(
        "POST", f"/v1/sessions/{third}/turns", {"prompt": "Draft the release notes [[sim text=20]]"}
    )
    expect(items).to_have_count(3)
    expect(page.locator(f"[data-session-id='{third}'] [data-testid=session-state]")).to_have_text(
        "idle", timeout=LONG
    )
    page.get_by_test_id("prompt").focus()
    page.keyboard.press("Alt+ArrowUp")
    expect(page.locator("[data-testid=session-item][aria-current=true]")).to_have_attribute(
        "data-session-id", third
    )
    page.keyboard.press("Alt+ArrowDown")
    expect(page.locator("[data-testid=session-item][aria-current=true]")).to_have_attribute(
        "data-session-id", second
    )
    page.keyboard.press("Alt+ArrowDown")
    expect(page.get_by_test_id("session-title")).to_have_text("Nightly build triage")
    page.get_by_test_id("session-filter").fill("nightly")
    expect(items).to_have_count(1)
    page.get_by_test_id("session-filter").fill("")
    expect(items).to_have_count(3)
    page.locator(f"[data-testid=session-item][data-session-id='{second}']").click()
    expect(page.get_by_test_id("turn")).to_have_count(1)
    save_screenshot(page, "console-sessions.png", artifacts_dir)

    # Stop: the state changes on both pages, and this one no longer takes prompts.
    page.get_by_test_id("stop-session").click()
    expect(page.get_by_test_id("session-state-chip")).to_have_text("stopped", timeout=LONG)
    expect(other.page.locator(f"[data-session-id='{second}'] [data-testid=session-state]")).to_have_text(
        "stopped"
    )
    expect(page.get_by_test_id("prompt")).to_be_disabled()

    # Delete asks twice, then the session is gone everywhere, log included.
    page.get_by_test_id("delete-session").click()
    expect(page.get_by_test_id("delete-session")).to_have_text("Delete for good?")
    expect(items).to_have_count(3)
    page.get_by_test_id("delete-session").click()
    expect(items).to_have_count(2)
    expect(other.page.get_by_test_id("session-item")).to_have_count(2)
    expect(page.get_by_test_id("session-head")).to_be_hidden()
    assert server.request("GET", f"/v1/sessions/{second}")[0] == 404
    assert not (server.data_dir / "sessions" / f"{second}.ndjson").exists()

    # None of this was polled: the list came from the live feed.
    polled = [
        url for method, url in requests if method == "GET" and url.split("?")[0].endswith("/v1/sessions")
    ]
    assert polled == [], polled
    assert not page.watch.errors and not other.page.watch.errors, (page.watch.errors, other.page.watch.errors)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "workspace"
    (ws / "turnstile" / "engine").mkdir(parents=True)
    (ws / "turnstile" / "docs").mkdir()
    (ws / "website").mkdir()
    (ws / "notes.md").write_text("a file, not a directory")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, ws / "escape")
    return ws


def test_new_session_options_stay_inside_the_workspace(
    server_factory: Any, page_factory: Any, workspace: Path, artifacts_dir: Path
) -> None:
    server: Server = server_factory(pool_size=0, args=("--workspace-root", str(workspace)))
    page = page_factory(viewport={"width": 1280, "height": 860})
    ui = ConsolePage(page, server.url).open()
    page.get_by_test_id("new-session").click()
    dialog = page.get_by_test_id("new-session-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_test_id("ns-root")).to_have_text(str(workspace.resolve()))
    # Permission mode waits for tool approvals: shown, disabled, and saying why.
    expect(dialog.get_by_test_id("ns-permission")).to_be_disabled()
    expect(dialog.get_by_test_id("ns-permission-note")).to_be_visible()

    dialog.get_by_test_id("ns-browse").click()
    entries = dialog.get_by_test_id("dir-entry")
    expect(entries).to_have_text(["turnstile/", "website/"])  # no file, no link out of the workspace
    entries.filter(has_text="turnstile/").click()
    expect(dialog.get_by_test_id("dir-current")).to_have_text(f"{workspace.resolve()}/turnstile")
    expect(entries).to_have_text(["docs/", "engine/"])
    dialog.get_by_test_id("ns-model").fill("claude-sonnet-test")
    save_screenshot(page, "console-new-session.png", artifacts_dir)
    entries.filter(has_text="engine/").click()
    expect(dialog.get_by_text("no directories here")).to_be_visible()
    dialog.get_by_test_id("dir-up").click()
    expect(entries).to_have_count(2)
    entries.filter(has_text="engine/").click()
    dialog.get_by_test_id("dir-choose").click()
    expect(dialog.get_by_test_id("ns-cwd")).to_have_value("turnstile/engine")
    dialog.get_by_test_id("ns-create").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_test_id("session-meta")).to_contain_text("turnstile/engine")
    sid = page.evaluate("decodeURIComponent(location.hash.slice(1))")
    agent = server.get_json(f"/v1/sessions/{sid}")["agent"]
    assert agent["cwd"] == str((workspace / "turnstile" / "engine").resolve())
    assert agent["model"] == "claude-sonnet-test"

    # The agent really runs there.
    turn = ui.send("Where am I? [[sim text=4]]")
    ui.wait_outcome(turn, "completed")
    inits = [e for e in server.log(sid) if e.get("type") == "system" and e["msg"].get("subtype") == "init"]
    assert inits and inits[0]["msg"]["cwd"] == agent["cwd"]

    # The dialog remembers the last choice; a directory outside the workspace is refused with the reason.
    page.get_by_test_id("new-session").click()
    expect(dialog.get_by_test_id("ns-cwd")).to_have_value("turnstile/engine")
    expect(dialog.get_by_test_id("ns-model")).to_have_value("claude-sonnet-test")
    for outside in ["../outside", "escape"]:
        dialog.get_by_test_id("ns-cwd").fill(outside)
        dialog.get_by_test_id("ns-create").click()
        expect(dialog.get_by_test_id("ns-error")).to_contain_text("outside the workspace root")
        expect(dialog).to_be_visible()
    dialog.get_by_test_id("ns-cancel").click()
    assert len(server.get_json("/v1/sessions")["sessions"]) == 1
    assert not page.watch.errors, page.watch.errors


def test_a_phone_sized_screen_with_the_session_drawer(
    server_factory: Any, page_factory: Any, artifacts_dir: Path
) -> None:
    server: Server = server_factory(pool_size=1)
    for prompt in ["Check the flaky test", "Bump the dependencies"]:
        _, body = server.request("POST", "/v1/sessions", {})
        sid = json.loads(body)["id"]
        server.request(
            "POST", f"/v1/sessions/{sid}/turns", {"prompt": f"{prompt} [[sim text=6 ttft_ms=10 token_ms=5]]"}
        )
    page = page_factory(viewport={"width": 390, "height": 844})
    ui = ConsolePage(page, server.url).open()
    sidebar = page.get_by_test_id("sidebar")
    expect(sidebar).to_be_hidden()  # a drawer on a phone
    page.get_by_test_id("sidebar-toggle").click()
    expect(sidebar).to_be_visible()
    expect(page.get_by_test_id("session-item")).to_have_count(2)
    page.get_by_test_id("session-item").filter(has_text="Check the flaky test").click()
    expect(sidebar).to_be_hidden()
    expect(page.get_by_test_id("session-title")).to_have_text("Check the flaky test")
    turn = ui.send(
        'Show the fix [[sim say="Change `sleep(1)` to an **event wait**:\n\n```python\nawait done.wait()\n```" ttft_ms=10 token_ms=5]]'
    )
    ui.wait_outcome(turn, "completed")
    expect(turn.get_by_test_id("code-block")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the screen"
    save_screenshot(page, "console-narrow.png", artifacts_dir)
    assert not page.watch.errors, page.watch.errors
