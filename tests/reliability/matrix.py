"""The fault matrix: every fault x pool size x subscriber kind, checked against the four invariants.

One *run* of a (fault, pool size) pair multiplexes every subscriber kind over three sessions that all
suffer the same fault at once:

============ ==========================================================================================
kind         what it is
============ ==========================================================================================
``none``     session *quiet*: the turn is started with a plain POST and nobody listens; afterwards a
             late reader gets the whole history and the terminal entry
``one``      session *solo*: exactly one subscriber, the ``POST .../turns`` that *is* the SSE stream
``three``    session *crowd*: three live subscribers — the POST-as-SSE, the session's SSE stream and a
             WebSocket subscription, all opened before the turn's first entry
``resume``   session *crowd*: an SSE reader that drops its connection after the first event and
             resumes with ``Last-Event-ID``, and a WebSocket turn subscription that does the same and
             resubscribes with ``after``
``stall``    session *crowd*: an SSE reader that stops reading after the first event until every other
             reader is done (the server may drop it; it then resumes) — it must not slow anyone down
============ ==========================================================================================

Every kind of a run counts as one matrix *cell*; a cell *holds* when all of these hold for it:

* exactly one ``stream.ended`` per stream in the log, and every subscriber that stayed or resumed
  received it — exactly the log's entries, in order, each once, byte-for-byte the same JSON;
* the log's seqs are 1..N with no gap, and folding it offline (``turnstile.engine.replay``) gives every stream
  the outcome the server reports (``GET /v1/sessions/{sid}``) and the log's terminal entry says;
* the fault turn's outcome is the expected one (and its evidence — e.g. ``cli.decode_error`` — is in
  the log);
* the server still answers ``/healthz`` and runs a new turn to ``completed`` (on the same session when
  the fault was the turn's, and on a fresh session);
* after the server shut down, no process that it spawned is alive (none below this test process, none
  in the data directory's ledger).

With ``TURNSTILE_RELIABILITY_FULL=1`` the tests run each subscriber kind in a run of its own instead
(the full cartesian product; ``bench/soak.py --matrix`` does the same).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio
from httpx_sse import aconnect_sse

from tests.procs import descendants, ledger_alive, leftovers_after
from tests.reliability.clients import (
    Received,
    check_log,
    check_subscriber,
    fetch_log,
    read_sse,
    read_ws,
    until,
    wait_turn_ended,
)
from tests.reliability.servers import (
    ODD_LINES,
    Live,
    ServerProcess,
    inproc_server,
    runtime_config,
    sim_wrapper,
    wait_healthy,
)
from turnstile.engine.log import CliDecodeError, CliLine, cli_bytes, decode_entry, raw_bytes

__all__ = [
    "FAULTS",
    "KINDS",
    "POOL_SIZES",
    "CellResult",
    "Fault",
    "run_cell",
]

KINDS = ("none", "one", "three", "resume", "stall")
POOL_SIZES = (0, 1, 4)
CELL_LIMIT_S = 120.0
READ_LIMIT_S = 60.0
HANG_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Fault:
    """One row of the matrix."""

    name: str
    title: str
    directive: str = ""
    model: str | None = None
    expect: tuple[str, ...] = ("failed",)
    reason: str | None = None
    evidence: str | None = None
    interrupt: bool = False
    mode: str = "inproc"  # inproc | sigkill | sigterm | disk_full | read_only
    runtime: tuple[tuple[str, Any], ...] = ()
    same_session: bool = True
    kill_agent: bool = False  # the harness SIGKILLs the agent's process group mid-turn
    agent: str = "sim"  # sim | claude (the real CLI against tests/fakeapi.py)
    replies: Callable[[], list[Any]] | None = None  # the fake model API's replies to the fault turn
    lossless: tuple[bytes, ...] = ()  # stdout lines that must be in the log byte for byte

    @property
    def prompt(self) -> str:
        return f"fault {self.name} [[sim {self.directive}]]" if self.directive else f"fault {self.name}"


_HANG = (("idle_timeout_s", HANG_TIMEOUT_S),)

FAULTS: tuple[Fault, ...] = (
    Fault("crash_start", "agent crashes at start (`--crash-at-start`)", model="fault-crash-at-start",
          expect=("failed",), same_session=False),
    Fault("crash_mid", "agent SIGKILLed mid-turn (`kill=mid`)", "kill=mid", reason="signal",
          evidence="process.exited"),
    Fault("crash_exit1", "agent exits 1 mid-turn (`crash=mid`)", "crash=mid", evidence="process.exited"),
    Fault("hang_start", "agent silent from the start (`--slow-start`): first-event timeout",
          model="fault-slow-start", expect=("timed_out",), evidence="timeout",
          runtime=(("first_event_timeout_s", HANG_TIMEOUT_S),), same_session=False),
    Fault("hang_first", "hang before the first token (`hang=first`)", "hang=first", expect=("timed_out",),
          evidence="timeout", runtime=_HANG),
    Fault("hang_mid", "hang mid-turn (`hang=mid`)", "hang=mid", expect=("timed_out",), evidence="timeout",
          runtime=_HANG),
    Fault("api_error", "API error 500, no retries (`api_error=500 retries=0`)", "api_error=500 retries=0",
          reason="500"),
    Fault("garbage", "garbage lines (`garbage`)", "garbage", expect=("completed",),
          evidence="cli.decode_error"),
    Fault("oversized", "oversized line, 200 kB over a 64 KiB limit (`oversized=200000`)",
          "oversized=200000", expect=("completed",), evidence="cli.oversized_line",
          runtime=(("max_line", 65536),)),
    Fault("truncate", "truncated final line, then exit 0 (`truncate`)", "truncate",
          evidence="cli.decode_error"),
    Fault("nonutf8", "non-UTF-8 bytes (`nonutf8`)", "nonutf8", expect=("completed",),
          evidence="cli.decode_error"),
    Fault("exit0", "exit 0 without a result (`exit0`)", "exit0", evidence="process.exited"),
    Fault("odd_lines", "odd stdout lines at start-up: bad JSON, binary, BOM, 3000-deep nesting...",
          model="fault-odd-lines", expect=("completed",), evidence="cli.decode_error", lossless=ODD_LINES),
    Fault("stderr_flood", "stderr flood, 5000 lines (`stderr_flood=5000`)", "stderr_flood=5000",
          expect=("completed",), evidence="stderr"),
    Fault("interrupt", "interrupt, honoured (`hang=mid` + interrupt)", "hang=mid", expect=("cancelled",),
          interrupt=True, evidence="interrupt.requested"),
    Fault("interrupt_ignored", "interrupt, ignored: escalated to SIGTERM (`hang=mid ignore_interrupt`)",
          "hang=mid ignore_interrupt", expect=("cancelled",), interrupt=True,
          evidence="interrupt.escalated"),
    Fault("server_sigkill", "server SIGKILLed mid-turn, restarted", "hang=mid", expect=("failed",),
          reason="server restarted", mode="sigkill", evidence="session.recovered"),
    Fault("server_sigterm", "server SIGTERMed mid-turn (graceful shutdown)", "hang=mid",
          expect=("cancelled",), reason="server shutting down", mode="sigterm"),
    Fault("disk_full", "data directory full mid-turn (512 KiB tmpfs filled up), turns interrupted",
          "hang=mid", expect=("failed", "cancelled"), interrupt=True, mode="disk_full"),
    Fault("read_only", "data directory read-only at start (tmpfs mounted `ro`), then writable",
          "hang=mid", expect=("cancelled",), interrupt=True, mode="read_only"),
)  # fmt: skip


def _slow_text() -> list[Any]:
    from tests.fakeapi import Text

    return [Text("word " * 80, chunks=80, token_delay=0.05)]


def _api_error() -> list[Any]:
    from tests.fakeapi import ApiError

    # x-should-retry: false, or the CLI retries for minutes.
    return [ApiError(status=500, message="fake overload", should_retry=False)]


def _hang(first: bool) -> Callable[[], list[Any]]:
    def replies() -> list[Any]:
        from tests.fakeapi import Hang

        return [Hang(send_message_start=not first)]

    return replies


#: The faults the fake model API (or the harness) can cause in the REAL Claude Code CLI.
REAL_FAULTS: tuple[Fault, ...] = (
    Fault("crash_mid", "CLI SIGKILLed mid-stream (process group)", agent="claude", replies=_slow_text,
          kill_agent=True, reason="signal", evidence="process.exited"),
    Fault("hang_first", "API sends nothing after the headers: idle timeout", agent="claude",
          replies=_hang(True), expect=("timed_out",), evidence="timeout", runtime=_HANG),
    Fault("hang_mid", "API hangs after message_start: idle timeout", agent="claude", replies=_hang(False),
          expect=("timed_out",), evidence="timeout", runtime=_HANG),
    Fault("api_error", "API error 500 (x-should-retry: false)", agent="claude", replies=_api_error,
          reason="500"),
    Fault("interrupt", "interrupt mid-stream, honoured", agent="claude", replies=_slow_text,
          expect=("cancelled",), interrupt=True, evidence="interrupt.requested"),
)  # fmt: skip

FAULTS_BY_NAME = {f.name: f for f in FAULTS}


@dataclass
class CellResult:
    """One run: a fault at a pool size, with the subscriber kinds it multiplexed."""

    fault: str
    pool_size: int
    kinds: tuple[str, ...]
    problems: dict[str, list[str]] = field(default_factory=dict)  # kind -> problems ("*": all)
    outcomes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None

    def held(self, kind: str) -> bool:
        return not self.problems.get("*") and not self.problems.get(kind)

    def all_problems(self) -> list[str]:
        out = [f"[all] {p}" for p in self.problems.get("*", [])]
        for kind in self.kinds:
            out += [f"[{kind}] {p}" for p in self.problems.get(kind, [])]
        return out


# --- one run --------------------------------------------------------------------------------------------


@dataclass
class _Session:
    role: str  # crowd | solo | quiet
    sid: str
    tid: str | None = None
    started: trio.Event = field(default_factory=trio.Event)
    readers: dict[str, Received] = field(default_factory=dict)  # name -> what it got
    reader_kind: dict[str, str] = field(default_factory=dict)


def _roles(kinds: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    roles: dict[str, tuple[str, ...]] = {}
    crowd = tuple(k for k in kinds if k in ("three", "resume", "stall"))
    if crowd:
        roles["crowd"] = crowd
    if "one" in kinds:
        roles["solo"] = ("one",)
    if "none" in kinds:
        roles["quiet"] = ("none",)
    return roles


class _Run:
    def __init__(self, fault: Fault, kinds: tuple[str, ...], result: CellResult) -> None:
        self.fault = fault
        self.kinds = kinds
        self.result = result
        self.sessions: dict[str, _Session] = {}
        self.release = trio.Event()  # lets the stalled reader go on
        self.first_events: dict[str, trio.Event] = {}

    def problem(self, kind: str, text: str) -> None:
        self.result.problems.setdefault(kind, []).append(text)

    def kinds_of(self, role: str) -> tuple[str, ...]:
        return _roles(self.kinds).get(role, ())

    # --- sessions, turns and readers ------------------------------------------------------------------

    async def create_sessions(self, c: httpx.AsyncClient) -> None:
        options = {"model": self.fault.model} if self.fault.model else None
        for role in _roles(self.kinds):
            r = await c.post("/v1/sessions", json=options or {})
            if r.status_code != 201:
                raise AssertionError(f"creating the {role} session: {r.status_code} {r.text}")
            self.sessions[role] = _Session(role, r.json()["id"])

    def _reader(self, s: _Session, name: str, kind: str) -> Received:
        rec = Received(name=f"{s.role}/{name}")
        s.readers[name] = rec
        s.reader_kind[name] = kind
        self.first_events[rec.name] = trio.Event()
        return rec

    def _got(self, rec: Received) -> None:
        self.first_events[rec.name].set()

    async def start_turns(self, nursery: trio.Nursery, live: Live, c: httpx.AsyncClient) -> None:
        """Open the readers and start every session's fault turn; returns once every turn has an id."""
        prompt = self.fault.prompt
        for role, s in self.sessions.items():
            kinds = self.kinds_of(role)
            turns_url = f"/v1/sessions/{s.sid}/turns"

            def url_of(s: _Session = s) -> str:
                return f"/v1/sessions/{s.sid}/turns/{s.tid}/events"

            if "three" in kinds:
                # Two readers of the whole session, open before the turn exists...
                rec = self._reader(s, "sse-session", "three")
                nursery.start_soon(self._read_session_sse, c, s, rec)
                if live.ws:
                    rec = self._reader(s, "ws-session", "three")
                    nursery.start_soon(self._read_ws, live.ws, s, rec)
            if "three" in kinds or "one" in kinds:
                # ...and the POST that starts the turn and is its SSE stream.
                rec = self._reader(s, "sse-post", "three" if "three" in kinds else "one")

                def first(url: str = turns_url) -> Any:
                    return aconnect_sse(c, "POST", url, json={"prompt": prompt})

                def opened(resp: httpx.Response, s: _Session = s) -> None:
                    if s.tid is None:
                        s.tid = resp.headers.get("x-turn-id")
                        s.started.set()

                nursery.start_soon(self._read_post, c, s, rec, url_of, first, opened)
            else:
                r = await c.post(turns_url, json={"prompt": prompt})
                if r.status_code != 202:
                    raise AssertionError(f"starting the {role} turn: {r.status_code} {r.text}")
                s.tid = r.json()["turn_id"]
                s.started.set()
        with trio.fail_after(30):
            for s in self.sessions.values():
                await s.started.wait()
        for role, s in self.sessions.items():
            kinds = self.kinds_of(role)
            if "resume" in kinds:
                rec = self._reader(s, "sse-resume", "resume")
                nursery.start_soon(self._read_turn_sse, c, s, rec, {"disconnect_after": 1})
                if live.ws:
                    rec = self._reader(s, "ws-resume", "resume")
                    nursery.start_soon(self._read_ws_turn, live.ws, s, rec)
            if "stall" in kinds:
                rec = self._reader(s, "sse-stall", "stall")
                nursery.start_soon(
                    self._read_turn_sse, c, s, rec, {"stall_after": 1, "release": self.release}
                )

    async def _read_post(
        self,
        c: httpx.AsyncClient,
        s: _Session,
        rec: Received,
        url_of: Callable[[], str],
        first: Callable[[], Any],
        opened: Callable[[httpx.Response], None],
    ) -> None:
        await read_sse(c, url_of, rec, first=first, on_open=opened, on_event=self._got, deadline=READ_LIMIT_S)

    async def _read_session_sse(self, c: httpx.AsyncClient, s: _Session, rec: Received) -> None:
        await s.started.wait()
        await read_sse(
            c, f"/v1/sessions/{s.sid}/events", rec, stream=s.tid, on_event=self._got, deadline=READ_LIMIT_S
        )

    async def _read_ws(self, ws: str, s: _Session, rec: Received) -> None:
        await s.started.wait()
        await read_ws(ws, rec, session=s.sid, stream=s.tid, on_event=self._got, deadline=READ_LIMIT_S)

    async def _read_ws_turn(self, ws: str, s: _Session, rec: Received) -> None:
        await read_ws(
            ws,
            rec,
            session=s.sid,
            stream=s.tid,
            subscribe_turn=True,
            disconnect_after=1,
            on_event=self._got,
            deadline=READ_LIMIT_S,
        )

    async def _read_turn_sse(
        self, c: httpx.AsyncClient, s: _Session, rec: Received, kw: dict[str, Any]
    ) -> None:
        await read_sse(
            c,
            f"/v1/sessions/{s.sid}/turns/{s.tid}/events",
            rec,
            stream=s.tid,
            on_event=self._got,
            deadline=READ_LIMIT_S,
            **kw,
        )

    # --- waiting for the fault --------------------------------------------------------------------------

    async def hang_reached(self, c: httpx.AsyncClient, s: _Session, limit_s: float = 30.0) -> None:
        """Wait until the turn has streamed a text delta (the point where ``hang=mid`` stops)."""
        with trio.fail_after(limit_s):
            while True:
                _raw, entries = await fetch_log(c, s.sid)
                if any(
                    e.get("stream") == s.tid
                    and e.get("kind") == "cli"
                    and e.get("type") == "stream_event"
                    and e.get("msg", {}).get("event", {}).get("type") == "content_block_delta"
                    for e in entries
                ):
                    return
                await trio.sleep(0.03)

    async def readers_going(self, limit_s: float = 30.0) -> None:
        """Wait until every reader has received its first event."""
        with trio.fail_after(limit_s):
            for ev in self.first_events.values():
                await ev.wait()

    async def interrupt_all(self, c: httpx.AsyncClient) -> None:
        for s in self.sessions.values():
            await self.hang_reached(c, s)
            r = await c.post(f"/v1/sessions/{s.sid}/turns/{s.tid}/interrupt", json={})
            if r.status_code != 202:
                self.problem("*", f"interrupt of {s.role}: {r.status_code} {r.text}")

    async def kill_agents(self, c: httpx.AsyncClient) -> None:
        """SIGKILL each session's agent (its whole process group) once its turn is streaming."""
        for s in self.sessions.values():
            await self.hang_reached(c, s)
            pid = (await c.get(f"/v1/sessions/{s.sid}")).json().get("pid")
            if pid is None:
                self.problem("*", f"{s.role}: no agent pid while the turn streams")
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    async def action(self, c: httpx.AsyncClient) -> None:
        """The fault's own action for in-process cells: interrupt, kill the agent, or nothing."""
        if self.fault.interrupt:
            await self.interrupt_all(c)
        elif self.fault.kill_agent:
            await self.kill_agents(c)

    async def wait_ended(self, c: httpx.AsyncClient) -> None:
        for s in self.sessions.values():
            assert s.tid is not None
            await wait_turn_ended(c, s.sid, s.tid, limit_s=60)

    # --- checks -------------------------------------------------------------------------------------------

    async def check(self, c: httpx.AsyncClient) -> dict[str, list[dict[str, Any]]]:
        """Check every session's log and readers; returns the logs (entries) by role."""
        logs: dict[str, list[dict[str, Any]]] = {}
        for role, s in self.sessions.items():
            kinds = self.kinds_of(role)
            raw, entries = await fetch_log(c, s.sid)
            logs[role] = entries
            info = (await c.get(f"/v1/sessions/{s.sid}")).json()
            for p in check_log(raw, entries, info):
                for k in kinds:
                    self.problem(k, f"{role}: {p}")
            ends = [e for e in entries if e.get("kind") == "stream.ended" and e.get("stream") == s.tid]
            if ends:
                end = ends[0]
                self.result.outcomes.append(end["outcome"])
                bad = end["outcome"] not in self.fault.expect
                if self.fault.reason and self.fault.reason not in (end.get("reason") or ""):
                    bad = True
                if bad:
                    for k in kinds:
                        self.problem(
                            k,
                            f"{role}: outcome {end['outcome']}/{end.get('reason')!r}, "
                            f"expected {'|'.join(self.fault.expect)}"
                            + (f" with {self.fault.reason!r}" if self.fault.reason else ""),
                        )
            if self.fault.evidence and not any(
                e.get("kind") == self.fault.evidence and e.get("stream") in (s.tid, None) for e in entries
            ):
                for k in kinds:
                    self.problem(k, f"{role}: no {self.fault.evidence} entry in the log")
            if self.fault.lossless:
                kept = _cli_bytes_in(raw)
                missing = [ln[:40] for ln in self.fault.lossless if ln not in kept]
                if missing:
                    for k in kinds:
                        self.problem(k, f"{role}: stdout lines missing from the log: {missing}")
            for name, rec in s.readers.items():
                whole = name in ("sse-session", "ws-session")
                for p in check_subscriber(rec, entries, stream=s.tid, whole_session=whole):
                    self.problem(s.reader_kind[name], p)
            if role == "quiet":
                # Nobody listened; a reader arriving late gets the whole history and the terminal entry.
                late = Received(name="quiet/late")
                await read_sse(
                    c, f"/v1/sessions/{s.sid}/turns/{s.tid}/events", late, stream=s.tid, deadline=15
                )
                for p in check_subscriber(late, entries, stream=s.tid):
                    self.problem("none", p)
        return logs

    async def still_works(self, c: httpx.AsyncClient) -> None:
        """``/healthz`` answers; a new turn completes on the same session and on a new one."""
        r = await c.get("/healthz")
        if r.status_code != 200:
            self.problem("*", f"healthz answered {r.status_code}")
        targets: list[tuple[str, str]] = []
        if self.fault.same_session:
            for role, s in self.sessions.items():
                targets.append((role, s.sid))
        r = await c.post("/v1/sessions", json={})
        if r.status_code != 201:
            self.problem("*", f"creating a fresh session after the fault: {r.status_code} {r.text}")
        else:
            targets.append(("fresh", r.json()["id"]))
        for role, sid in targets:
            outcome, problems = await run_turn(c, sid, "are you still there?")
            if outcome == "failed" and await _resume_refused(c, sid):
                # Documented: an agent that lost the conversation (e.g. killed before it saved it) fails
                # the turn that resumes it; the next one starts afresh and must complete.
                outcome, more = await run_turn(c, sid, "and now?")
                problems += more
            if outcome != "completed" or problems:
                kinds = self.kinds_of(role) or ("*",)
                for k in kinds:
                    self.problem(k, f"new turn on {role}: {outcome} {problems}")


async def _resume_refused(c: httpx.AsyncClient, sid: str) -> bool:
    _raw, entries = await fetch_log(c, sid)
    ends = [e for e in entries if e.get("kind") == "stream.ended"]
    return bool(ends) and "could not resume" in (ends[-1].get("reason") or "")


def _cli_bytes_in(raw_log: bytes) -> set[bytes]:
    """Every stdout line the log keeps: CLI lines verbatim, decode errors' raw bytes."""
    kept: set[bytes] = set()
    for line in raw_log.splitlines():
        if not line.strip():
            continue
        entry = decode_entry(line)
        if isinstance(entry, CliLine):
            kept.add(cli_bytes(entry))
        elif isinstance(entry, CliDecodeError):
            kept.add(raw_bytes(entry.raw, entry.encoding))
    return kept


async def run_turn(
    c: httpx.AsyncClient, sid: str, prompt: str, limit_s: float = 60
) -> tuple[str | None, list[str]]:
    """Start a turn (POST as SSE), read it to its end; return its outcome and the log's problems."""
    rec = Received(name="turn")
    tid: list[str] = []

    def opened(resp: httpx.Response) -> None:
        if not tid and resp.headers.get("x-turn-id"):
            tid.append(resp.headers["x-turn-id"])

    def first() -> Any:
        return aconnect_sse(c, "POST", f"/v1/sessions/{sid}/turns", json={"prompt": prompt})

    def url_of() -> str:
        return f"/v1/sessions/{sid}/turns/{tid[0] if tid else 'unknown'}/events"

    with trio.move_on_after(limit_s):
        await read_sse(c, url_of, rec, first=first, on_open=opened, deadline=limit_s)
    problems = list(rec.errors)
    raw, entries = await fetch_log(c, sid)
    info = (await c.get(f"/v1/sessions/{sid}")).json()
    problems += check_log(raw, entries, info)
    if tid:
        problems += check_subscriber(rec, entries, stream=tid[0])
    outcome = rec.terminal.get("outcome") if rec.terminal else None
    return outcome, problems


# --- the cell runners -------------------------------------------------------------------------------------


async def run_cell(fault: Fault, pool_size: int, tmp: Path, kinds: tuple[str, ...] = KINDS) -> CellResult:
    """Run one (fault, pool size) with the given subscriber kinds multiplexed; never raises for a broken
    invariant (it is recorded in :attr:`CellResult.problems`), only for a harness error."""
    label = fault.name if fault.agent == "sim" else f"{fault.agent}:{fault.name}"
    result = CellResult(fault=label, pool_size=pool_size, kinds=kinds)
    started = time.monotonic()
    before = set(descendants())
    run = _Run(fault, kinds, result)
    try:
        with trio.fail_after(CELL_LIMIT_S):
            if fault.agent == "claude":
                await _cell_realcli(run, pool_size, tmp)
            elif fault.mode in ("sigkill", "sigterm"):
                await _cell_process(run, pool_size, tmp)
            elif fault.mode in ("disk_full", "read_only"):
                await _cell_storage(run, pool_size, tmp)
            else:
                await _cell_inproc(run, pool_size, tmp)
    except _Skip as exc:
        result.skipped = str(exc)
    except trio.TooSlowError:
        run.problem("*", f"the cell did not finish within {CELL_LIMIT_S}s (something is stuck)")
    finally:
        left = leftovers_after(before)
        if left:
            run.problem("*", f"processes left behind: {left}")
        result.seconds = time.monotonic() - started
    return result


class _Skip(Exception):
    pass


async def _drive(run: _Run, live: Live, action: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    """Sessions, readers and turns; the fault's action; readers to the end; the stalled one last."""
    async with live.client() as c, trio.open_nursery() as outer:
        await run.create_sessions(c)
        async with trio.open_nursery() as inner:
            await run.start_turns(inner, live, c)
            await action(c)
            await run.wait_ended(c)
            # Let everyone but the stalled reader finish, then release it.
            with trio.move_on_after(READ_LIMIT_S):
                await until(
                    lambda: all(
                        rec.terminal is not None or rec.errors or name == "sse-stall"
                        for s in run.sessions.values()
                        for name, rec in s.readers.items()
                    )
                )
            run.release.set()
        outer.cancel_scope.cancel()


async def _cell_inproc(run: _Run, pool_size: int, tmp: Path) -> None:
    fault = run.fault
    data = tmp / "data"
    rc = runtime_config(data, pool_size=pool_size, wrapper=sim_wrapper(tmp / "bin"), **dict(fault.runtime))
    async with inproc_server(rc) as live:
        await _drive(run, live, run.action)
        async with live.client() as c:
            await run.check(c)
            await run.still_works(c)
    _check_ledger(run, data)


async def _cell_realcli(run: _Run, pool_size: int, tmp: Path) -> None:
    """The real Claude Code CLI, offline against the fake model API, which (with the harness) causes
    the fault; three sessions at once, so the API gets the fault reply three times, then answers "ok"."""
    from tests.fakeapi import FakeModelAPI
    from tests.realcli import claude_binary_or_skip, offline_cli_env
    from turnstile.engine.runtime.config import AgentConfig

    fault = run.fault
    assert fault.replies is not None
    binary = claude_binary_or_skip()
    with FakeModelAPI() as api:
        for _ in _roles(run.kinds):
            api.push(*fault.replies())
        workdir = tmp / "wd"
        workdir.mkdir()
        agent = AgentConfig(
            agent="claude",
            binary=binary,
            cwd=str(workdir),
            allowed_tools=("Bash",),
            env=offline_cli_env(api, tmp),
            inherit_env=False,
        )
        data = tmp / "data"
        rc = runtime_config(data, pool_size=pool_size, **dict(fault.runtime))
        rc = msgspec.structs.replace(rc, default_agent=agent)
        async with inproc_server(rc) as live:
            await _drive(run, live, run.action)
            async with live.client() as c:
                await run.check(c)
                await run.still_works(c)
    _check_ledger(run, data)


def _check_ledger(run: _Run, data: Path) -> None:
    alive = ledger_alive(data)
    if alive:
        run.problem("*", f"the ledger lists live processes after shutdown: {alive}")


async def _cell_process(run: _Run, pool_size: int, tmp: Path) -> None:
    """SIGKILL (then restart) or SIGTERM the server process while every turn hangs mid-stream."""
    fault = run.fault
    sp = ServerProcess(data_dir=tmp / "data", pool_size=pool_size)
    sp.start()
    try:
        await wait_healthy(sp.base)

        async def action(c: httpx.AsyncClient) -> None:
            for s in run.sessions.values():
                await run.hang_reached(c, s)
            await run.readers_going()
            if fault.mode == "sigkill":
                assert sp.proc is not None
                os.killpg(sp.proc.pid, signal.SIGKILL)
                sp.wait(10)
            else:
                sp.signal(signal.SIGTERM)
                rc = await sp.wait_async(30)
                if rc != 0:
                    run.problem("*", f"the server exited {rc} on SIGTERM: {sp.stderr_tail()}")
                # Every reader that stayed must have its terminal entry before the server went away.
                for s in run.sessions.values():
                    for name, rec in s.readers.items():
                        if name in ("sse-post", "sse-session", "ws-session") and rec.terminal is None:
                            run.problem(
                                s.reader_kind[name],
                                f"{rec.name}: the server stopped without sending it the terminal entry",
                            )
            sp.start()
            await wait_healthy(sp.base)

        await _drive(run, sp.live(), action)
        async with sp.live().client() as c:
            await run.check(c)
            await run.still_works(c)
    finally:
        code = sp.stop()
        if code not in (0, None):
            run.problem("*", f"the server exited {code} on SIGTERM at the end: {sp.stderr_tail()}")
    _check_ledger(run, sp.data_dir)


def _mount_tmpfs(path: Path, size: str, *, read_only: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise _Skip(f"cannot mount a tmpfs for the data directory (needs root): {exc}") from exc


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True, timeout=10)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10, check=False)


def _fill(path: Path) -> Path:
    """Fill the file system holding ``path``; returns the filler file."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * 4096
        with contextlib.suppress(OSError):
            while True:
                f.write(block)
    return filler


# A prompt bigger than a page: its turn.requested cannot fit in the slack of a log file's last tmpfs page.
_BIG_PROMPT = "while the disk is full " + "x" * 8192


async def _cell_storage(run: _Run, pool_size: int, tmp: Path) -> None:
    """Storage faults on a tmpfs data directory.

    ``disk_full``: the file system fills up while every turn hangs mid-stream; a turn asked for then is
    refused (503 ``storage_unavailable``), readiness says so, the session whose append failed reports its
    ``log_error`` and its turn ends ``failed`` ("storage failed"): its live readers are told at once (a
    notice, then 503 until there is space) and nothing unwritten is sent. The hanging turns are
    interrupted: ``cancelled`` where the small appends still fit in the slack of the log's last page,
    else ``failed`` ("storage failed") too. Once there is space again the backlog is stored first, the
    readers resume and get the real terminal entries, and the same sessions go on.
    ``read_only``: the server starts on a read-only data directory (a tmpfs cannot be remounted read-only
    while logs are open for writing: the kernel answers EBUSY); it must say so and refuse sessions with
    503 until the directory is writable again, then work normally.
    Both: after a restart every log reads back whole, equal to what was served (nothing corrupted).
    """
    fault = run.fault
    data = tmp / "data"
    _mount_tmpfs(data, "512k", read_only=fault.mode == "read_only")
    try:
        rc = runtime_config(data, pool_size=pool_size, wrapper=sim_wrapper(tmp / "bin"))
        before_logs: dict[str, list[dict[str, Any]]] = {}
        async with inproc_server(rc) as live:
            if fault.mode == "read_only":
                async with live.client() as c:
                    await _check_read_only(run, c)
                _remount(data, "rw")
                async with live.client() as c:
                    await _wait_ready(run, c)

            async def action(c: httpx.AsyncClient) -> None:
                if fault.mode == "read_only":
                    await run.interrupt_all(c)
                    return
                for s in run.sessions.values():
                    await run.hang_reached(c, s)
                filler = _fill(data)
                try:
                    await _check_disk_full(run, c)
                    await run.interrupt_all(c)
                    await run.wait_ended(c)
                finally:
                    filler.unlink()
                await _wait_ready(run, c)  # by itself: the backlog is retried on a timer

            await _drive(run, live, action)
            async with live.client() as c:
                if fault.mode == "disk_full":
                    await _check_storage_failed(run, c)
                await run.check(c)
                await run.still_works(c)
                for role, s in run.sessions.items():
                    before_logs[role] = (await fetch_log(c, s.sid))[1]
        # Nothing corrupted: a new server reads every log back whole, with the same entries.
        async with inproc_server(rc) as live, live.client() as c:
            for role, s in run.sessions.items():
                r = await c.get(f"/v1/sessions/{s.sid}")
                if r.status_code != 200:
                    run.problem(
                        "*", f"after a restart, session {role} is unreadable: {r.status_code} {r.text}"
                    )
                    continue
                _raw, after = await fetch_log(c, s.sid)
                old = before_logs[role]
                if after[: len(old)] != old:
                    run.problem("*", f"after a restart, the {role} log differs from what was served")
                if any(e.get("kind") == "log.repaired" for e in after):
                    run.problem("*", f"after a restart, the {role} log needed a repair")
        _check_ledger(run, data)
    finally:
        _umount(data)


def _error_code(r: httpx.Response) -> str | None:
    try:
        code = r.json().get("error", {}).get("code")
    except ValueError:
        return None
    return code if isinstance(code, str) else None


async def _check_read_only(run: _Run, c: httpx.AsyncClient) -> None:
    r = await c.get("/healthz")
    if r.status_code != 200:
        run.problem("*", f"healthz answered {r.status_code} on a read-only data directory")
    r = await c.get("/readyz")
    if r.status_code != 503 or "data" not in (r.json().get("reason") or ""):
        run.problem("*", f"readyz on a read-only data directory: {r.status_code} {r.text[:300]}")
    r = await c.post("/v1/sessions", json={})
    if (r.status_code, _error_code(r)) != (503, "storage_unavailable"):
        run.problem("*", f"a session on a read-only data directory got {r.status_code} {r.text[:300]}")


async def _wait_ready(run: _Run, c: httpx.AsyncClient, limit_s: float = 10.0) -> None:
    """Readiness comes back once the directory is writable (its checks are cached for a few seconds)."""
    with trio.move_on_after(limit_s):
        while (await c.get("/readyz")).status_code != 200:  # noqa: ASYNC110 - polling another server
            await trio.sleep(0.1)
        return
    run.problem("*", f"readyz still 503 {limit_s}s after the data directory became writable")


async def _check_disk_full(run: _Run, c: httpx.AsyncClient) -> None:
    reported = False
    for s in run.sessions.values():
        r = await c.post(f"/v1/sessions/{s.sid}/turns", json={"prompt": _BIG_PROMPT})
        if (r.status_code, _error_code(r)) != (503, "storage_unavailable"):
            run.problem("*", f"{s.role}: a turn while the disk is full got {r.status_code} {r.text[:300]}")
        info = (await c.get(f"/v1/sessions/{s.sid}")).json()
        reported = reported or bool(info.get("log_error"))
    if not reported:
        run.problem("*", "no session reports the log error that refused the turn")
    r = await c.post("/v1/sessions", json={})
    if (r.status_code, _error_code(r)) != (503, "storage_unavailable"):
        run.problem("*", f"a session while the disk is full got {r.status_code} {r.text[:300]}")
    r = await c.get("/readyz")
    if r.status_code != 503:
        run.problem("*", f"readyz answered {r.status_code} with the disk full: {r.text[:300]}")
    r = await c.get("/healthz")
    if r.status_code != 200:
        run.problem("*", f"healthz answered {r.status_code} with the disk full")


async def _check_storage_failed(run: _Run, c: httpx.AsyncClient) -> None:
    """A turn whose log could not be written ended "storage failed" (at least the one that took the big
    prompt's refusal), the others by their interrupt; the readers of a failed log were all told (a
    notice, or 503 on resuming) — the stalled one excepted: its server may have dropped it meanwhile."""
    failed = 0
    for s in run.sessions.values():
        assert s.tid is not None
        turn = (await c.get(f"/v1/sessions/{s.sid}/turns/{s.tid}")).json()
        storage = turn.get("outcome") == "failed" and "storage failed" in (turn.get("reason") or "")
        if not storage and turn.get("outcome") != "cancelled":
            run.problem("*", f"{s.role}: ended {turn.get('outcome')}/{turn.get('reason')!r}")
        if not storage:
            continue
        failed += 1
        for name, rec in s.readers.items():
            if name != "sse-stall" and not rec.notices and not rec.unavailable:
                run.problem(s.reader_kind[name], f"{rec.name}: never told that the storage failed")
    if not failed:
        run.problem("*", "no turn ended 'storage failed' although a log could not be written")


def summary_rows(results: list[CellResult]) -> list[tuple[str, dict[int, str]]]:
    """Per fault, per pool size: ``held/run`` subscriber cells (``skip`` when skipped)."""
    rows: list[tuple[str, dict[int, str]]] = []
    names = [f.name for f in FAULTS] + sorted({r.fault for r in results} - set(FAULTS_BY_NAME))
    for name in names:
        cells: dict[int, str] = {}
        for pool in sorted({r.pool_size for r in results}):
            rs = [r for r in results if r.fault == name and r.pool_size == pool]
            if not rs:
                continue
            if all(r.skipped for r in rs):
                cells[pool] = "skip"
                continue
            run = sum(len(r.kinds) for r in rs if not r.skipped)
            held = sum(1 for r in rs if not r.skipped for k in r.kinds if r.held(k))
            cells[pool] = f"{held}/{run}"
        if cells:
            rows.append((name, cells))
    return rows


def to_json(results: list[CellResult]) -> str:
    return json.dumps(
        [
            {
                "fault": r.fault,
                "pool_size": r.pool_size,
                "kinds": list(r.kinds),
                "held": {k: r.held(k) for k in r.kinds},
                "outcomes": r.outcomes,
                "seconds": round(r.seconds, 2),
                "skipped": r.skipped,
                "problems": r.all_problems(),
            }
            for r in results
        ],
        indent=1,
    )
