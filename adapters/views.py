"""What the front-ends read about sessions and turns, from the runtime's public session objects.

A session is one this server runs or — when servers share a Redis log — one another node runs, read from
the shared log (:meth:`Runtime.reader`); both read alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

from turnstile.engine.errors import LogError, StorageUnavailable, StreamNotFound
from turnstile.engine.log import Record
from turnstile.engine.runtime.info import SessionInfo, TurnInfo
from turnstile.engine.runtime.runtime import Reader, Runtime

__all__ = ["last_seq", "read_log", "session", "session_closed", "session_info", "stream_bounds", "turn_info"]

_LOG_CHUNK = 2048


async def session(runtime: Runtime, sid: str) -> Reader:
    """The session ``sid`` (waiting for start-up recovery if it may still be loading)."""
    return await runtime.reader(sid)


async def session_info(runtime: Runtime, sid: str) -> SessionInfo:
    """The session as the API shows it."""
    return runtime.info_of(await session(runtime, sid))


async def turn_info(runtime: Runtime, sid: str, tid: str) -> TurnInfo:
    """One turn of a session; raises :class:`StreamNotFound`."""
    for turn in (await session_info(runtime, sid)).turns:
        if turn.id == tid:
            return turn
    raise StreamNotFound(f"session {sid} has no turn {tid!r}")


async def stream_bounds(runtime: Runtime, sid: str, tid: str) -> tuple[int, int | None]:
    """The seq of the turn's first entry and of its terminal entry (None while it runs)."""
    s = await session(runtime, sid)
    start = s.journal.stream_start.get(tid)
    if start is None:
        if tid not in s.fold.streams:
            raise StreamNotFound(f"session {sid} has no turn {tid!r}")
        start = 0
    return start, s.journal.stream_end.get(tid)


async def last_seq(runtime: Runtime, sid: str) -> int:
    """The seq of the session's last log entry."""
    return (await session(runtime, sid)).journal.last_seq


async def session_closed(runtime: Runtime, sid: str) -> bool:
    """Whether the session has stopped (its log will not grow)."""
    return (await session(runtime, sid)).state == "stopped"


async def read_log(runtime: Runtime, sid: str, *, after: int, upto: int) -> AsyncIterator[list[Record]]:
    """The session's records ``after < seq <= upto``, in chunks (yielding to other tasks in between)."""
    s = await session(runtime, sid)
    cursor = after
    while cursor < upto:
        try:
            chunk = await s.journal.read_async(cursor, min(_LOG_CHUNK, upto - cursor))
        except LogError as exc:
            raise StorageUnavailable(f"cannot read the log of session {sid}: {exc}") from exc
        if not chunk:
            return
        yield chunk
        cursor = chunk[-1].entry.seq
        await trio.lowlevel.checkpoint()
