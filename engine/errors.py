"""One exception hierarchy for all of Turnstile.

Every message says what happened and what to do about it. Code that catches Turnstile's errors catches
:class:`TurnstileError`; the subclasses exist so callers (and the HTTP layer) can map them to answers.
"""

from __future__ import annotations


class TurnstileError(Exception):
    """Root of every error Turnstile raises on purpose."""


class ConfigError(TurnstileError):
    """A configuration value is invalid; the message names the setting and the accepted values."""


class AgentBinaryNotFound(TurnstileError):
    """The agent's executable could not be located; the message lists where it was searched."""


class CliFetchError(TurnstileError):
    """A Claude Code CLI version could not be fetched from the npm registry (no such version, registry
    unreachable, npm missing, no build for this platform); the message says which and what to do."""


class SpecError(TurnstileError):
    """A machine specification in ``specs/`` is invalid; the message names the spec and the problem."""


class LogError(TurnstileError):
    """A log could not be read or written."""


class LogCorrupted(LogError):
    """A log file holds a damaged entry before its last line (a torn last line is repaired, not raised)."""


class StorageUnavailable(LogError):
    """The data directory cannot be written now (disk full, permissions, I/O error): nothing new can start.

    Entries already accepted are kept in memory and written first once the storage works again; retry
    the request later (readiness says when).
    """


class StorageFailed(StorageUnavailable):
    """A subscription ended because its log could not be written: nothing more can be sent for now.

    Everything up to ``last_seq`` (the log's last *written* entry) was delivered. ``reason`` says what
    failed (the file and the system's error). Resubscribe after ``last_seq`` once the storage works
    again: the entries kept in memory meanwhile (and the turn's real terminal entry) come from the log.
    """

    def __init__(self, last_seq: int, reason: str, stream: str | None = None) -> None:
        super().__init__(
            f"{reason}; nothing more can be sent until the storage works again: "
            f"resubscribe after seq {last_seq} later"
        )
        self.last_seq = last_seq
        self.reason = reason
        self.stream = stream


class LogDiverged(LogError):
    """A shared log no longer continues from what this server wrote: Redis lost entries (a restart without
    persistence), or another server wrote to it. Nothing more is written to it; the message says which."""


class SequenceGap(LogError):
    """An append would break the gap-free sequence of a log."""


class LogInputError(TurnstileError):
    """A file given to a command is not a Turnstile log nor a CLI transcript (empty, binary, missing)."""


# --- runtime ------------------------------------------------------------------------------------------


class SessionNotFound(TurnstileError):
    """No session has this id; list sessions to find the right one, or create it first."""


class SessionExists(TurnstileError):
    """A session with this id already exists; pick another id or use the existing session."""


class SessionDamaged(TurnstileError):
    """The session exists but its log cannot be read back (damaged before its last line).

    The message names the file, the line and what to do; the other sessions are not affected.
    """


class SessionOwnedElsewhere(TurnstileError):
    """The session is run by another server sharing the log (``owner``): this one only reads it.

    Send turns, interrupts and stops to the owner (its ``node`` in the session's info); reading (SSE,
    WebSocket, the log) works on every server.
    """

    def __init__(self, session_id: str, owner: str, node: str) -> None:
        super().__init__(
            f"session {session_id} is run by node {owner!r}; this node ({node!r}) only reads it: send turns, "
            f"interrupts and stops to node {owner!r} (reading it works on every node; forwarding commands "
            "between nodes is not built yet)"
        )
        self.session_id = session_id
        self.owner = owner


class StreamNotFound(TurnstileError):
    """The session has no stream (turn) with this id; stream ids are returned by ``start_turn``."""


class QueueFull(TurnstileError):
    """The session already has the maximum number of queued turns; wait for one to finish, then retry."""


class SessionStopped(TurnstileError):
    """The session is stopped (or stopping) and accepts no more turns; create a new session."""


class RuntimeClosed(TurnstileError):
    """The runtime is shutting down or closed; nothing new can start."""


class SpawnError(TurnstileError):
    """An agent process could not be started; the message says which program and why."""


class Lagged(TurnstileError):
    """A subscriber fell too far behind the live log and was ended.

    ``last_seq`` is the seq of the last entry it received: resubscribe with ``after=last_seq`` to catch
    up from the log with no gap.
    """

    def __init__(self, last_seq: int, message: str | None = None) -> None:
        super().__init__(
            message
            or f"subscriber fell behind the live log after seq {last_seq}; "
            f"resubscribe with after={last_seq} to catch up from the log"
        )
        self.last_seq = last_seq
