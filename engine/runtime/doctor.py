"""``turnstile doctor``: which of the capabilities Turnstile relies on a Claude Code CLI has, probed offline.

The probe starts a fake Messages API on 127.0.0.1 (:mod:`engine.runtime.probe_api`) and points the CLI at
it, in a scratch ``HOME`` and working directory with every ``ANTHROPIC_*`` / ``CLAUDE*`` variable of ours
removed: no network, no real key, no user config. Three short-lived processes, the first two in turn and
the third alongside them:

A. the agent's own argv (as Turnstile runs it): ``initialize`` and ``get_context_usage`` before any
   user message; a turn (stream-json in and out, token deltas with ``--include-partial-messages``); a
   slow turn interrupted after its first delta;
B. ``--resume`` on A's session id: does the next model request carry A's first turn?
C. ``--permission-prompt-tool stdio`` and a Bash call that would write a file in the scratch directory:
   does a ``can_use_tool`` request come, and is the doctor's *deny* honoured (the file never appears)?

No tool runs: the one tool call is denied (and it could only touch the scratch directory). Each process is
closed, then killed if it lingers; cancelling :func:`check_agent` kills them too. Findings are
:class:`engine.agents.capabilities.CapabilityCheck` values with the evidence seen.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import trio

from turnstile.engine.agents.capabilities import AgentReport, CapabilityCheck, check, judge, summary_line
from turnstile.engine.agents.claude import claude_argv, locate_claude_binary, offline_env
from turnstile.engine.errors import AgentBinaryNotFound, SpawnError
from turnstile.engine.framing import LineFramer
from turnstile.engine.protocol import encode_stdin, initialize_request, interrupt_request, user_input
from turnstile.engine.runtime.config import AgentConfig
from turnstile.engine.runtime.probe_api import SLOW, TOOL, ProbeAPI
from turnstile.engine.runtime.process import SubprocessAgent, agent_env

__all__ = ["check_agent", "skipped_report"]

_START_S: Final = 30.0  # a cold cli.js start on a loaded 2-core machine takes seconds
_TURN_S: Final = 30.0
_ACK_S: Final = 5.0
_CLOSE_S: Final = 5.0
_STDERR_KEEP: Final = 4000


class _Gone(Exception):
    """The probe process's stdout ended."""


_GONE_WAIT_S: Final = 2.0


class _Cli:
    """One probe process: JSON lines in, parsed JSON objects out, stderr kept (its tail)."""

    def __init__(self, proc: SubprocessAgent) -> None:
        self.proc = proc
        self.framer = LineFramer()
        self.pending: list[dict[str, Any]] = []
        self.seen: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self.stderr_done = trio.Event()
        self.eof = False

    async def send(self, obj: Any) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.proc.send(encode_stdin(obj) if not isinstance(obj, bytes) else obj)

    async def next(self) -> dict[str, Any]:
        while not self.pending:
            if self.eof:
                raise _Gone
            chunk = await self.proc.receive_stdout()
            if not chunk:
                self.eof = True
                continue
            for frame in self.framer.feed(chunk):
                if type(frame) is bytes and frame.startswith(b"{"):
                    with contextlib.suppress(ValueError):
                        obj = json.loads(frame)
                        if isinstance(obj, dict):
                            self.pending.append(obj)
        msg = self.pending.pop(0)
        self.seen.append(msg)
        return msg

    async def until(self, want: Callable[[dict[str, Any]], bool], within_s: float) -> dict[str, Any] | None:
        """The next message matching ``want``; None after ``within_s``. Raises :class:`_Gone` at EOF."""
        with trio.move_on_after(within_s):
            while True:
                msg = await self.next()
                if want(msg):
                    return msg
        return None

    async def drain_stderr(self) -> None:
        try:
            while chunk := await self.proc.receive_stderr():
                self.stderr += chunk
                del self.stderr[:-_STDERR_KEEP]
        finally:
            self.stderr_done.set()

    def stderr_tail(self) -> str:
        text = bytes(self.stderr).decode(errors="replace").strip()
        return text[-400:] if text else ""

    async def gone(self) -> str:
        """How the process ended: its status and the tail of its stderr. Waits (briefly) for the exit and
        for stderr's end first — stdout's EOF can come before the last stderr bytes are read."""
        with trio.move_on_after(_GONE_WAIT_S):
            await self.proc.wait()
            await self.stderr_done.wait()
        code = self.proc.returncode
        tail = self.stderr_tail()
        return f"the CLI exited{f' with status {code}' if code is not None else ''}" + (
            f"; stderr: {tail}" if tail else " (nothing on stderr)"
        )


@contextlib.asynccontextmanager
async def _spawn(
    argv: list[str], env: dict[str, str], cwd: str, nursery: trio.Nursery
) -> AsyncIterator[_Cli]:
    """Start a probe process (its stderr drained in ``nursery``); close it, then kill it, on the way out."""
    proc = await SubprocessAgent.start(argv, env=env, cwd=cwd)
    cli = _Cli(proc)
    nursery.start_soon(cli.drain_stderr)
    try:
        yield cli
    except BaseException:
        with trio.CancelScope(shield=True):  # cut short (deadline, cancellation): no grace
            proc.signal(signal.SIGKILL)
            await proc.wait()
            await proc.aclose()
        raise
    with trio.CancelScope(shield=True):
        await proc.close_stdin()  # the CLI exits at stdin EOF (and writes its session file first)
        with trio.move_on_after(_CLOSE_S):
            await proc.wait()
        proc.signal(signal.SIGKILL)
        await proc.wait()
        await proc.aclose()


def _is_response(request_id: str) -> Callable[[dict[str, Any]], bool]:
    def match(m: dict[str, Any]) -> bool:
        resp = m.get("response")
        return (
            m.get("type") == "control_response"
            and isinstance(resp, dict)
            and resp.get("request_id") == request_id
        )

    return match


def _is_result(m: dict[str, Any]) -> bool:
    return m.get("type") == "result"


def _is_delta(m: dict[str, Any]) -> bool:
    event = m.get("event")
    return (
        m.get("type") == "stream_event"
        and isinstance(event, dict)
        and event.get("type") == "content_block_delta"
    )


def _answer(m: dict[str, Any] | None) -> tuple[bool | None, str]:
    """(success?, what it said) for a control_response (None: no answer)."""
    if m is None:
        return None, "no answer"
    resp = m["response"]
    if resp.get("subtype") == "success":
        body = resp.get("response")
        if isinstance(body, dict) and body:
            keys = sorted(body)
            shown = ", ".join(f"`{k}`" for k in keys[:4]) + (
                f" and {len(keys) - 4} more" if len(keys) > 4 else ""
            )
            return True, f"success with {shown}"
        return True, "success" + (" (no payload)" if not body else "")
    return False, f"error: {resp.get('error')!s}"


def _result_text(m: dict[str, Any]) -> str:
    errors = m.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)[:200]
    return str(m.get("result") or m.get("subtype") or "")[:200]


class _Probe:
    def __init__(self, agent: AgentConfig, binary: str, api: ProbeAPI, scratch: Path) -> None:
        self.nursery: trio.Nursery | None = None  # where the probe processes' stderr is drained
        self.agent = agent
        self.binary = binary
        self.api = api
        self.scratch = scratch
        self.nonce = f"turnstile-probe-{secrets.token_hex(4)}"
        self.checks: dict[str, CapabilityCheck] = {}
        self.version: str | None = None
        self.session_id: str | None = None
        self.problems: list[str] = []

    def env(self, name: str) -> tuple[dict[str, str], str]:
        base = agent_env(self.agent)
        env = {k: v for k, v in base.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
        home = self.scratch / name / "home"
        cwd = self.scratch / name / "wd"
        home.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        env.update(offline_env(self.api.base_url, str(home)))
        env["ANTHROPIC_API_KEY"] = f"turnstile-doctor-{name}"  # tells the processes' requests apart
        return env, str(cwd)

    def spawn(
        self, argv: list[str], env: dict[str, str], cwd: str
    ) -> contextlib.AbstractAsyncContextManager[_Cli]:
        assert self.nursery is not None
        return _spawn(argv, env, cwd, self.nursery)

    def requests_of(self, key: str, since: int = 0) -> list[dict[str, Any]]:
        return [body for k, body in self.api.requests[since:] if k == key]

    def argv(self, *, resume: str | None = None) -> list[str]:
        a = self.agent
        return claude_argv(
            self.binary,
            model=a.model,
            allowed_tools=a.allowed_tools,
            partial_messages=a.partial_messages,
            resume=resume,
            extra_args=a.extra_args,
        )

    def put(self, name: Any, ok: bool | None, evidence: str) -> None:
        if name not in self.checks:
            self.checks[name] = check(name, ok, evidence)

    # --- A: control requests, a turn, an interrupt ---------------------------------------------------

    async def process_a(self) -> None:
        env, cwd = self.env("a")
        try:
            async with self.spawn(self.argv(), env, cwd) as cli:
                await self._controls(cli)
                await self._turn(cli)
                if "stream_json" in self.checks and self.checks["stream_json"].ok:
                    await self._interrupt(cli)
        except SpawnError as exc:
            self.put("stream_json", False, str(exc))
        except _Gone:
            pass
        for name in ("stream_json", "initialize", "get_context_usage", "partial_messages", "interrupt"):
            self.put(name, None, "not checked: an earlier step failed")

    async def _controls(self, cli: _Cli) -> None:
        await cli.send(initialize_request("turnstile_doctor_initialize"))
        await cli.send(
            {
                "type": "control_request",
                "request_id": "turnstile_doctor_context",
                "request": {"subtype": "get_context_usage"},
            }
        )
        answers: dict[str, dict[str, Any]] = {}
        try:
            with trio.move_on_after(_START_S):
                while len(answers) < 2:
                    msg = await cli.next()
                    resp = msg.get("response")
                    if msg.get("type") == "control_response" and isinstance(resp, dict):
                        answers[str(resp.get("request_id"))] = msg
        except _Gone:
            gone = await cli.gone()
            self.put("stream_json", False, f"no answer to `initialize` before the process ended: {gone}")
            raise
        for rid, name in (
            ("turnstile_doctor_initialize", "initialize"),
            ("turnstile_doctor_context", "get_context_usage"),
        ):
            ok, said = _answer(answers.get(rid))
            if ok is None:
                said = f"no answer within {_START_S:g} s"
                ok = False
            self.put(name, ok, said)

    async def _turn(self, cli: _Cli) -> None:
        await cli.send(user_input(f"{self.nonce}: this is a probe; answer briefly."))
        try:
            result = await cli.until(_is_result, _TURN_S)
        except _Gone:
            self.put("stream_json", False, f"no `result` for a user message: {await cli.gone()}")
            raise
        for m in cli.seen:
            if m.get("type") == "system" and m.get("subtype") == "init":
                self.version = self.version or (
                    str(m.get("claude_code_version")) if m.get("claude_code_version") else None
                )
        if result is None:
            self.put("stream_json", False, f"no `result` within {_TURN_S:g} s of a user message")
            return
        self.session_id = str(result.get("session_id") or "") or None
        if result.get("is_error"):
            self.put("stream_json", False, f"the probe turn failed: {_result_text(result)}")
            return
        kinds = sorted({str(m.get("type")) for m in cli.seen})
        self.put(
            "stream_json",
            True,
            f"a turn ended with `result` {result.get('subtype')} (lines: {', '.join(kinds)})",
        )
        deltas = sum(1 for m in cli.seen if _is_delta(m))
        if not self.agent.partial_messages:
            self.put("partial_messages", None, "off in this configuration (partial_messages false)")
        elif deltas:
            self.put("partial_messages", True, f"{deltas} `content_block_delta` stream events in the turn")
        else:
            self.put("partial_messages", False, "no `stream_event` deltas with --include-partial-messages")

    async def _interrupt(self, cli: _Cli) -> None:
        await cli.send(user_input(f"{SLOW} keep talking."))
        started = await cli.until(lambda m: _is_delta(m) or m.get("type") in ("assistant", "result"), _TURN_S)
        if started is None:
            self.put("interrupt", None, f"not checked: the slow turn printed nothing in {_TURN_S:g} s")
            return
        if _is_result(started) or any(_is_result(m) for m in cli.pending):
            self.put("interrupt", None, "not checked: the slow turn ended before it could be interrupted")
            return
        t0 = trio.current_time()
        await cli.send(interrupt_request("turnstile_doctor_interrupt"))
        ack: dict[str, Any] | None = None
        result: dict[str, Any] | None = None
        with trio.move_on_after(_ACK_S):
            while ack is None:
                msg = await cli.next()
                if _is_response("turnstile_doctor_interrupt")(msg):
                    ack = msg
                elif _is_result(msg):
                    result = msg  # the turn may end before its acknowledgement is read
        ok, said = _answer(ack)
        if ok is None:
            self.put(
                "interrupt", False, f"no `control_response` within {_ACK_S:g} s of the interrupt request"
            )
            return
        if not ok:
            self.put("interrupt", False, f"the CLI refused it: {said}")
            return
        ack_ms = (trio.current_time() - t0) * 1000
        if result is None:
            result = await cli.until(_is_result, _TURN_S)
        if result is None:
            self.put(
                "interrupt", False, f"acknowledged ({said}) but the turn did not end within {_TURN_S:g} s"
            )
        elif result.get("subtype") == "success" and not result.get("is_error"):
            self.put("interrupt", False, f"acknowledged ({said}) but the turn ran to completion")
        else:
            self.put(
                "interrupt",
                True,
                f"acknowledged in {ack_ms:.0f} ms ({said}); the turn ended {result.get('subtype')}",
            )

    # --- B: --resume ---------------------------------------------------------------------------------

    async def process_b(self) -> None:
        if self.session_id is None:
            self.put("resume", None, "not checked: no session id from the first process")
            return
        # The conversation lives under A's HOME and project directory: resume from there, as a respawn does.
        env, cwd = self.env("a")
        env["ANTHROPIC_API_KEY"] = "turnstile-doctor-b"
        before = len(self.api.requests)
        try:
            async with self.spawn(self.argv(resume=self.session_id), env, cwd) as cli:
                await cli.send(user_input("Resumed: do you remember the probe?"))
                result = await cli.until(_is_result, _TURN_S)
        except _Gone:
            self.put("resume", False, f"the resumed process ended without a result: {await cli.gone()}")
            return
        except SpawnError as exc:
            self.put("resume", False, str(exc))
            return
        sent = self.requests_of("turnstile-doctor-b", before)
        carried = any(self.nonce in json.dumps(r.get("messages")) for r in sent)
        if result is not None and not result.get("is_error") and not sent:
            self.put("resume", None, "not checked: the resumed process never called the model API")
        elif result is None:
            self.put("resume", False, f"no `result` within {_TURN_S:g} s on the resumed process")
        elif result.get("is_error"):
            self.put("resume", False, f"the resumed turn failed: {_result_text(result)}")
        elif not carried:
            self.put(
                "resume", False, "the resumed turn's model request did not carry the earlier conversation"
            )
        else:
            self.put("resume", True, "the resumed process sent the first turn back to the model")

    # --- C: can_use_tool over stdio ------------------------------------------------------------------

    async def process_c(self) -> None:
        env, cwd = self.env("c")
        marker = Path(cwd) / "turnstile-probe-tool-ran"
        argv = claude_argv(
            self.binary,
            model=self.agent.model,
            allowed_tools=(),
            partial_messages=False,
            extra_args=("--permission-prompt-tool", "stdio", "--permission-mode", "default"),
        )
        try:
            async with self.spawn(argv, env, cwd) as cli:
                await cli.send(user_input(f"{TOOL} create the marker file."))
                asked = await cli.until(
                    lambda m: (
                        _is_result(m)
                        or (
                            m.get("type") == "control_request"
                            and (m.get("request") or {}).get("subtype") == "can_use_tool"
                        )
                    ),
                    _TURN_S,
                )
                if asked is None:
                    self.put("can_use_tool", None, f"not checked: nothing within {_TURN_S:g} s")
                    return
                if _is_result(asked) and not self.requests_of("turnstile-doctor-c"):
                    self.put("can_use_tool", None, "not checked: the CLI never called the model API")
                    return
                if _is_result(asked):
                    ran = "and ran the tool itself" if marker.exists() else "and did not run the tool"
                    self.put(
                        "can_use_tool",
                        False,
                        f"no `can_use_tool` request with --permission-prompt-tool stdio: the CLI decided "
                        f"alone {ran}",
                    )
                    return
                await cli.send(
                    {
                        "type": "control_response",
                        "response": {
                            "subtype": "success",
                            "request_id": asked.get("request_id"),
                            "response": {
                                "behavior": "deny",
                                "message": "Denied by turnstile doctor (a probe).",
                            },
                        },
                    }
                )
                result = await cli.until(_is_result, _TURN_S)
        except _Gone:
            self.put("can_use_tool", False, f"the process ended: {await cli.gone()}")
            return
        except SpawnError as exc:
            self.put("can_use_tool", False, str(exc))
            return
        tool = (asked.get("request") or {}).get("tool_name")
        if marker.exists():
            self.put("can_use_tool", False, f"asked about {tool} but ran it after a deny")
        elif result is None:
            self.put(
                "can_use_tool", False, f"asked about {tool}; no `result` within {_TURN_S:g} s of the deny"
            )
        else:
            self.put("can_use_tool", True, f"asked about {tool} (`can_use_tool`), honoured the deny")


async def _read_version(binary: str, env: dict[str, str]) -> str | None:
    with trio.move_on_after(_START_S):
        try:
            done = await trio.run_process(
                [binary, "--version"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
                stdin=b"",
            )
        except OSError:
            return None
        first = (done.stdout.decode(errors="replace").strip().splitlines() or [""])[0]
        if done.returncode == 0 and first:
            return first.split(" ")[0]
    return None


def skipped_report(agent: AgentConfig, why: str) -> AgentReport:
    """A report for an agent that is not probed (the simulator, or the check turned off)."""
    report = AgentReport(state="skipped", agent=agent.agent, problems=[why])
    report.summary = summary_line(report)
    return report


async def check_agent(agent: AgentConfig, *, timeout_s: float = 90.0) -> AgentReport:
    """Probe ``agent``'s CLI offline (see the module docstring) and report what it can do.

    Never raises for the CLI's sake: a missing binary is ``not_found``, a CLI that cannot run a turn is
    ``unusable``, a probe past ``timeout_s`` reports what it found so far.
    """
    started = trio.current_time()
    env = agent_env(agent)
    try:
        located = locate_claude_binary(agent.binary, env)
    except AgentBinaryNotFound as exc:
        report = AgentReport(state="not_found", problems=[str(exc)])
        report.summary = summary_line(report)
        return report
    env_for_version = {k: v for k, v in env.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env_for_version.update(DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
    version = await _read_version(located.path, env_for_version)
    scratch = Path(tempfile.mkdtemp(prefix="turnstile-doctor-"))
    api = ProbeAPI(tool_command=f"touch {scratch / 'c' / 'wd' / 'turnstile-probe-tool-ran'}")
    probe = _Probe(agent, located.path, api, scratch)
    timed_out = False
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(api.serve)
            with trio.move_on_after(timeout_s) as scope:
                async with trio.open_nursery() as probes:
                    probe.nursery = probes

                    async def a_then_b() -> None:
                        await probe.process_a()
                        await probe.process_b()

                    probes.start_soon(a_then_b)
                    probes.start_soon(probe.process_c)
            timed_out = scope.cancelled_caught
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if timed_out:
        probe.problems.append(f"the probe did not finish within {timeout_s:g} s")
    order = (
        "stream_json",
        "initialize",
        "partial_messages",
        "interrupt",
        "resume",
        "can_use_tool",
        "get_context_usage",
    )
    for name in order:
        probe.put(name, None, "not checked: the probe ran out of time" if timed_out else "not checked")
    checks = [probe.checks[name] for name in order]
    report = AgentReport(
        state=judge(checks),
        binary=located.path,
        source=located.source,
        version=version or probe.version,
        probe=(
            "offline: the CLI talked only to a fake model API the doctor served on 127.0.0.1, in a scratch "
            "HOME and working directory; no tool ran (the one tool call was denied)"
        ),
        capabilities=checks,
        problems=probe.problems,
        duration_ms=round((trio.current_time() - started) * 1000, 1),
    )
    report.summary = summary_line(report)
    return report
