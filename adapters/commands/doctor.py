"""``turnstile doctor``: the Claude Code CLI Turnstile would run, its version, and what it can do.

Probed offline (see :mod:`engine.runtime.doctor`): the CLI talks only to a fake model API the doctor serves
on 127.0.0.1, in a scratch ``HOME`` and working directory, and the one tool call it makes is denied. For
each capability Turnstile relies on it prints ✔ or ✘ with what was seen, and for a ✘ what Turnstile does
without it. Exit status: 0 when Turnstile can use the CLI (every capability, or degraded with the notes
printed), 1 when it cannot (no turn over stream-json), 2 when no CLI was found or the flags are wrong.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final

import msgspec
import trio

from turnstile.engine.agents.capabilities import AgentReport, capability
from turnstile.engine.errors import ConfigError

__all__ = ["add_parser", "render", "run"]

_SOURCES: Final = {
    "flag": "--claude-bin",
    "env": "$TURNSTILE_CLAUDE_BIN",
    "path": "`claude` on PATH",
    "bundled": "bundled in claude-agent-sdk",
}
_EXIT: Final = {"ok": 0, "degraded": 0, "unusable": 1, "not_found": 2, "skipped": 2, "checking": 1}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``doctor``."""
    p = subparsers.add_parser(
        "doctor",
        help="check the Claude Code CLI: found where, version, capabilities Turnstile relies on (offline)",
        description="Find the Claude Code CLI as `turnstile serve --agent claude` would, and probe it "
        "offline against a fake model API on 127.0.0.1: stream-json in/out, initialize, partial messages, "
        "interrupt, --resume, can_use_tool over stdio, get_context_usage. Exit 0 when usable, 1 when not, "
        "2 when no CLI was found.",
    )
    p.add_argument(
        "--claude-bin", help="path of the CLI (default: $TURNSTILE_CLAUDE_BIN, PATH, then the bundled one)"
    )
    p.add_argument("--model", help="model passed to the CLI (default: $TURNSTILE_MODEL or the CLI's own)")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds for the whole probe (default 90)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def render(report: AgentReport) -> str:
    """The report as text for a terminal."""
    lines: list[str] = []
    if report.binary:
        lines.append(f"Claude Code CLI: {report.binary} ({_SOURCES.get(report.source or '', report.source)})")
        lines.append(f"version: {report.version or 'unknown (`--version` gave nothing)'}")
    if report.probe:
        lines.append(f"probe: {report.probe}")
    for found in report.capabilities:
        mark = {True: "✔", False: "✘", None: "?"}[found.ok]
        lines.append(f"  {mark} {capability(found.name).title}: {found.evidence}")
        if found.without:
            lines.append(f"      without it: {found.without}")
    lines.extend(f"problem: {p}" for p in report.problems)
    verdict = {
        "ok": "ok — every capability Turnstile relies on is there",
        "degraded": "degraded — Turnstile works with this CLI, without what is marked ✘ or ? above",
        "unusable": "unusable — Turnstile cannot run turns on this CLI",
    }.get(report.state, report.summary)
    lines.append(f"verdict: {verdict}")
    if report.duration_ms is not None:
        lines.append(f"(probed in {report.duration_ms / 1000:.1f} s)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Probe and print; the exit status follows the verdict."""
    from turnstile.engine.runtime.config import RuntimeConfig
    from turnstile.engine.runtime.doctor import check_agent

    try:
        agent = RuntimeConfig.from_env().default_agent
    except ConfigError as exc:
        print(f"turnstile doctor: {exc}", file=sys.stderr)
        return 2
    changes: dict[str, object] = {"agent": "claude"}
    if agent.agent != "claude":
        changes.update(binary=None, extra_args=())
    if args.claude_bin is not None:
        changes["binary"] = args.claude_bin
    if args.model is not None:
        changes["model"] = args.model
    agent = msgspec.structs.replace(agent, **changes)
    report = trio.run(lambda: check_agent(agent, timeout_s=args.timeout))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(report)).decode())
    elif report.state == "not_found":
        why = report.problems[0] if report.problems else report.summary
        print(f"turnstile doctor: {why}", file=sys.stderr)
    else:
        print(render(report))
    return _EXIT.get(report.state, 1)
