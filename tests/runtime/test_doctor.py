"""``turnstile doctor``'s probe (:func:`engine.runtime.doctor.check_agent`), offline against its own fake API.

The real CLI 2.1.327 has every capability Turnstile relies on; stand-ins show each way a CLI can fall short —
the simulator posing as ``claude`` (no ``get_context_usage``, and it never calls the model API, so the
``--resume`` and ``can_use_tool`` probes cannot conclude), the simulator ignoring interrupts, a CLI that
dies at once, one that never answers, and none at all. Every probe process is gone afterwards (the
runtime tests' leftover guard), also when the probe is cut short by its deadline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

from tests.realcli import claude_binary_or_skip, cli_version
from turnstile.adapters.commands import doctor as command
from turnstile.engine.agents.capabilities import CAPABILITIES, AgentReport, judge
from turnstile.engine.runtime import AgentConfig
from turnstile.engine.runtime.doctor import check_agent
from turnstile.engine.runtime.probe_api import SLOW, TOOL, ProbeAPI

ROOT = Path(__file__).resolve().parents[2]


def fake_cli(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def sim_as_claude(tmp_path: Path, *flags: str) -> str:
    """The simulator behind a `claude`-like executable (it accepts the CLI's flags); realistic pacing, so the
    doctor's slow turn is still running when it sends the interrupt."""
    return fake_cli(
        tmp_path,
        "sim-claude",
        f'PYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" -m turnstile.engine.agents.sim '
        f'--speed 1 {" ".join(flags)} "$@"',
    )


def by_name(report: AgentReport) -> dict[str, tuple[bool | None, str]]:
    return {c.name: (c.ok, c.evidence) for c in report.capabilities}


@pytest.mark.realcli
@pytest.mark.slow
async def test_the_bundled_cli_has_every_capability() -> None:
    binary = claude_binary_or_skip()
    report = await check_agent(AgentConfig(agent="claude", binary=binary, allowed_tools=("Bash",)))
    assert report.state == "ok", report.missing()
    assert report.version == cli_version(binary).split()[0] and report.source == "flag"
    assert [c.name for c in report.capabilities] == [c.name for c in CAPABILITIES[:1]] + [
        "initialize",
        "partial_messages",
        "interrupt",
        "resume",
        "can_use_tool",
        "get_context_usage",
    ]
    found = by_name(report)
    assert "honoured the deny" in found["can_use_tool"][1]
    assert "sent the first turn back" in found["resume"][1]
    assert "still_queued" in found["interrupt"][1]
    assert report.summary.endswith("every capability Turnstile relies on")


async def test_a_cli_without_get_context_usage_is_degraded_and_says_what_turnstile_does(
    tmp_path: Path,
) -> None:
    report = await check_agent(AgentConfig(agent="claude", binary=sim_as_claude(tmp_path)))
    found = by_name(report)
    assert report.state == "degraded" and report.version == "sim-0.1"
    assert found["stream_json"][0] is True and found["partial_messages"][0] is True
    assert found["initialize"][0] is True and found["interrupt"][0] is True
    assert found["get_context_usage"] == (
        False,
        "error: Unsupported control request subtype: get_context_usage",
    )
    # The simulator answers by itself: what needs the model API cannot be concluded, and the report says so.
    assert found["resume"] == (None, "not checked: the resumed process never called the model API")
    assert found["can_use_tool"] == (None, "not checked: the CLI never called the model API")
    missing = {c.name: c.without for c in report.missing()}
    assert set(missing) == {"get_context_usage", "resume", "can_use_tool"}
    assert "primed with `initialize` only" in (missing["get_context_usage"] or "")
    assert "degraded — without" in report.summary and "get_context_usage" in report.summary


async def test_an_ignored_interrupt_is_reported_with_the_escalation(tmp_path: Path) -> None:
    report = await check_agent(
        AgentConfig(agent="claude", binary=sim_as_claude(tmp_path, "--ignore-interrupt"))
    )
    ok, evidence = by_name(report)["interrupt"]
    assert ok is False and "no `control_response` within 5 s" in evidence
    assert "SIGTERM" in next(c.without or "" for c in report.capabilities if c.name == "interrupt")


async def test_a_cli_that_dies_at_once_is_unusable_with_its_stderr(tmp_path: Path) -> None:
    binary = fake_cli(tmp_path, "claude", "echo \"error: unknown option '--input-format'\" >&2; exit 1")
    report = await check_agent(AgentConfig(agent="claude", binary=binary))
    ok, evidence = by_name(report)["stream_json"]
    assert report.state == "unusable" and ok is False
    assert "exited with status 1" in evidence and "unknown option '--input-format'" in evidence
    assert report.version is None


async def test_a_cli_that_never_answers_is_cut_off_at_the_deadline_and_killed(tmp_path: Path) -> None:
    binary = fake_cli(
        tmp_path,
        "claude",
        'if [ "$1" = --version ]; then echo "0.0.1 (Claude Code)"; exit 0; fi\nexec sleep 600',
    )
    with trio.fail_after(30):
        report = await check_agent(AgentConfig(agent="claude", binary=binary), timeout_s=2.0)
    assert report.state == "unusable" and report.version == "0.0.1"
    assert report.problems == ["the probe did not finish within 2 s"]
    assert all(c.ok is None for c in report.capabilities), report.capabilities
    # (the leftover guard of tests/runtime checks that both `sleep` processes were killed)


async def test_no_cli_at_all_is_not_found(tmp_path: Path) -> None:
    report = await check_agent(AgentConfig(agent="claude", binary=str(tmp_path / "nope")))
    assert report.state == "not_found" and report.capabilities == []
    assert "not an executable file" in report.summary


def test_judge_needs_every_required_capability() -> None:
    from turnstile.engine.agents.capabilities import check

    every = [check(c.name, True, "seen") for c in CAPABILITIES]
    assert judge(every) == "ok"
    assert judge([*every[1:], check("stream_json", None, "not checked")]) == "unusable"
    assert judge([*every[:-1], check("get_context_usage", False, "error")]) == "degraded"
    assert all(c.without for c in CAPABILITIES) and sum(c.required for c in CAPABILITIES) == 1


async def test_the_probe_api_picks_replies_from_the_request(nursery: trio.Nursery) -> None:
    import httpx

    api = ProbeAPI(tool_command="touch x", slow_words=3, slow_delay_s=0)
    await nursery.start(api.serve)
    async with httpx.AsyncClient(base_url=api.base_url) as client:

        async def ask(content: object, stream: bool = False) -> httpx.Response:
            body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": content}]}
            return await client.post("/v1/messages?beta=true", json=body, headers={"x-api-key": "k1"})

        plain = (await ask("hello")).json()
        assert plain["content"] == [{"type": "text", "text": "Turnstile probe: ok."}]
        tool = (await ask(f"{TOOL} go")).json()
        assert tool["stop_reason"] == "tool_use" and tool["content"][0]["input"] == {"command": "touch x"}
        after = (await ask([{"type": "tool_result", "tool_use_id": "t", "content": "denied"}])).json()
        assert after["content"][0]["text"] == "Noted."
        streamed = (await ask(f"{SLOW} talk", stream=True)).text
        assert streamed.count('"text_delta"') == 3 and streamed.rstrip().endswith('{"type": "message_stop"}')
        assert (await client.get("/v1/other")).status_code == 404
        count = await client.post("/v1/messages/count_tokens", json={"messages": []})
        assert count.json()["input_tokens"] >= 1
    assert [key for key, _ in api.requests] == ["k1"] * 4


# --- the command ----------------------------------------------------------------------------------------


def _args(binary: str, **kw: object) -> object:
    import argparse

    return argparse.Namespace(claude_bin=binary, model=None, timeout=60.0, json=kw.get("json", False))


def test_command_prints_each_capability_and_exits_by_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TURNSTILE_AGENT", raising=False)
    assert command.run(_args(sim_as_claude(tmp_path))) == 0  # degraded still runs
    out = capsys.readouterr().out
    assert "✔ stream-json in and out" in out and "✘ `get_context_usage` control request" in out
    assert "without it: the CLI answers with an error" in out
    assert out.rstrip().splitlines()[-2].startswith("verdict: degraded")
    broken = fake_cli(tmp_path, "broken", "exit 1")
    assert command.run(_args(broken)) == 1
    assert "verdict: unusable" in capsys.readouterr().out
    assert command.run(_args(str(tmp_path / "missing"))) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("turnstile doctor: Claude Code CLI not found")
    assert command.run(_args(sim_as_claude(tmp_path), json=True)) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "degraded" and len(data["capabilities"]) == len(CAPABILITIES)
