"""The live compatibility matrix: every scenario against every CLI version in :mod:`tests.compat.versions`.

Each cell runs the real CLI offline against :mod:`tests.fakeapi` — through Turnstile's real runtime
(``open_runtime`` with ``AgentConfig(agent="claude", binary=…)``) for the *turnstile* scenarios, through a
direct subprocess for the *protocol* ones (tool approvals: issue 17 will bring them into Turnstile), and
through ``turnstile doctor``'s probe for ``doctor``. A scenario collects checks and facts instead of stopping
at the first assert, and its :class:`Cell` (✔/✘ and what was seen) must equal the committed one in
``tests/compat/results.json`` — the source of docs/compatibility.md. So a CLI that changes behaviour fails
here until the matrix is regenerated with ``TURNSTILE_UPDATE_COMPAT=1`` and every new ✘ is explained in
:mod:`tests.compat.notes`. Facts never include timings: they must read the same on every run.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.compat.conftest import OBSERVED, UPDATE
from tests.compat.matrix import SCENARIO_IDS, Cell, load_results
from tests.compat.versions import MatrixVersion, locate, matrix_versions
from tests.fakeapi import ApiError, FakeModelAPI, Hang, Text, Thinking, ToolUse
from tests.realcli import CliProcess, cli_version, offline_cli_env
from turnstile.engine.log import (
    AnyEntry,
    CliLine,
    InterruptEscalated,
    ProcessExited,
    ProcessSpawned,
    StreamEnded,
    StreamStalled,
    Timeout,
    cli_bytes,
)
from turnstile.engine.runtime import AgentConfig, Runtime, RuntimeConfig, open_runtime
from turnstile.engine.runtime.doctor import check_agent
from turnstile.engine.runtime.priming import PRIME_REQUEST_PREFIX

pytestmark = [pytest.mark.realcli, pytest.mark.slow]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TURN_S = 60.0  # a deadline, not a measurement: a cli.js cold start on a loaded 2-core machine takes seconds
STALL_IDLE_S = 25.0  # stall timeout of the stall-with-pings scenario (the CLI relays a ping every ~10 s)


# --- checks and facts -------------------------------------------------------------------------------------


@dataclass
class Checks:
    """What a scenario expected and did not see, and the facts it recorded (both end up in the cell)."""

    failed: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failed.append(what)
        return ok

    def fact(self, text: str) -> None:
        self.facts.append(text)

    def cell(self) -> Cell:
        observed = "; ".join([*self.failed, *self.facts])
        return Cell("fail" if self.failed else "pass", _UUID.sub("<id>", observed))


@dataclass
class Ctx:
    version: str
    binary: str
    tmp: Path
    api: FakeModelAPI
    checks: Checks = field(default_factory=Checks)

    def agent(self, *, allowed_tools: tuple[str, ...] = ("Bash",)) -> AgentConfig:
        workdir = self.tmp / "wd"
        workdir.mkdir(exist_ok=True)
        return AgentConfig(
            agent="claude",
            binary=self.binary,
            cwd=str(workdir),
            allowed_tools=allowed_tools,
            env=offline_cli_env(self.api, self.tmp),
            inherit_env=False,
        )

    def config(self, **overrides: Any) -> RuntimeConfig:
        """A runtime over this CLI: a pool of one (a hot process, primed), or ``pool_size=0`` (one-shot: one
        process per turn, for scenarios of one turn, where a warm process would only cost CPU)."""
        base: dict[str, Any] = {
            "pool_size": 1,
            "close_grace_s": 2.0,
            "kill_after_s": 2.0,
            "interrupt_grace_s": 5.0,
            "default_agent": self.agent(),
        }
        base.update(overrides)
        return RuntimeConfig(**base)

    @asynccontextmanager
    async def runtime(self, **overrides: Any) -> AsyncIterator[Runtime]:
        async with open_runtime(self.config(**overrides)) as rt:
            yield rt


def messages(entries: list[AnyEntry]) -> list[dict[str, Any]]:
    """The CLI's lines among ``entries``, parsed."""
    return [json.loads(cli_bytes(e)) for e in entries if isinstance(e, CliLine)]


def kinds(entries: list[AnyEntry]) -> set[str]:
    return {
        f"{m['type']}/{m['subtype']}" if m["type"] == "system" else str(m["type"]) for m in messages(entries)
    }


def deltas(entries: list[AnyEntry], kind: str = "text_delta") -> int:
    return sum(
        1
        for m in messages(entries)
        if m["type"] == "stream_event"
        and m["event"].get("type") == "content_block_delta"
        and m["event"]["delta"].get("type") == kind
    )


def ended(entries: list[AnyEntry]) -> StreamEnded | None:
    last = entries[-1] if entries else None
    return last if isinstance(last, StreamEnded) else None


async def stream_entries(rt: Runtime, sid: str, stream: str) -> list[AnyEntry]:
    out: list[AnyEntry] = []
    async with rt.subscribe(sid, stream=stream) as sub:
        async for batch in sub:
            out.extend(r.entry for r in batch)
    return out


async def run_turn(rt: Runtime, sid: str, prompt: str) -> list[AnyEntry]:
    """Start a turn and collect its entries until its ``stream.ended``."""
    stream = await rt.start_turn(sid, prompt)
    with trio.fail_after(TURN_S):
        return await stream_entries(rt, sid, stream)


async def until_text_delta(rt: Runtime, sid: str, stream: str) -> None:
    """Return once the stream carries its first text delta (or has ended)."""
    with trio.fail_after(TURN_S):
        async with rt.subscribe(sid, stream=stream) as sub:
            async for batch in sub:
                if any(b"text_delta" in r.data for r in batch):
                    return


def whole_log(rt: Runtime, sid: str) -> list[AnyEntry]:
    return [r.entry for r in rt.session(sid).journal.read(0, 1_000_000)]


def outcome(c: Checks, entries: list[AnyEntry], want: str) -> StreamEnded | None:
    end = ended(entries)
    c.expect(end is not None, "the stream has no terminal entry")
    if end is not None:
        c.expect(end.outcome == want, f"the turn ended `{end.outcome}` ({end.reason[:80]}), not `{want}`")
    return end


# --- scenarios through Turnstile's runtime ----------------------------------------------------------------


async def plain(x: Ctx) -> None:
    x.api.push(Text("Hello from the fake model, in four pieces.", chunks=4))
    async with x.runtime(pool_size=0) as rt:
        sid = (await rt.create_session()).id
        entries = await run_turn(rt, sid, "say hello")
        outcome(x.checks, entries, "completed")
        x.checks.expect(deltas(entries) >= 2, "no text deltas (partial messages)")
        x.checks.expect(
            any(
                m["type"] == "result" and m.get("result") == "Hello from the fake model, in four pieces."
                for m in messages(entries)
            ),
            "the result does not carry the answer",
        )
        x.checks.fact("`system/status` lines: " + ("yes" if "system/status" in kinds(entries) else "none"))


async def tool(x: Ctx) -> None:
    x.api.push(ToolUse(input={"command": "echo tool-ran"}), Text("The tool said tool-ran."))
    async with x.runtime(pool_size=0) as rt:
        sid = (await rt.create_session()).id
        entries = await run_turn(rt, sid, "run a tool")
        end = outcome(x.checks, entries, "completed")
        x.checks.expect(
            end is not None and end.timing is not None and end.timing.tool_calls == 1, "not 1 tool call"
        )
        results = [
            b
            for m in messages(entries)
            if m["type"] == "user"
            for b in m["message"]["content"]
            if isinstance(b, dict)
        ]
        x.checks.expect(any("tool-ran" in json.dumps(b.get("content")) for b in results), "no tool output")
        sent = x.api.message_requests()
        x.checks.expect(
            len(sent) == 2 and sent[1].last_user_blocks()[0].get("type") == "tool_result",
            "the tool result never reached the model",
        )


async def tools(x: Ctx) -> None:
    x.api.push(
        ToolUse(input={"command": "echo one"}),
        ToolUse(input={"command": "echo two"}),
        ToolUse(input={"command": "echo three"}),
        Text("All three ran."),
    )
    async with x.runtime(pool_size=0) as rt:
        sid = (await rt.create_session()).id
        entries = await run_turn(rt, sid, "run three tools")
        end = outcome(x.checks, entries, "completed")
        calls = end.timing.tool_calls if end is not None and end.timing is not None else None
        x.checks.expect(calls == 3, f"{calls} tool calls counted, not 3")
        text = json.dumps(messages(entries))
        x.checks.expect(all(w in text for w in ("one", "two", "three")), "a tool's output is missing")


async def thinking(x: Ctx) -> None:
    x.api.push(Thinking("Let me think about this.", then=Text("Thought it through.", chunks=2), chunks=3))
    async with x.runtime(pool_size=0) as rt:
        sid = (await rt.create_session()).id
        entries = await run_turn(rt, sid, "think first")
        outcome(x.checks, entries, "completed")
        blocks = [
            b
            for m in messages(entries)
            if m["type"] == "assistant"
            for b in m["message"]["content"]
            if b.get("type") == "thinking"
        ]
        x.checks.expect(
            any(b.get("thinking") == "Let me think about this." for b in blocks), "no thinking block"
        )
        x.checks.expect(deltas(entries, "thinking_delta") >= 1, "no thinking deltas")
        x.checks.fact(
            "`system/thinking_tokens` lines: "
            + ("yes" if "system/thinking_tokens" in kinds(entries) else "none")
        )


async def _interrupted(x: Ctx, rt: Runtime, sid: str) -> list[AnyEntry]:
    x.api.push(Text("word " * 100, chunks=100, token_delay=0.05))
    stream = await rt.start_turn(sid, "talk slowly")
    await until_text_delta(rt, sid, stream)
    await rt.interrupt(sid, stream)
    with trio.fail_after(TURN_S):
        return await stream_entries(rt, sid, stream)


async def interrupt(x: Ctx) -> None:
    async with x.runtime(pool_size=0) as rt:
        sid = (await rt.create_session()).id
        entries = await _interrupted(x, rt, sid)
        outcome(x.checks, entries, "cancelled")
        x.checks.expect(
            not any(isinstance(e, InterruptEscalated) for e in entries), "the interrupt had to be escalated"
        )
        acks = [
            m
            for m in messages(whole_log(rt, sid))
            if m["type"] == "control_response"
            and not m["response"]["request_id"].startswith(PRIME_REQUEST_PREFIX)
        ]
        x.checks.expect(
            len(acks) == 1 and acks[0]["response"]["subtype"] == "success", "no success control_response"
        )
        if acks:
            payload = acks[0]["response"].get("response")
            x.checks.fact(f"ack: {'no payload' if payload is None else json.dumps(payload)}")
        result = next((m for m in messages(entries) if m["type"] == "result"), {})
        x.checks.fact(
            f"result `{result.get('subtype')}`, is_error {json.dumps(result.get('is_error'))}, "
            f"terminal_reason {json.dumps(result.get('terminal_reason'))}"
        )
        x.checks.fact(
            "aborted assistant line: "
            + ("yes" if any(m.get("aborted") for m in messages(entries)) else "none")
        )


async def interrupt_next(x: Ctx) -> None:
    async with x.runtime() as rt:
        sid = (await rt.create_session()).id
        await _interrupted(x, rt, sid)
        pid = rt.session(sid).pid
        x.api.push(Text("After the interrupt."))
        entries = await run_turn(rt, sid, "next")
        outcome(x.checks, entries, "completed")
        x.checks.expect(rt.session(sid).pid == pid, "the next turn ran on a new process")
        x.checks.expect(
            any(
                m["type"] == "result" and m.get("result") == "After the interrupt." for m in messages(entries)
            ),
            "the next turn's answer is not in its result",
        )


async def api_400(x: Ctx) -> None:
    x.api.default = ApiError(400, "fake invalid request")
    async with x.runtime() as rt:
        sid = (await rt.create_session()).id
        entries = await run_turn(rt, sid, "cause a 400")
        end = outcome(x.checks, entries, "failed")
        x.checks.expect(end is not None and "400" in end.reason, "the reason does not name the 400")
        x.checks.fact(f"{len(x.api.message_requests())} request(s) before the CLI gave up")
        result = next((m for m in messages(entries) if m["type"] == "result"), {})
        status = result.get("api_error_status", "absent")
        x.checks.fact(f"result `api_error_status`: {status if status == 'absent' else json.dumps(status)}")
        x.api.default = Text("Fine now.")
        entries = await run_turn(rt, sid, "and now?")
        outcome(x.checks, entries, "completed")


async def api_500_retried(x: Ctx) -> None:
    x.api.push(ApiError(500, "fake overload"), Text("Recovered."))
    async with x.runtime(pool_size=0) as rt:
        sid = (await rt.create_session()).id
        entries = await run_turn(rt, sid, "retry please")
        outcome(x.checks, entries, "completed")
        x.checks.expect(
            len(x.api.message_requests()) == 2, f"{len(x.api.message_requests())} requests, not 2"
        )
        retries = [m for m in messages(entries) if m.get("subtype") == "api_retry"]
        x.checks.fact(
            "announced by `system/api_retry` (error_status " + str(retries[0].get("error_status")) + ")"
            if retries
            else "retried silently (no `system/api_retry` line)"
        )


async def stall_silent(x: Ctx) -> None:
    x.api.push(Hang(), Text("Back again."))
    async with x.runtime(idle_timeout_s=5.0) as rt:
        sid = (await rt.create_session()).id
        entries = await run_turn(rt, sid, "stall")
        end = outcome(x.checks, entries, "timed_out")
        x.checks.expect(
            [e.which for e in entries if isinstance(e, Timeout)] == ["idle"], "not the idle timeout"
        )
        after = [m for m in messages(entries)][-1:] if end is not None else []
        x.checks.fact(
            "during the stall the CLI printed nothing after "
            + (
                f"`{after[0]['type']}`"
                + (f" `{after[0]['event']['type']}`" if after[0]["type"] == "stream_event" else "")
                if after
                else "nothing"
            )
        )
        entries = await run_turn(rt, sid, "are you back?")
        outcome(x.checks, entries, "completed")
        spawned = [e for e in whole_log(rt, sid) if isinstance(e, ProcessSpawned)]
        x.checks.expect(len(spawned) == 2 and spawned[1].resume is not None, "the next turn did not resume")


async def stall_pings(x: Ctx) -> None:
    """A model API that stalls but keeps the stream alive with pings (as the real API does): the CLI may
    relay them as `stream_event` `ping` lines. Progress means content, not keep-alives: Turnstile says
    `stream.stalled`, then ends the turn `timed_out` ("no progress for N s") after ``stall_timeout_s``.

    The idle timeout (any line) is left long, so only the stall rule can end the turn.
    """
    x.api.push(Hang(ping_every_s=1.0))
    async with x.runtime(
        pool_size=0, idle_timeout_s=600.0, stall_notice_s=STALL_IDLE_S / 3, stall_timeout_s=STALL_IDLE_S
    ) as rt:
        sid = (await rt.create_session()).id
        stream = await rt.start_turn(sid, "stall, with pings")
        with trio.fail_after(TURN_S + 3 * STALL_IDLE_S):
            entries = await stream_entries(rt, sid, stream)
        pings = sum(
            1
            for e in entries
            if isinstance(e, CliLine) and b'"type":"ping"' in cli_bytes(e).replace(b" ", b"")
        )
        end = outcome(x.checks, entries, "timed_out")
        x.checks.expect(
            end is not None and "no progress" in end.reason, f"not a stall: {end.reason if end else None!r}"
        )
        x.checks.expect(
            any(isinstance(e, StreamStalled) for e in entries), "no `stream.stalled` before the timeout"
        )
        x.checks.fact(
            "detected; the CLI relayed keep-alive `ping` lines meanwhile (the count varies with timing)"
            if pings
            else "detected; no keep-alive lines reached Turnstile"
        )


async def killed(x: Ctx) -> None:
    x.api.push(Text("first"), Text("word " * 100, chunks=100, token_delay=0.05), Text("resumed"))
    async with x.runtime() as rt:
        sid = (await rt.create_session()).id
        await run_turn(rt, sid, "first")
        stream = await rt.start_turn(sid, "talk slowly")
        await until_text_delta(rt, sid, stream)
        pid = rt.session(sid).pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        with trio.fail_after(TURN_S):
            entries = await stream_entries(rt, sid, stream)
        end = outcome(x.checks, entries, "failed")
        x.checks.expect(
            end is not None and end.exit_status == -signal.SIGKILL, "the exit status is not SIGKILL"
        )
        entries = await run_turn(rt, sid, "still there?")
        outcome(x.checks, entries, "completed")
        spawned = [e for e in whole_log(rt, sid) if isinstance(e, ProcessSpawned)]
        x.checks.expect(
            spawned[-1].resume == rt.session(sid).fold.cli_session_id, "the new process did not --resume"
        )


async def persisted(x: Ctx, cli_session: str, text: str) -> None:
    """Wait until the CLI has written ``text`` into its transcript of ``cli_session`` (``~/.claude/projects``).

    CLI 2.1.327 and later write a turn before printing its ``result``; 2.1.220 and 2.1.74 write it up to
    ~150 ms after (docs/compatibility.md): a crash in that window loses the last answer, or the whole
    conversation. The ``resume`` scenario crashes the CLI *between* turns, once the turn is on disk.
    """
    with trio.fail_after(TURN_S):
        while True:
            files = list((x.tmp / "home" / ".claude" / "projects").glob(f"*/{cli_session}.jsonl"))
            if files and text in files[0].read_text(errors="replace"):
                return
            await trio.sleep(0.02)


async def resume(x: Ctx) -> None:
    word = f"papaya-{x.version}"
    x.api.push(Text("Noted, the word is remembered."), Text("You said it."))
    async with x.runtime() as rt:
        sid = (await rt.create_session()).id
        entries = await run_turn(rt, sid, f"Remember the word {word}.")
        outcome(x.checks, entries, "completed")
        pid = rt.session(sid).pid
        assert pid is not None
        await persisted(x, str(rt.session(sid).fold.cli_session_id), "Noted, the word is remembered.")
        os.killpg(pid, signal.SIGKILL)  # a crash between turns
        with trio.fail_after(TURN_S):
            while not any(isinstance(e, ProcessExited) and e.pid == pid for e in whole_log(rt, sid)):  # noqa: ASYNC110
                await trio.sleep(0.05)  # the log is polled for the exit entry, as test_pool polls its state
        entries = await run_turn(rt, sid, "Which word?")
        outcome(x.checks, entries, "completed")
        spawned = [e for e in whole_log(rt, sid) if isinstance(e, ProcessSpawned)]
        x.checks.expect(
            len(spawned) == 2 and spawned[1].resume is not None,
            "the new process was not started with --resume",
        )
        last = x.api.message_requests()[-1]
        x.checks.expect(word in json.dumps(last.messages), "the resumed model request lacks the first turn")


async def warm_pool(x: Ctx) -> None:
    x.api.push(Text("Primed and ready."))
    async with x.runtime() as rt:
        with trio.fail_after(TURN_S):
            while rt.readiness().pool.ready < 1:  # noqa: ASYNC110  (the pool's state is polled, as in test_pool)
                await trio.sleep(0.05)
        sid = (await rt.create_session()).id
        entries = await run_turn(rt, sid, "hello")
        outcome(x.checks, entries, "completed")
        log = whole_log(rt, sid)
        spawned = next((e for e in log if isinstance(e, ProcessSpawned)), None)
        x.checks.expect(spawned is not None and spawned.warm, "the session did not get the warm process")
        answers = {
            m["response"]["request_id"].removeprefix(PRIME_REQUEST_PREFIX): m["response"]["subtype"]
            for m in messages(log)
            if m["type"] == "control_response"
        }
        x.checks.expect(set(answers) == {"initialize", "context"}, f"priming answers: {sorted(answers)}")
        x.checks.fact(f"initialize: {answers.get('initialize')}, get_context_usage: {answers.get('context')}")


async def approval_turnstile(x: Ctx) -> None:
    raise NotImplementedError  # never called: pending issue 17 (see PENDING)


# --- scenarios at the protocol level (a direct subprocess: Turnstile has no approvals yet) ----------------


def _approval(x: Ctx, behavior: str) -> None:
    c = x.checks
    workdir = x.tmp / "approval-wd"
    workdir.mkdir()
    x.api.push(ToolUse(input={"command": "touch approved.txt && echo made"}), Text("Done."))
    extra = ("--permission-prompt-tool", "stdio", "--permission-mode", "default")
    with CliProcess(
        x.binary, offline_cli_env(x.api, x.tmp), workdir, allowed_tools=(), extra_args=extra
    ) as cli:
        cli.send_user("Create approved.txt.")
        ask = cli.wait_for(lambda m: m["type"] in ("control_request", "result"), TURN_S)
        if not c.expect(
            ask["type"] == "control_request" and ask["request"].get("subtype") == "can_use_tool",
            "no `can_use_tool` request",
        ):
            c.fact(
                "the tool "
                + ("ran" if (workdir / "approved.txt").exists() else "did not run")
                + " without asking"
            )
            return
        request = ask["request"]
        c.fact("request keys: " + ", ".join(sorted(request)))
        if behavior == "allow":
            answer = {"behavior": "allow", "updatedInput": request["input"]}
        else:
            answer = {"behavior": "deny", "message": "Denied by the compatibility matrix."}
        line = {
            "type": "control_response",
            "response": {"subtype": "success", "request_id": ask["request_id"], "response": answer},
        }
        cli.write((json.dumps(line) + "\n").encode())
        result = cli.wait_result(TURN_S)
        c.expect(not result.get("is_error"), f"the turn ended with an error: {result.get('subtype')}")
    made = (workdir / "approved.txt").exists()
    sent = x.api.message_requests()
    back = sent[-1].last_user_blocks() if len(sent) == 2 else []
    tool_result = next((b for b in back if b.get("type") == "tool_result"), None)
    if behavior == "allow":
        c.expect(made, "allowed, but the tool did not run")
        c.expect(
            tool_result is not None and "made" in json.dumps(tool_result.get("content")),
            "the model did not get the tool's output",
        )
    else:
        c.expect(not made, "denied, but the tool ran")
        c.expect(
            tool_result is not None
            and "Denied by the compatibility matrix." in json.dumps(tool_result.get("content")),
            "the model did not get the deny message as the tool result",
        )


async def approval_allow(x: Ctx) -> None:
    await trio.to_thread.run_sync(_approval, x, "allow")


async def approval_deny(x: Ctx) -> None:
    await trio.to_thread.run_sync(_approval, x, "deny")


async def doctor(x: Ctx) -> None:
    report = await check_agent(AgentConfig(agent="claude", binary=x.binary), timeout_s=TURN_S * 2)
    x.checks.expect(report.version == x.version, f"the doctor read version {report.version}")
    x.checks.expect(report.state == "ok", f"the doctor says `{report.state}`")
    for found in report.capabilities:
        if found.ok is not True:
            x.checks.fact(
                f"{found.name}: {'missing' if found.ok is False else 'not checked'} ({found.evidence[:120]})"
            )


SCENARIOS: dict[str, Callable[[Ctx], Awaitable[None]]] = {
    "plain": plain,
    "tool": tool,
    "tools": tools,
    "thinking": thinking,
    "interrupt": interrupt,
    "interrupt-next": interrupt_next,
    "api-400": api_400,
    "api-500-retried": api_500_retried,
    "stall-silent": stall_silent,
    "stall-pings": stall_pings,
    "killed": killed,
    "resume": resume,
    "warm-pool": warm_pool,
    "approval-allow": approval_allow,
    "approval-deny": approval_deny,
    "approval-turnstile": approval_turnstile,
    "doctor": doctor,
}
PENDING = {
    "approval-turnstile": "pending issue 17 (tool approvals through Turnstile); the protocol-level approval-allow "
    "and approval-deny cells show what each CLI can do today",
}
assert tuple(SCENARIOS) == SCENARIO_IDS, "tests/compat/matrix.py and this module list the same scenarios"

# stall-pings runs in test_stall_pings_on_every_version_at_once, all versions side by side.
CELLS = [(v, s) for v in matrix_versions() for s in SCENARIOS if s != "stall-pings"]


@pytest.fixture
def binary(version: MatrixVersion, scenario: str) -> str:
    """The CLI of ``version``; skips a pending scenario, or a version not in the cache (never the bundled one).

    A sync fixture: a skip raised inside the trio test would lose its reason in the report.
    """
    if scenario in PENDING:
        OBSERVED[(version.version, scenario)] = Cell("pending", "")
        pytest.skip(PENDING[scenario])
    found, note = locate(version)
    if found is None:
        if version.role == "bundled":
            pytest.fail(note)  # the bundled CLI always runs: `make test` installs it
        pytest.skip(note)
    actual = cli_version(found).split()[0]
    assert actual == version.version, f"{found} is CLI {actual}, not {version.version}"
    return found


@pytest.mark.parametrize(("version", "scenario"), CELLS, ids=[f"{v.version}-{s}" for v, s in CELLS])
async def test_cell(version: MatrixVersion, scenario: str, binary: str, tmp_path: Path) -> None:
    cell = await run_cell(version, scenario, binary, tmp_path)
    assert_as_committed(version, scenario, cell)


async def run_cell(version: MatrixVersion, scenario: str, binary: str, tmp: Path) -> Cell:
    """Run one scenario against one CLI; its cell (also kept in :data:`OBSERVED`)."""
    tmp.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  (a test scratch directory, instant)
    with FakeModelAPI() as api:
        ctx = Ctx(version.version, binary, tmp, api)
        try:
            await SCENARIOS[scenario](ctx)
        except (trio.TooSlowError, AssertionError, TimeoutError) as exc:
            detail = str(exc).splitlines()[0][:160] if str(exc) else "no detail"
            ctx.checks.expect(False, f"{type(exc).__name__}: {detail}")
    cell = ctx.checks.cell()
    OBSERVED[(version.version, scenario)] = cell
    return cell


def assert_as_committed(version: MatrixVersion, scenario: str, cell: Cell) -> None:
    """The cell must be what docs/compatibility.md says (unless regenerating it, or an extra version)."""
    if UPDATE:
        return
    expected = load_results().get(version.version, {}).get(scenario)
    if version.role == "extra" and expected is None:
        return  # a version tried with TURNSTILE_COMPAT_VERSIONS: reported, not judged
    assert expected is not None, (
        f"{version.version}/{scenario} is not in tests/compat/results.json: run "
        "`TURNSTILE_UPDATE_COMPAT=1 pytest tests/compat` and commit docs/compatibility.md"
    )
    assert cell == expected, (
        f"CLI {version.version}, scenario {scenario}: now {cell.status} ({cell.observed!r}), the matrix says "
        f"{expected.status} ({expected.observed!r}). If the CLI changed, regenerate docs/compatibility.md "
        "(TURNSTILE_UPDATE_COMPAT=1 pytest tests/compat) and explain any new ✘ in tests/compat/notes.py"
    )


async def test_stall_pings_on_every_version_at_once(tmp_path: Path) -> None:
    """The ``stall-pings`` row. Each run mostly waits (~20 s for the CLI's 10 s keep-alive period), so the
    versions run side by side instead of one after another; each cell is checked like any other."""
    runnable: list[tuple[MatrixVersion, str]] = []
    missing: list[str] = []
    for version in matrix_versions():
        found, note = locate(version)
        if found is None:
            if version.role == "bundled":
                pytest.fail(note)
            missing.append(note)
            continue
        runnable.append((version, found))
    cells: dict[str, Cell] = {}

    async def one(version: MatrixVersion, found: str) -> None:
        cells[version.version] = await run_cell(version, "stall-pings", found, tmp_path / version.version)

    async with trio.open_nursery() as nursery:
        for version, found in runnable:
            nursery.start_soon(one, version, found)
    for version, _ in runnable:
        assert_as_committed(version, "stall-pings", cells[version.version])
    if missing:
        pytest.skip("ran " + ", ".join(v.version for v, _ in runnable) + "; " + "; ".join(missing))
