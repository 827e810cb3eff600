"""Rehearse a recorded session log through the conductor: does it ask for what the live session wrote?

The live session's decisions are :class:`engine.conductor.Conductor`'s, and every input it had is in the
log: the commands (``turn.requested``, ``interrupt.requested``, ``session.stop_requested``,
``session.shutdown``), the observations (CLI lines, ``process.spawned``, ``prompt.written``,
``process.exited``, ...) and the time (each entry's ``ts``). :func:`rehearse` feeds them, in order, to a
fresh conductor — polling it at each entry's time, as the live timer and readers did — and checks that
every entry the conductor decides (``stream.ended`` with its outcome, reason and timing; ``timeout``;
``stream.stalled``; ``interrupt.escalated``; ``process.exited``; ``session.stopped`` ...) is the entry the
log holds, in the same order. Sans-IO: entries in, a list of :class:`Mismatch` out.

Two commands write no entry of their own and are recognised by the ends they cause: a storage failure
(``stream.ended`` "storage failed: ...") and a bug in the session's task ("internal error in the
session: ..."). A ``session.recovered`` entry starts a new conductor, as the restarted server did; what the
crashed one would still have written is not expected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import msgspec

from turnstile.engine.conductor import Conductor, Limits, Step
from turnstile.engine.fold import SessionFold
from turnstile.engine.log import (
    AnyEntry,
    CliDecodeError,
    CliLine,
    CliOversized,
    Entry,
    InterruptEscalated,
    InterruptRequested,
    LogDropped,
    LogRepaired,
    ProcessExited,
    ProcessSpawned,
    ProcessSpawnFailed,
    PromptWritten,
    SessionCreated,
    SessionRecovered,
    SessionShutdown,
    SessionStopped,
    SessionStopRequested,
    Stderr,
    StreamEnded,
    StreamStalled,
    Timeout,
    TurnRequested,
    UnknownEntry,
    kind_of,
)

__all__ = ["Mismatch", "rehearse"]

_STORAGE = "storage failed: "
_BUG = "internal error in the session: "
_OUTPUT = (CliLine, CliDecodeError, CliOversized, Stderr, LogRepaired, LogDropped, UnknownEntry)


class Mismatch(msgspec.Struct, frozen=True, kw_only=True):
    """A recorded entry the conductor did not ask for (``expected`` is what it asked for instead)."""

    seq: int
    recorded: str
    expected: str | None


def _key(entry: Entry) -> tuple[object, ...]:
    """What must agree between a decided entry and the recorded one (seq and ts aside)."""
    builtins = msgspec.to_builtins(entry)
    builtins.pop("seq", None)
    builtins.pop("ts", None)
    if isinstance(entry, ProcessSpawned):
        builtins.pop("argv", None)
    return (kind_of(entry), msgspec.json.encode(builtins, order="sorted"))


def rehearse(entries: Iterable[AnyEntry], limits: Limits | None = None) -> list[Mismatch]:
    """Feed a session's log to a fresh conductor (with the live session's ``limits``); the mismatches."""
    fold = SessionFold()
    conductor = Conductor(fold, limits)
    expected: deque[Entry] = deque()
    mismatches: list[Mismatch] = []

    def take(step: Step) -> None:
        # A decision not yet in the log is asked for again at the next poll (the live driver appends
        # it at once; here only the recorded entry is folded): keep one of each.
        waiting = {_key(e) for e in expected}
        expected.extend(e for e in step.entries if _key(e) not in waiting)

    def poll(now: float) -> None:
        for _ in range(64):
            step = conductor.poll(now)
            if not step:
                return
            take(step)
            if step.entries:
                return  # what follows from them comes once the log shows them

    for entry in entries:
        if isinstance(entry, UnknownEntry) or entry.ts is None:
            continue
        now = entry.ts
        poll(now)
        if isinstance(entry, SessionCreated):
            conductor.session_id = entry.session_id
        elif isinstance(entry, SessionRecovered):
            # The server restarted: a new conductor over the same fold; the old one's plans died with it.
            expected.clear()
            conductor = Conductor(fold, limits, conductor.session_id)
            take(conductor.recover(stopped=False))
        elif isinstance(entry, TurnRequested):
            take(conductor.submit(entry.prompt, now)[1])
        elif isinstance(entry, InterruptRequested) and entry.stream is not None:
            take(conductor.interrupt(entry.stream, entry.by, entry.request_id, now))
        elif isinstance(entry, SessionStopRequested):
            take(conductor.stop(entry.reason, now))
        elif isinstance(entry, SessionShutdown):
            take(conductor.shutdown(entry.reason, now))
        elif isinstance(entry, ProcessSpawned):
            take(conductor.spawned(entry.pid, entry.argv, warm=entry.warm, resume=entry.resume, now=now))
        elif isinstance(entry, ProcessSpawnFailed) and not (expected and _key(expected[0]) == _key(entry)):
            take(conductor.spawn_failed(entry.error, now))
        elif isinstance(entry, PromptWritten) and entry.stream is not None:
            take(conductor.prompt_written(entry.stream, entry.pid, entry.bytes, now))
        elif isinstance(entry, ProcessExited):
            take(conductor.exited(entry.pid, entry.returncode, entry.stderr_tail, now))
        elif isinstance(entry, StreamEnded) and not (expected and _key(expected[0]) == _key(entry)):
            if entry.reason.startswith(_STORAGE):
                cause = entry.reason[len(_STORAGE) :].split("; the turn was ended", 1)[0]
                take(conductor.storage_failed(cause, now))
            elif entry.reason.startswith(_BUG):
                take(conductor.fail(entry.reason, now))
        if not isinstance(entry, _OUTPUT) and not isinstance(entry, SessionCreated):
            if expected and _key(expected[0]) == _key(entry):
                expected.popleft()
            else:
                head = expected[0] if expected else None
                mismatches.append(
                    Mismatch(
                        seq=entry.seq,
                        recorded=msgspec.json.encode(entry).decode(),
                        expected=msgspec.json.encode(head).decode() if head is not None else None,
                    )
                )
        conductor.apply(entry, None)
        for follow in conductor.settle() if fold.unended() else ():
            if not any(
                isinstance(e, StreamEnded) and isinstance(follow, StreamEnded) and e.stream == follow.stream
                for e in expected
            ):
                expected.append(follow)
        poll(now)  # what the live driver decided right after appending it
    return mismatches


# (entries the conductor decides, for readers of this module)
DECIDED = (
    StreamEnded,
    Timeout,
    StreamStalled,
    InterruptEscalated,
    ProcessExited,
    SessionStopped,
    PromptWritten,
    ProcessSpawned,
)
