"""What Turnstile relies on the Claude Code CLI for, and what it does when a CLI lacks it.

Pure data and verdicts, no I/O: :mod:`engine.runtime.doctor` probes a CLI and fills in an
:class:`AgentReport` from these; ``turnstile doctor``, ``/readyz`` and ``GET /v1/agent`` show it, and
``docs/compatibility.md`` lists the same capabilities per CLI version.

Every ``without`` text describes what Turnstile does today with a CLI that lacks the capability — the
behaviour the runtime already has, not a wish — so a user reading the report knows what to expect.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = [
    "CAPABILITIES",
    "AgentReport",
    "AgentState",
    "Capability",
    "CapabilityCheck",
    "CapabilityName",
    "capability",
    "judge",
    "summary_line",
]

CapabilityName = Literal[
    "stream_json",
    "initialize",
    "partial_messages",
    "interrupt",
    "resume",
    "can_use_tool",
    "get_context_usage",
]

AgentState = Literal["checking", "ok", "degraded", "unusable", "not_found", "skipped"]
"""``checking`` (the probe runs), ``ok`` (every capability), ``degraded`` (usable, something missing),
``unusable`` (no turn over stream-json), ``not_found`` (no binary), ``skipped`` (not probed: the simulator,
or the check is off)."""


class Capability(msgspec.Struct, frozen=True, kw_only=True):
    """One thing Turnstile relies on: how it is probed, why it matters, what happens without it."""

    name: CapabilityName
    title: str
    probe: str  # what the doctor does to check it (offline)
    relies: str  # what Turnstile uses it for
    without: str  # what Turnstile does with a CLI that lacks it
    required: bool = False  # without it the CLI cannot be used at all


CAPABILITIES: Final[tuple[Capability, ...]] = (
    Capability(
        name="stream_json",
        title="stream-json in and out",
        probe="one user message on stdin (`--input-format stream-json`), read until its `result` on stdout",
        relies="every turn: Turnstile writes user messages and control requests as JSON lines and reads the "
        "CLI's JSON lines",
        without="Turnstile cannot drive this CLI: the server reports not ready and every turn fails; pick "
        "another CLI (`turnstile cli fetch 2.1.327`, then --claude-bin)",
        required=True,
    ),
    Capability(
        name="initialize",
        title="`initialize` control request",
        probe="`initialize` on stdin before any user message; the CLI answers `control_response` success",
        relies="priming warm pool processes (the SDK's start-up handshake) and telling a live process from a "
        "stuck one",
        without="an error answer still counts as answered; with no answer at all, warm processes never "
        "finish priming and count as failed spawns: the pool goes degraded and turns run on cold processes "
        "(slower first event); set TURNSTILE_POOL_PRIME=0 to skip priming",
    ),
    Capability(
        name="partial_messages",
        title="partial messages (token deltas)",
        probe="`--include-partial-messages`: `stream_event` lines with `content_block_delta` during a turn",
        relies="token-by-token streaming to subscribers, and the streaming phase of a turn's timing",
        without="subscribers get whole messages only (one `assistant` line per block, no deltas); time to "
        "first token equals time to the first whole message",
    ),
    Capability(
        name="interrupt",
        title="`interrupt` control request",
        probe="`interrupt` mid-turn: a `control_response` success, then the turn's `result` at once",
        relies="cancelling a turn while keeping the hot process (`POST …/interrupt`, WebSocket `interrupt`)",
        without="an unanswered interrupt escalates after interrupt_grace_s (3 s) to SIGTERM, then SIGKILL: "
        "the turn still ends `cancelled`, and the next turn starts a new process with --resume",
    ),
    Capability(
        name="resume",
        title="`--resume SESSION_ID`",
        probe="a second process started with `--resume` on the first one's session id: its model request "
        "carries the first turn",
        relies="continuing a conversation on a new process: after a crash, a recycle (pool_max_turns, "
        "pool_max_age_s), an escalated interrupt, one-shot mode, or a server restart",
        without="a turn that needs a new process fails with the CLI's error (\"No conversation found with "
        'session ID"), and the turns after it start a new conversation: the context is lost after a '
        "crash or recycle",
    ),
    Capability(
        name="can_use_tool",
        title="`can_use_tool` over stdio",
        probe="`--permission-prompt-tool stdio` and a tool call that writes a file: the CLI asks with a "
        "`can_use_tool` control request and honours the answer (the doctor denies it)",
        relies="tool approvals from clients (issue 17, not built yet): today tools run only from the "
        "--allowed-tools list",
        without="nothing changes today; once approvals exist, sessions on this CLI can run only the tools in "
        "--allowed-tools and any other tool call is refused inside the turn",
    ),
    Capability(
        name="get_context_usage",
        title="`get_context_usage` control request",
        probe="`get_context_usage` on stdin before any user message; the CLI answers with its context "
        "categories",
        relies="priming: answering it makes the CLI build its system prompt and tool list before the first "
        "turn needs them (first event ~25 % sooner)",
        without="the CLI answers with an error and the pool treats that as answered: warm processes are "
        "primed with `initialize` only and build their system prompt during their first turn",
    ),
)

_BY_NAME: Final = {c.name: c for c in CAPABILITIES}


def capability(name: CapabilityName) -> Capability:
    """The catalogue entry for ``name``."""
    return _BY_NAME[name]


class CapabilityCheck(msgspec.Struct, frozen=True, kw_only=True):
    """The doctor's finding for one capability.

    ``ok`` is True (has it), False (lacks it) or None (could not be checked, e.g. an earlier step failed
    or the configuration turns it off). ``evidence`` says what was seen; ``without`` is the catalogue's
    degradation note, set whenever ``ok`` is not True.
    """

    name: CapabilityName
    ok: bool | None
    evidence: str
    without: str | None = None


class AgentReport(msgspec.Struct, kw_only=True):
    """What ``turnstile doctor`` found about an agent CLI (also ``GET /v1/agent``)."""

    state: AgentState
    agent: str = "claude"
    binary: str | None = None
    source: str | None = None  # flag, env, path, bundled (see engine.agents.claude.BinarySource)
    version: str | None = None
    probe: str = ""  # how it was probed (offline, against what)
    capabilities: list[CapabilityCheck] = []
    problems: list[str] = []
    summary: str = ""
    duration_ms: float | None = None

    def missing(self) -> list[CapabilityCheck]:
        """The capabilities found lacking or not checkable."""
        return [c for c in self.capabilities if c.ok is not True]


def check(name: CapabilityName, ok: bool | None, evidence: str) -> CapabilityCheck:
    """A finding, with the catalogue's degradation note attached when ``ok`` is not True."""
    return CapabilityCheck(
        name=name, ok=ok, evidence=evidence, without=None if ok else capability(name).without
    )


def judge(checks: list[CapabilityCheck]) -> AgentState:
    """``unusable`` without a required capability, ``degraded`` without any other, else ``ok``."""
    found = {c.name: c for c in checks}
    for cap in CAPABILITIES:
        if cap.required and (cap.name not in found or found[cap.name].ok is not True):
            return "unusable"
    return "degraded" if any(c.ok is not True for c in checks) else "ok"


def summary_line(report: AgentReport) -> str:
    """One line for a console chip or a log: version, where from, and the verdict."""
    who = f"{report.agent} {report.version or '(version unknown)'}"
    if report.source:
        who += f" ({report.source})"
    if report.state == "ok":
        return f"{who}: every capability Turnstile relies on"
    if report.state == "checking":
        return f"{who}: checking capabilities…"
    if report.state in ("not_found", "skipped"):
        return report.problems[0] if report.problems else f"{who}: not checked"
    missing = report.missing()
    names = ", ".join(capability(c.name).title for c in missing) or "?"
    if report.state == "unusable":
        return f"{who}: unusable — {names}"
    return f"{who}: degraded — without {names}"
