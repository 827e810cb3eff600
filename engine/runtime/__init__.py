"""The trio runtime: agent processes, sessions, the hot pool, subscriptions and recovery.

This is the only part of the engine that spawns processes or sleeps; it drives the sans-IO core (framing,
log, fold) and acts on what it says. Start here: :func:`open_runtime`, :class:`Runtime`,
:class:`RuntimeConfig`, :class:`AgentConfig`. ``docs/runtime.md`` explains lifetimes, cancellation
guarantees, timeouts, the pool and recovery.
"""

from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig
from turnstile.engine.runtime.info import (
    MetricsSnapshot,
    PoolStatus,
    Readiness,
    SessionInfo,
    TimingSummary,
    TurnInfo,
)
from turnstile.engine.runtime.process import AgentProcess, Launcher, SubprocessAgent, SubprocessLauncher
from turnstile.engine.runtime.runtime import Runtime, open_runtime
from turnstile.engine.runtime.session import Session
from turnstile.engine.runtime.subscription import Subscription

__all__ = [
    "AgentConfig",
    "AgentProcess",
    "Launcher",
    "MetricsSnapshot",
    "PoolStatus",
    "Readiness",
    "Runtime",
    "RuntimeConfig",
    "Session",
    "SessionInfo",
    "SubprocessAgent",
    "SubprocessLauncher",
    "Subscription",
    "TimingSummary",
    "TurnInfo",
    "open_runtime",
]
