"""Agent processes behind a tiny interface, and the launcher that starts real ones.

:class:`AgentProcess` is everything the runtime does with an agent: write to its stdin, read chunks of its
stdout and stderr, signal it, wait for it. :class:`SubprocessAgent` is a real child process (the test
suite has an in-memory stand-in, ``tests/scripted.py``). Framing the chunks into lines is the session's
job (:class:`engine.framing.LineFramer`), so both implementations exercise the same code above them.
:func:`retire` is the one way a process is closed.

:class:`Launcher` turns an :class:`AgentConfig` into a running process. :class:`SubprocessLauncher` builds
the argv for ``claude`` or the built-in ``sim`` and starts it in a new session (its own process group), so
that signals reach everything the agent started (tools, shells) — ``trio.open_process`` on its own would
signal only the direct child. Every spawn is written to the :class:`ProcessLedger` and removed from it
once reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal as signal_mod
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import trio

from turnstile.engine.agents.claude import claude_argv, find_claude_binary
from turnstile.engine.errors import AgentBinaryNotFound, SpawnError
from turnstile.engine.runtime.config import AgentConfig
from turnstile.engine.runtime.ledger import ProcessLedger

__all__ = [
    "AgentProcess",
    "Launcher",
    "SubprocessAgent",
    "SubprocessLauncher",
    "agent_argv",
    "agent_env",
    "retire",
]

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
_READ_SIZE = 65536


@runtime_checkable
class AgentProcess(Protocol):
    """A running agent. Every method is safe to call after the process is gone.

    Cancellation: a cancelled :meth:`receive_stdout` / :meth:`receive_stderr` has consumed no data; a
    cancelled :meth:`send` may have written part of its data (the runtime only cancels a send when it
    is about to discard the process anyway); a cancelled :meth:`wait` changes nothing.
    """

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        ...

    @property
    def argv(self) -> list[str]:
        """The command line it was started with."""
        ...

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited (negative: killed by that signal), else None."""
        ...

    async def send(self, data: bytes) -> None:
        """Write bytes to stdin. Raises ``trio.BrokenResourceError`` / ``ClosedResourceError`` when gone."""
        ...

    async def close_stdin(self) -> None:
        """Close stdin (a stream-json agent exits at EOF once its queued turns are done). Idempotent."""
        ...

    async def receive_stdout(self) -> bytes:
        """The next chunk of stdout; ``b""`` at end of file."""
        ...

    async def receive_stderr(self) -> bytes:
        """The next chunk of stderr; ``b""`` at end of file."""
        ...

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the agent's whole process group; a no-op once the process has exited."""
        ...

    async def wait(self) -> int:
        """Wait for the exit, reap it, and kill whatever it left in its process group; the exit status."""
        ...

    async def aclose(self) -> None:
        """Close the pipes (does not signal; call once the process is gone or being killed)."""
        ...


@runtime_checkable
class Launcher(Protocol):
    """Starts agent processes for a configuration."""

    def check(self, agent: AgentConfig) -> str | None:
        """Why ``agent`` cannot be started (e.g. the binary is missing), or None. Quick; never spawns."""
        ...

    async def spawn(
        self, agent: AgentConfig, *, resume: str | None = None, session: str | None = None
    ) -> AgentProcess:
        """Start a process (with ``--resume resume`` when given). The process is running on return.

        Raises :class:`AgentBinaryNotFound` or :class:`SpawnError`. Cancellation: a spawn either
        completes or raises; it never leaves a process behind that the caller does not hold — so an
        implementation must not pass a checkpoint between creating the process and returning it.
        """
        ...


class SubprocessAgent:
    """A real agent child process in its own process group. Create with :meth:`start`."""

    def __init__(self, proc: trio.Process, argv: list[str], ledger: ProcessLedger | None) -> None:
        self._proc = proc
        self._argv = argv
        self._ledger = ledger
        self._stdin_closed = False

    @classmethod
    async def start(
        cls,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        ledger: ProcessLedger | None = None,
        session: str | None = None,
    ) -> SubprocessAgent:
        """Spawn ``argv`` with piped stdio in a new session, and record it in ``ledger``."""
        try:
            # Shielded: the spawn runs in a worker thread that cannot be abandoned anyway, and a
            # cancellation arriving after the fork must not lose the Process object (an orphan).
            with trio.CancelScope(shield=True):
                proc = await trio.lowlevel.open_process(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
        except OSError as exc:
            where = f" in {cwd}" if cwd else ""
            raise SpawnError(f"cannot start {argv[0]!r}{where}: {exc.strerror or exc}") from exc
        if ledger is not None:
            ledger.add(proc.pid, argv, session=session)
        # No checkpoint from here on: the caller must get the process in the same step it was made.
        return cls(proc, argv, ledger)

    @property
    def pid(self) -> int:
        """The process id (equal to its process group id)."""
        return self._proc.pid

    @property
    def argv(self) -> list[str]:
        """The command line."""
        return self._argv

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while running."""
        return self._proc.returncode

    async def send(self, data: bytes) -> None:
        """Write ``data`` to stdin."""
        assert self._proc.stdin is not None
        await self._proc.stdin.send_all(data)

    async def close_stdin(self) -> None:
        """Close stdin (idempotent)."""
        if not self._stdin_closed and self._proc.stdin is not None:
            self._stdin_closed = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self._proc.stdin.aclose()

    async def receive_stdout(self) -> bytes:
        """Next stdout chunk (``b""`` at EOF or once the pipe was closed)."""
        assert self._proc.stdout is not None
        return await _read_pipe(self._proc.stdout)

    async def receive_stderr(self) -> bytes:
        """Next stderr chunk (``b""`` at EOF or once the pipe was closed)."""
        assert self._proc.stderr is not None
        return await _read_pipe(self._proc.stderr)

    def signal(self, sig: int) -> None:
        """Signal the process group, unless the process has already been reaped."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)

    async def wait(self) -> int:
        """Wait for exit; then SIGKILL the rest of its group and drop it from the ledger."""
        rc = await self._proc.wait()
        # Tools the agent started (shells, servers) share its process group and must not outlive it.
        # The group id cannot be reused while any member lives, and we act right after the reap.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal_mod.SIGKILL)
        if self._ledger is not None:
            self._ledger.remove(self._proc.pid)
        return rc

    async def aclose(self) -> None:
        """Close all three pipes."""
        await self.close_stdin()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                with contextlib.suppress(trio.ClosedResourceError, OSError):
                    await stream.aclose()


async def retire(
    proc: AgentProcess,
    *,
    grace: float | None,
    kill_after: float,
    on_signal: Callable[[str], None] | None = None,
    term_sent: bool = False,
) -> int | None:
    """Stop ``proc`` for good, shaped like trio's ``deliver_cancel``: close stdin and give it ``grace``
    seconds to exit on its own (a stream-json CLI exits at EOF once idle; skip it with ``grace=None`` for
    a busy one, which ignores EOF), then SIGTERM to its process group and ``kill_after`` seconds, then
    SIGKILL and ``kill_after`` seconds. ``on_signal("SIGTERM" | "SIGKILL")`` runs right before each signal.
    ``term_sent``: the caller already sent SIGTERM (synchronously, when it had to be sent at once).

    Returns the exit status (None if it outlived even SIGKILL's wait). The one place that sequence is
    written: the pool and the session both use it. Cancellation: cancelled in a step, it stops there
    (callers that must finish run it shielded and bounded).
    """
    if proc.returncode is None and grace is not None:
        with trio.move_on_after(grace):
            await proc.close_stdin()
            return await proc.wait()
    for sig in (signal_mod.SIGTERM, signal_mod.SIGKILL):
        if proc.returncode is not None:
            break
        if not (term_sent and sig == signal_mod.SIGTERM):
            if on_signal is not None:
                on_signal(sig.name)
            proc.signal(sig)
        with trio.move_on_after(kill_after):
            await proc.wait()
    return proc.returncode


async def _read_pipe(pipe: trio.abc.ReceiveStream) -> bytes:
    """The next chunk of a child's pipe (``b""`` at EOF or once the pipe was closed), with one scheduling
    point per call.

    trio's ``FdStream.receive_some`` yields to the scheduler once more *after* a wait for data has
    already yielded; at one line per read (an agent streaming tokens) that extra pass through the
    scheduler is a measurable share of each event's cost. Here a read that had to wait returns at once,
    and a read that found data waiting yields once (so a flooding agent cannot starve other tasks).
    Cancellation consumes nothing: it can only arrive before the read or during the wait.
    """
    assert isinstance(pipe, trio.lowlevel.FdStream)
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        data = os.read(pipe.fileno(), _READ_SIZE)
    except BlockingIOError:
        pass
    except OSError:
        return b""  # closed under us (EBADF) or broken
    else:
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data
    while True:
        try:
            await trio.lowlevel.wait_readable(pipe.fileno())
            return os.read(pipe.fileno(), _READ_SIZE)
        except BlockingIOError:
            continue  # a spurious wake-up
        except (trio.ClosedResourceError, trio.BrokenResourceError, OSError, ValueError):
            return b""  # closed while waiting (trio says so), or the descriptor is gone


def agent_argv(
    agent: AgentConfig, *, resume: str | None = None, env: dict[str, str] | None = None
) -> list[str]:
    """The command line for ``agent``: the real CLI, or the simulator with the same flags.

    Raises :class:`AgentBinaryNotFound` when the ``claude`` binary cannot be located.
    """
    if agent.agent == "claude":
        binary = find_claude_binary(agent.binary, env)
        prefix: list[str] = [binary]
    else:
        prefix = [agent.binary] if agent.binary else [sys.executable, "-m", "turnstile.engine.agents.sim"]
    # One argv builder for both agents: the simulator accepts the real CLI's flags by design.
    flags = claude_argv(
        "_",
        model=agent.model,
        allowed_tools=agent.allowed_tools,
        partial_messages=agent.partial_messages,
        resume=resume,
        extra_args=agent.extra_args,
    )[1:]
    return prefix + flags


def agent_env(agent: AgentConfig) -> dict[str, str]:
    """The environment of an agent process: ours (unless ``inherit_env`` is off) plus ``agent.env``."""
    env = dict(os.environ) if agent.inherit_env else {}
    # Claude Code refuses to start "inside another Claude Code session" when it sees this variable.
    env.pop("CLAUDECODE", None)
    if agent.agent == "claude":
        # A server's CLI must stay the version it was started with: never let it update itself.
        env.setdefault("DISABLE_AUTOUPDATER", "1")
    if agent.agent == "sim" and not agent.binary:
        # `python -m turnstile.engine.agents.sim` must import engine from wherever the agent's cwd is.
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _REPO_ROOT + (os.pathsep + path if path else "")
    env.update(agent.env)
    return env


class SubprocessLauncher:
    """Starts real agent processes and records them in a ledger."""

    def __init__(self, ledger: ProcessLedger | None = None) -> None:
        self.ledger = ledger if ledger is not None else ProcessLedger()

    def check(self, agent: AgentConfig) -> str | None:
        """None when the agent's program can be found, else why not."""
        try:
            argv = agent_argv(agent, env=agent_env(agent))
        except AgentBinaryNotFound as exc:
            return str(exc)
        if agent.cwd is not None and not os.path.isdir(agent.cwd):
            return f"the agent's working directory {agent.cwd!r} does not exist"
        if os.sep in argv[0] and not os.access(argv[0], os.X_OK):
            return f"the agent binary {argv[0]!r} is not executable"
        return None

    async def spawn(
        self, agent: AgentConfig, *, resume: str | None = None, session: str | None = None
    ) -> AgentProcess:
        """Spawn ``agent`` (see :meth:`Launcher.spawn`)."""
        env = agent_env(agent)
        argv = agent_argv(agent, resume=resume, env=env)
        return await SubprocessAgent.start(argv, env=env, cwd=agent.cwd, ledger=self.ledger, session=session)
