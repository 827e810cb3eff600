"""The server's check of its default agent CLI: ``turnstile doctor`` run once at start, in the background.

The report is served at ``GET /v1/agent`` and summed up in ``/readyz`` (``agent``), which the console shows
next to the pool. A CLI that lacks a capability is *degraded*: the server runs, and the report says what
Turnstile does without it (also logged as a warning). A CLI that cannot run a turn over stream-json makes
the server not ready. The built-in simulator is not probed; ``TURNSTILE_AGENT_CHECK=0`` turns it off.
"""

from __future__ import annotations

import logging
from typing import Any

from turnstile.engine.agents.capabilities import AgentReport, capability, summary_line
from turnstile.engine.runtime.config import AgentConfig
from turnstile.engine.runtime.doctor import check_agent, skipped_report

__all__ = ["AgentCheck"]

log = logging.getLogger("turnstile.agent")


class AgentCheck:
    """Holds the latest report for ``agent``; :meth:`run` probes it (cancel it to stop the probe)."""

    def __init__(self, agent: AgentConfig, *, enabled: bool = True, timeout_s: float = 120.0) -> None:
        self.agent = agent
        self.timeout_s = timeout_s
        if agent.agent != "claude":
            self.report = skipped_report(agent, "the built-in simulator (not probed)")
        elif not enabled:
            self.report = skipped_report(agent, "the agent check is off (TURNSTILE_AGENT_CHECK=0)")
        else:
            self.report = AgentReport(state="checking")
            self.report.summary = summary_line(self.report)

    async def run(self) -> None:
        """Probe the agent once (when enabled) and log what it found."""
        if self.report.state != "checking":
            return
        try:
            report = await check_agent(self.agent, timeout_s=self.timeout_s)
        except Exception as exc:  # the check must never take the server down with it
            log.exception("agent check failed")
            self.report = skipped_report(self.agent, f"the agent check failed: {exc!r}")
            return
        self.report = report
        if report.state == "ok":
            log.info("agent check: %s", report.summary)
            return
        log.warning("agent check: %s", report.summary)
        for found in report.missing():
            log.warning("  %s: %s — without it: %s", found.name, found.evidence, found.without)

    def brief(self) -> dict[str, Any]:
        """What ``/readyz`` carries: state, version, one summary line, and each missing capability."""
        r = self.report
        return {
            "state": r.state,
            "version": r.version,
            "source": r.source,
            "summary": r.summary,
            "missing": [
                {"name": c.name, "title": capability(c.name).title, "without": c.without} for c in r.missing()
            ],
        }

    def problem(self) -> str | None:
        """Why the server is not ready because of its agent CLI, or None."""
        if self.report.state != "unusable":
            return None
        first = next((c for c in self.report.capabilities if c.ok is False), None)
        why = first.evidence if first else "; ".join(self.report.problems)
        return f"the agent CLI cannot run turns ({why}); see GET /v1/agent or run `turnstile doctor`"
