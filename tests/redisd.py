"""A real Redis server for the tests: Debian's ``redis-server`` on a free loopback port, started per test.

Persistence is off (``--save '' --appendonly no``) unless a test asks for AOF (``appendonly=True``: every
write fsynced, in the test's own directory), which is what survives a restart. Tests that need Redis
skip with a clear message when the binary is missing (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.net import free_port

__all__ = ["RedisServer", "redis_binary", "redis_server", "require_redis"]


def redis_binary() -> str | None:
    """The ``redis-server`` to run, or None."""
    return (
        os.environ.get("TURNSTILE_REDIS_SERVER")
        or shutil.which("redis-server")
        or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    )


def require_redis() -> str:
    """The binary, or skip the test saying how to get it."""
    binary = redis_binary()
    if binary is None:
        pytest.skip(
            "redis-server is not installed: `apt-get install -y redis-server` (Debian) or "
            "`brew install redis`; .ci/run installs it"
        )
    return binary


@dataclass
class RedisServer:
    """One ``redis-server`` process on 127.0.0.1:``port`` (kept across :meth:`restart`)."""

    directory: Path
    appendonly: bool = False
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require_redis()
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--dir", str(self.directory), "--protected-mode", "no"]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        self.starts += 1
        log = open(self.directory / f"redis-{self.starts}.log", "wb")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.wait_ready()

    def wait_ready(self, limit_s: float = 20.0) -> None:
        """Block until the server answers PING (bounded)."""
        deadline = time.monotonic() + limit_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer within {limit_s} s: {self.log_tail()}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: Redis finishes what it was doing, fsyncs the AOF) and wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def command(self, *args: str) -> bytes:
        """Send one command (inline protocol) and return the raw reply (for test set-up and checks)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(" ".join(args).encode() + b"\r\n")
            return s.recv(1 << 16)

    def log_tail(self) -> str:
        logs = sorted(self.directory.glob("redis-*.log"))
        return logs[-1].read_text(errors="replace")[-1500:] if logs else ""


@contextlib.contextmanager
def running_redis(directory: Path, *, appendonly: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(directory, appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh Redis (persistence off) for one test."""
    with running_redis(tmp_path / "redis") as server:
        yield server
