"""Errors as HTTP answers: ``{"error": {"code", "message"}}`` with the right status (a 4xx for bad input)."""

from __future__ import annotations

from typing import Final

import msgspec

from turnstile.engine import errors

__all__ = ["ApiError", "error_body", "status_for"]


class ApiError(Exception):
    """An error the HTTP layer answers with ``status`` and a stable machine-readable ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# Runtime errors → (status, code). Looked up by class name so adapters do not depend on every subclass.
_BY_NAME: Final[dict[str, tuple[int, str]]] = {
    "SessionNotFound": (404, "session_not_found"),
    "StreamNotFound": (404, "turn_not_found"),
    "QueueFull": (429, "queue_full"),
    "SessionStopped": (409, "session_stopped"),
    "SessionExists": (409, "session_exists"),
    "SessionOwnedElsewhere": (409, "session_owned_elsewhere"),
    "RuntimeClosed": (503, "shutting_down"),
    "SpawnError": (503, "agent_unavailable"),
    "AgentBinaryNotFound": (503, "agent_unavailable"),
    "ConfigError": (400, "invalid_config"),
    "LogError": (503, "storage_unavailable"),
    "StorageUnavailable": (503, "storage_unavailable"),
    # One truth for a log damaged mid-file: the session exists and is damaged (never a 500).
    "SessionDamaged": (409, "session_damaged"),
    "LogCorrupted": (409, "session_damaged"),
}


def status_for(exc: errors.TurnstileError) -> tuple[int, str]:
    """The HTTP status and error code for a Turnstile error (its nearest known class)."""
    for cls in type(exc).__mro__:
        found = _BY_NAME.get(cls.__name__)
        if found is not None:
            return found
    return 400, "bad_request"


def error_body(code: str, message: str) -> bytes:
    """The JSON error document."""
    return msgspec.json.encode({"error": {"code": code, "message": message}})
