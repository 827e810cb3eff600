"""An in-memory, scripted agent process: the fast stand-in for tests (no fork, no pipes, no real time).

Test-only (it lives under ``tests/``): the runtime ships no second CLI. Faults are asked for with the
simulator's own prompt directives (``[[sim hang=first]]``, parsed by :func:`engine.agents.sim.parse_directives`),
so one marker syntax serves the in-memory double, the real simulator process, and the docs.

:class:`ScriptedProcess` implements :class:`engine.runtime.process.AgentProcess`. What it "prints" is
decided by a :class:`Behaviour`, which turns each stdin message into a list of actions — :class:`Out`
(stdout bytes), :class:`Err` (stderr bytes), :class:`Sleep`, :class:`Hang` (until more stdin arrives) and
:class:`Exit`. Nothing runs in a background task: whichever task waits on the process (its stdout or stderr
reader, or :meth:`ScriptedProcess.wait`) plays the actions, so the process needs no nursery of its own.
With trio's ``MockClock(autojump_threshold=0)`` timeouts of minutes take no real time.

:class:`EchoCli` is the default behaviour: a small, faithful stream-json CLI (``system/init`` every turn,
partial ``stream_event`` deltas, one ``assistant`` line, a ``result``; interrupts answered with a
``control_response`` and an ``error_during_execution`` result; stdin EOF exits 0). It honours these of
the simulator's directives: ``hang=start`` (print nothing at all), ``hang=first`` / ``hang=mid`` (stop
after ``system/init``), ``crash=mid`` / ``crash=start`` (exit 1 mid-turn with a stderr line), ``exit0``
(exit 0 mid-turn, no result), ``api_error=CODE`` (an error result), ``ttft_ms=MS`` (a pause before the
answer), ``tokens=N`` with ``token_ms=MS`` (N text deltas, each after MS), ``stderr_flood=N`` (N stderr
lines), ``garbage`` (a non-JSON line), ``ignore_interrupt``.
"""

from __future__ import annotations

import itertools
import json
import signal as signal_mod
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from turnstile.engine.agents.sim import Directives, parse_directives
from turnstile.engine.runtime.config import AgentConfig

__all__ = [
    "Action",
    "Behaviour",
    "EchoCli",
    "Err",
    "Exit",
    "Hang",
    "Out",
    "ScriptedLauncher",
    "ScriptedProcess",
    "Sleep",
]

_pids = itertools.count(7_000_001)


@dataclass(frozen=True)
class Out:
    """Bytes on stdout."""

    data: bytes


@dataclass(frozen=True)
class Err:
    """Bytes on stderr."""

    data: bytes


@dataclass(frozen=True)
class Sleep:
    """Pause (in trio time) before the next action."""

    seconds: float


@dataclass(frozen=True)
class Hang:
    """Print nothing more until something new arrives on stdin (or a signal, or EOF)."""


@dataclass(frozen=True)
class Exit:
    """Exit with ``code`` (negative: killed by that signal)."""

    code: int


Action = Out | Err | Sleep | Hang | Exit


class Behaviour(Protocol):
    """Decides what a :class:`ScriptedProcess` prints."""

    ignore_sigterm: bool

    def on_start(self, proc: ScriptedProcess) -> list[Action]:
        """Actions right after the spawn (a real CLI prints nothing: return ``[]``)."""
        ...

    def on_message(self, proc: ScriptedProcess, msg: dict[str, Any]) -> list[Action]:
        """Actions for one stdin line (already parsed)."""
        ...

    def on_eof(self, proc: ScriptedProcess) -> list[Action]:
        """Actions when stdin is closed."""
        ...


class ScriptedProcess:
    """An agent process that plays a :class:`Behaviour`'s actions. Implements ``AgentProcess``."""

    def __init__(self, behaviour: Behaviour, argv: list[str]) -> None:
        self.behaviour = behaviour
        self._pid = next(_pids)
        self._argv = argv
        self._actions: deque[Action] = deque()
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._rc: int | None = None
        self._stdin_closed = False
        self._sleep_deadline: float | None = None
        self._lock = trio.Lock()
        self._changed = trio.Event()
        self._exited = trio.Event()
        #: Every parsed stdin message, for assertions.
        self.stdin: list[dict[str, Any]] = []
        self.signals: list[int] = []
        self._actions.extend(behaviour.on_start(self))

    # --- AgentProcess -----------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """A fake pid (no OS process exists)."""
        return self._pid

    @property
    def argv(self) -> list[str]:
        """The argv the launcher was asked for."""
        return self._argv

    @property
    def returncode(self) -> int | None:
        """The exit status once exited."""
        return self._rc

    async def send(self, data: bytes) -> None:
        """Take stdin bytes: each line is parsed and handed to the behaviour."""
        await trio.lowlevel.checkpoint()
        if self._rc is not None or self._stdin_closed:
            raise trio.BrokenResourceError("the scripted process is gone")
        for line in data.splitlines():
            if not line.strip():
                continue
            msg = json.loads(line)
            self.stdin.append(msg)
            self._actions.extend(self.behaviour.on_message(self, msg))
        self._poke()

    async def close_stdin(self) -> None:
        """Close stdin: the behaviour decides what happens (usually: finish, then exit 0)."""
        await trio.lowlevel.checkpoint()
        if not self._stdin_closed and self._rc is None:
            self._stdin_closed = True
            self._actions.extend(self.behaviour.on_eof(self))
            self._poke()

    async def receive_stdout(self) -> bytes:
        """Next stdout chunk; ``b""`` once exited and drained."""
        await self._until(lambda: bool(self._stdout) or self._rc is not None)
        data = bytes(self._stdout)
        self._stdout.clear()
        return data

    async def receive_stderr(self) -> bytes:
        """Next stderr chunk; ``b""`` once exited and drained."""
        await self._until(lambda: bool(self._stderr) or self._rc is not None)
        data = bytes(self._stderr)
        self._stderr.clear()
        return data

    def signal(self, sig: int) -> None:
        """SIGTERM exits 143 (unless the behaviour ignores it), SIGINT 130, SIGKILL -9."""
        if self._rc is not None:
            return
        self.signals.append(sig)
        if sig == signal_mod.SIGKILL:
            self._exit(-9)
        elif sig == signal_mod.SIGTERM and not self.behaviour.ignore_sigterm:
            self._exit(143)
        elif sig == signal_mod.SIGINT:
            self._exit(130)

    async def wait(self) -> int:
        """Wait for the exit (playing actions meanwhile)."""
        await self._until(lambda: self._rc is not None)
        assert self._rc is not None
        return self._rc

    async def aclose(self) -> None:
        """Nothing to close."""
        await trio.lowlevel.checkpoint()

    # --- for behaviours ---------------------------------------------------------------------------------

    def clear_pending(self) -> None:
        """Drop the actions not played yet (e.g. the rest of an answer, on interrupt)."""
        self._actions.clear()
        self._sleep_deadline = None

    # --- the player -------------------------------------------------------------------------------------

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _exit(self, code: int) -> None:
        self._rc = code
        self._actions.clear()
        self._exited.set()
        self._poke()

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
            if self._lock.locked():
                await self._changed.wait()
                continue
            try:
                async with self._lock:
                    await self._step()
            except BaseException:
                # Cancelled while playing: wake the other waiters so one of them takes over.
                self._poke()
                raise

    async def _step(self) -> None:
        """Play one action, or wait for something to happen (cancellable at any point, losing nothing)."""
        changed = self._changed
        if self._rc is not None:
            return
        if not self._actions:
            await changed.wait()
            return
        action = self._actions[0]
        if isinstance(action, Sleep):
            if self._sleep_deadline is None:
                self._sleep_deadline = trio.current_time() + action.seconds
            with trio.move_on_at(self._sleep_deadline):
                await changed.wait()
                return  # woken by stdin or a signal: re-evaluate (the deadline is kept)
            self._sleep_deadline = None
            if self._rc is not None or not self._actions or self._actions[0] is not action:
                return  # exited, or the answer was dropped, while sleeping
            self._actions.popleft()
        elif isinstance(action, Hang):
            if len(self._actions) > 1:
                self._actions.popleft()
            else:
                await changed.wait()
                return
        elif isinstance(action, Out):
            self._actions.popleft()
            self._stdout += action.data
        elif isinstance(action, Err):
            self._actions.popleft()
            self._stderr += action.data
        else:
            self._exit(action.code)
            return
        self._poke()


# --- the default behaviour: a small stream-json CLI -------------------------------------------------------


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _directives(text: str) -> tuple[Directives, str]:
    """The simulator's directives of a prompt (``[[sim ...]]``) and the prompt without them."""
    raw, clean = parse_directives(text)
    directives, _warnings = Directives.from_raw(raw)
    return directives, clean


@dataclass
class EchoCli:
    """A minimal stream-json CLI that echoes the prompt; fault directives in ``[[...]]`` (module doc)."""

    resume: str | None = None
    partial_messages: bool = True
    ignore_sigterm: bool = False
    ignore_interrupt: bool = False
    crash_at_start: bool = False
    ignore_control: bool = False  # never answer control requests other than interrupt
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    cost: float = 0.0
    _hanging: bool = False
    _turn_ignores_interrupt: bool = False

    def __post_init__(self) -> None:
        if self.resume:
            self.session_id = self.resume

    def on_start(self, proc: ScriptedProcess) -> list[Action]:
        """Nothing before the first prompt (like the real CLI), unless told to crash."""
        if self.resume and self.resume.startswith("lost-"):
            return [
                Out(self._result("error_during_execution", True, None, errors=["No conversation found"])),
                Err(f"No conversation found with session ID: {self.resume}\n".encode()),
                Exit(1),
            ]
        if self.crash_at_start:
            return [Err(b"scripted agent: crash at start\n"), Exit(1)]
        return []

    def on_message(self, proc: ScriptedProcess, msg: dict[str, Any]) -> list[Action]:
        """Answer a user message, or an interrupt control request."""
        if msg.get("type") == "control_request":
            return self._control(proc, msg)
        content = msg.get("message", {}).get("content", "")
        prompt = content if isinstance(content, str) else json.dumps(content)
        return self._turn(prompt)

    def on_eof(self, proc: ScriptedProcess) -> list[Action]:
        """Finish queued work then exit 0 (a hung turn exits at once)."""
        if self._hanging:
            proc.clear_pending()
        return [Exit(0)]

    def _control(self, proc: ScriptedProcess, msg: dict[str, Any]) -> list[Action]:
        request_id = msg.get("request_id", "")
        if msg.get("request", {}).get("subtype") != "interrupt":
            if self.ignore_control:
                return []
            return [
                Out(
                    _line(
                        {
                            "type": "control_response",
                            "response": {"subtype": "success", "request_id": request_id},
                        }
                    )
                )
            ]
        if self.ignore_interrupt or self._turn_ignores_interrupt:
            return []
        proc.clear_pending()
        self._hanging = False
        return [
            Out(
                _line(
                    {
                        "type": "control_response",
                        "response": {
                            "subtype": "success",
                            "request_id": request_id,
                            "response": {"still_queued": []},
                        },
                    }
                )
            ),
            Out(
                _line(
                    {
                        "type": "user",
                        "message": {
                            "role": "user",
                            "content": [{"type": "text", "text": "[Request interrupted by user]"}],
                        },
                        "session_id": self.session_id,
                    }
                )
            ),
            Out(self._result("error_during_execution", True, None, terminal_reason="aborted_streaming")),
        ]

    def _turn(self, prompt: str) -> list[Action]:
        d, clean = _directives(prompt)
        self._turn_ignores_interrupt = d.ignore_interrupt
        text = clean.strip() or "ok"
        answer = f"echo: {text}"
        if d.hang == "start":
            self._hanging = True
            return [Hang()]
        acts: list[Action] = [
            Out(
                _line(
                    {
                        "type": "system",
                        "subtype": "init",
                        "session_id": self.session_id,
                        "model": "scripted",
                        "tools": [],
                    }
                )
            )
        ]
        if d.stderr_flood:
            acts.extend(Err(f"stderr line {i}\n".encode()) for i in range(d.stderr_flood))
        if d.ttft_ms:
            acts.append(Sleep(d.ttft_ms / 1000))
        if d.hang is not None:
            self._hanging = True
            acts.append(Hang())
            return acts
        if d.garbage:
            acts.append(Out(b"this is not json\n"))
        if d.crash is not None:
            acts += [Err(b"scripted agent: crashed mid-turn\n"), Exit(1)]
            return acts
        if d.exit0:
            acts.append(Exit(0))
            return acts
        deltas = d.tokens or 0
        delta_s = (d.token_ms or 0) / 1000
        if self.partial_messages and deltas:
            acts.append(
                Out(
                    self._event(
                        {
                            "type": "message_start",
                            "message": {"id": "msg_1", "model": "scripted", "content": []},
                        }
                    )
                )
            )
            acts.append(
                Out(
                    self._event(
                        {
                            "type": "content_block_start",
                            "index": 0,
                            "content_block": {"type": "text", "text": ""},
                        }
                    )
                )
            )
            for i in range(deltas):
                if delta_s:
                    acts.append(Sleep(delta_s))
                delta = {"type": "text_delta", "text": f"w{i} "}
                acts.append(Out(self._event({"type": "content_block_delta", "index": 0, "delta": delta})))
        acts.append(
            Out(
                _line(
                    {
                        "type": "assistant",
                        "message": {
                            "id": "msg_1",
                            "model": "scripted",
                            "role": "assistant",
                            "content": [{"type": "text", "text": answer}],
                        },
                        "session_id": self.session_id,
                    }
                )
            )
        )
        if self.partial_messages and deltas:
            acts.append(Out(self._event({"type": "content_block_stop", "index": 0})))
            acts.append(Out(self._event({"type": "message_stop"})))
        if d.api_error is not None:
            acts.append(
                Out(
                    self._result(
                        "success",
                        True,
                        f"API Error: {d.api_error}",
                        terminal_reason="api_error",
                        api_error_status=d.api_error,
                    )
                )
            )
        else:
            acts.append(Out(self._result("success", False, answer, terminal_reason="completed")))
        return acts

    def _event(self, event: dict[str, Any]) -> bytes:
        return _line(
            {"type": "stream_event", "event": event, "session_id": self.session_id, "uuid": str(uuid.uuid4())}
        )

    def _result(self, subtype: str, is_error: bool, result: str | None, **extra: Any) -> bytes:
        self.cost += 0.001
        body: dict[str, Any] = {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": 1,
            "duration_api_ms": 1,
            "num_turns": 1,
            "session_id": self.session_id,
            "total_cost_usd": round(self.cost, 6),
        }
        if result is not None:
            body["result"] = result
        body.update(extra)
        return _line(body)


BehaviourFactory = Callable[[AgentConfig, "str | None"], Behaviour]


def _default_factory(agent: AgentConfig, resume: str | None) -> Behaviour:
    return EchoCli(
        resume=resume,
        partial_messages=agent.partial_messages,
        ignore_interrupt="--ignore-interrupt" in agent.extra_args,
        crash_at_start="--crash-at-start" in agent.extra_args,
        ignore_control="--ignore-control" in agent.extra_args,
    )


class ScriptedLauncher:
    """A :class:`engine.runtime.process.Launcher` of scripted processes.

    ``factory(agent, resume)`` makes each process's behaviour (default: :class:`EchoCli`, which honours
    ``--ignore-interrupt``, ``--crash-at-start`` and ``--ignore-control`` in ``extra_args``). ``missing``
    simulates an agent binary that cannot be found; ``spawn_delay`` a slow ``fork``. Every process is kept
    in :attr:`spawned` for assertions.
    """

    def __init__(self, factory: BehaviourFactory | None = None) -> None:
        self.factory = factory or _default_factory
        self.spawned: list[ScriptedProcess] = []
        self.missing: str | None = None
        self.spawn_delay = 0.0
        self.spawn_error: Exception | None = None

    def check(self, agent: AgentConfig) -> str | None:
        """``missing`` when set."""
        return self.missing

    async def spawn(
        self, agent: AgentConfig, *, resume: str | None = None, session: str | None = None
    ) -> ScriptedProcess:
        """Make a scripted process (after ``spawn_delay``)."""
        from turnstile.engine.errors import AgentBinaryNotFound

        if self.spawn_delay:
            await trio.sleep(self.spawn_delay)
        else:
            await trio.lowlevel.checkpoint()
        if self.missing is not None:
            raise AgentBinaryNotFound(self.missing)
        if self.spawn_error is not None:
            raise self.spawn_error
        argv = ["scripted", *agent.extra_args] + (["--resume", resume] if resume else [])
        proc = ScriptedProcess(self.factory(agent, resume), argv)
        self.spawned.append(proc)
        return proc
