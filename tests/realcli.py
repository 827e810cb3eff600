"""Helpers for tests that run the real Claude Code CLI against :mod:`tests.fakeapi`.

Besides locating the binary and building an offline environment, this module has a tiny
synchronous driver (:class:`CliProcess`) used by the harness tests and the recording script: a
reader thread timestamps every stdout line on arrival, so tests can wait for a line matching a
predicate with a deadline instead of blocking on a pipe forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import pytest

from turnstile.engine.agents.claude import (
    claude_argv,
    find_claude_binary,
    interrupt_line,
    offline_env,
    user_message_line,
)
from turnstile.engine.errors import AgentBinaryNotFound

if TYPE_CHECKING:
    from tests.fakeapi import FakeModelAPI

__all__ = [
    "CliProcess",
    "claude_binary_or_skip",
    "cli_version",
    "offline_cli_env",
]

_version_cache: dict[str, str] = {}


def cli_version(binary: str, timeout: float = 10.0) -> str:
    """Return the first line of ``binary --version`` (e.g. ``"2.1.327 (Claude Code)"``).

    Raises:
        RuntimeError: the binary did not run or exited non-zero.
    """
    if binary in _version_cache:
        return _version_cache[binary]
    try:
        proc = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "DISABLE_AUTOUPDATER": "1"},  # never let a CLI update itself under a test
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"`{binary} --version` failed to run: {exc}") from exc
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0 or not out:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"`{binary} --version` exited {proc.returncode}: {err or out or '(no output)'}")
    _version_cache[binary] = out.splitlines()[0]
    return _version_cache[binary]


def claude_binary_or_skip() -> str:
    """Locate the Claude Code CLI and check that it runs, or skip the calling test.

    Uses :func:`engine.agents.claude.find_claude_binary` (``TURNSTILE_CLAUDE_BIN``, PATH, then the
    binary bundled in ``claude-agent-sdk``) and runs ``--version``.
    """
    try:
        binary = find_claude_binary()
    except AgentBinaryNotFound as exc:
        pytest.skip(f"real Claude Code CLI not available: {exc}")
    try:
        cli_version(binary)
    except RuntimeError as exc:
        pytest.skip(f"real Claude Code CLI at {binary} does not run: {exc}")
    return binary


def offline_cli_env(api: FakeModelAPI, tmp_path: Path | str) -> dict[str, str]:
    """A complete environment for running the CLI offline against ``api``.

    Starts from ``os.environ`` minus every ``ANTHROPIC_*`` / ``CLAUDE*`` variable (a developer's
    real key, OAuth token, or an enclosing Claude Code session's ``CLAUDECODE`` must not leak in),
    then adds :func:`engine.agents.claude.offline_env` with ``HOME`` = ``<tmp_path>/home``.
    """
    home = Path(tmp_path) / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not (k.startswith("ANTHROPIC_") or k.startswith("CLAUDE"))}
    env.update(offline_env(api.base_url, str(home)))
    return env


class CliProcess:
    """A real CLI process with timestamped, non-blocking access to its stdout lines.

    ``lines`` holds ``(arrival_monotonic, raw_bytes)`` for every stdout line, bytes exactly as
    the CLI wrote them (including the trailing newline). stderr is collected in ``stderr``.
    Always use as a context manager (or call :meth:`kill`) so the process cannot leak.
    """

    def __init__(
        self,
        binary: str,
        env: Mapping[str, str],
        cwd: Path | str,
        *,
        allowed_tools: Sequence[str] = ("Bash",),
        model: str | None = None,
        partial_messages: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.argv = claude_argv(
            binary,
            model=model,
            allowed_tools=allowed_tools,
            partial_messages=partial_messages,
            extra_args=extra_args,
        )
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=str(cwd),
            # Own process group: kill() can take down anything the CLI spawned (Bash tool).
            start_new_session=True,
        )
        self.lines: list[tuple[float, bytes]] = []
        self.stderr = bytearray()
        self._queue: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        self._cursor = 0  # index into self.lines of the next line wait_for() examines
        self._eof = False
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True),
        ]
        for t in self._readers:
            t.start()

    # -- readers ---------------------------------------------------------------------------------

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._queue.put((time.monotonic(), raw))
        self._queue.put(None)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.stderr.extend(raw)

    def _pump(self, timeout: float) -> bool:
        """Move at most one line from the reader queue to ``lines``; False on timeout/EOF."""
        if self._eof:
            return False
        try:
            item = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False
        if item is None:
            self._eof = True
            return False
        self.lines.append(item)
        return True

    # -- writing ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> float:
        """Write raw bytes on stdin; returns the monotonic time of the write."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()
        return time.monotonic()

    def send_user(self, text: str) -> float:
        """Write one user message line; returns the monotonic time of the write."""
        return self.write(user_message_line(text))

    def send_interrupt(self, request_id: str) -> float:
        """Write an interrupt control request; returns the monotonic time of the write."""
        return self.write(interrupt_line(request_id))

    def close_stdin(self) -> None:
        """Close stdin (the CLI exits once it sees EOF)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    # -- reading ---------------------------------------------------------------------------------

    def messages(self) -> list[dict[str, Any]]:
        """All stdout lines received so far, parsed."""
        return [json.loads(raw) for _, raw in self.lines if raw.strip()]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """Return the next not-yet-examined stdout message matching ``predicate``.

        Messages before the match are consumed (they stay in :attr:`lines`). Raises AssertionError
        with the stderr tail if the deadline passes or stdout ends first.
        """
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.lines):
                raw = self.lines[self._cursor][1]
                self._cursor += 1
                if raw.strip():
                    msg: dict[str, Any] = json.loads(raw)
                    if predicate(msg):
                        return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._eof:
                break
            self._pump(remaining)
        why = "stdout closed" if self._eof else f"timed out after {timeout:.1f}s"
        raise AssertionError(
            f"{why} waiting for a CLI message; got {len(self.lines)} lines; "
            f"stderr tail: {bytes(self.stderr[-2000:]).decode(errors='replace')!r}"
        )

    def wait_result(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the next ``result`` message (the end of a turn)."""
        return self.wait_for(lambda m: m.get("type") == "result", timeout)

    def turn(self, text: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Send one user message and return every message up to and including its ``result``."""
        start = self._cursor
        self.send_user(text)
        self.wait_result(timeout)
        return [json.loads(raw) for _, raw in self.lines[start : self._cursor] if raw.strip()]

    def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit and for stdout to be drained; return the exit code."""
        code = self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + 2.0
        while not self._eof and time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())
        return code

    # -- cleanup ---------------------------------------------------------------------------------

    def kill(self) -> None:
        """Kill the CLI and its process group if still running; always safe to call."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, 9)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self.close_stdin()
        for t in self._readers:
            t.join(timeout=2)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> CliProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
