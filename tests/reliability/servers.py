"""Turnstile servers for the reliability tests and the bench scripts: in-process (trio) or as a process.

In-process servers are cheap (no interpreter start-up) and used wherever possible; a server process is
used only where the fault is the server itself dying (SIGKILL) or being told to stop (SIGTERM), and by
the load and soak benches so that the server's memory can be measured apart from the clients'.

Agents are the built-in simulator at ``--speed 0`` started through a tiny shell wrapper
(:func:`sim_wrapper`), which adds process-level fault flags when the session's ``model`` asks for them
(``fault-crash-at-start`` → ``--crash-at-start``; ``fault-slow-start`` → ``--slow-start 3600``;
``fault-odd-lines`` prints :data:`ODD_LINES` first; ``fault-slow-exit`` makes the agent ignore stdin EOF
for 5 s, so closing it takes until SIGTERM). Sessions
choose a model through the public API, so a test can make one session's agent misbehave at start-up while
every other session (and the pool's default processes) stays healthy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.net import JSON, free_port
from tests.reliability.clients import until
from turnstile.adapters.config import ServerConfig
from turnstile.adapters.server import run_server
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig

__all__ = [
    "MODEL_FLAGS",
    "ODD_LINES",
    "Live",
    "ServerProcess",
    "free_port",
    "inproc_server",
    "runtime_config",
    "sim_wrapper",
    "wait_healthy",
]

ROOT = Path(__file__).resolve().parents[2]

#: Session ``model`` values the wrapper turns into simulator flags.
MODEL_FLAGS = {
    "fault-crash-at-start": "--crash-at-start",
    "fault-slow-start": "--slow-start 3600",
    # The conversation cannot be resumed: the simulator refuses `--resume lost-*` like the CLI does.
    "fault-lost-session": "--session-id lost-$$",
}

#: Lines the wrapper prints on stdout before the simulator starts when the session's model is
#: ``fault-odd-lines``: JSON of the wrong shapes, broken JSON, binary, a BOM, a recorder-style prefix.
ODD_LINES: tuple[bytes, ...] = (
    b'{"_' + b"x" * 36 + b",}",  # 41 bytes, a recorder-style prefix whose comma comes late
    b'{"_t":1764064330123,"type":"system","subtype":"init","cwd":"\xff","session_id":7}',
    b'{"type":"system","subtype":"init","cwd":"/tmp/\x80\x81","session_id":"x","tools":[]}',
    b"\xef\xbb\xbf" + b'{"type":"system","subtype":"bom"}',
    b'{"type":"system","subtype":"init"',
    b"\x00\x01\x02 binary noise \xff\xfe",
    b'{"type":"assistant","message":"not an object"}',
    b'{"type":5}',
    b"[1,2,3]",
    b'{"type":"system","subtype":"surrogate","t":"\\ud800"}',
    b'{"type":"system","subtype":"deep","x":' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"type":"system","subtype":"big","n":' + b"9" * 400 + b"}",
    b'{"type":"stream_event","event":{"type":"content_block_delta","index":"zero",'
    b'"delta":{"type":"text_delta","text":5}}}',
    b'{"type":"system","type":"assistant","subtype":"dup"}',
    b'{"type":"control_request","request_id":null,"request":{"subtype":"can_use_tool"}}',
    b'{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":[]}]}}',
    '{"type":"system","subtype":"unicode","t":"\u2028\u2029\U0001f600"}'.encode(),
)

#: Short supervision timeouts so a fault costs a second, not minutes (the defaults are for production).
FAST: dict[str, Any] = {
    "close_grace_s": 1.0,
    "kill_after_s": 0.5,
    "interrupt_grace_s": 0.5,
    "pool_ready_after_s": 0.05,
    "pool_backoff_base_s": 0.2,
    "pool_backoff_max_s": 2.0,
    "shutdown_timeout_s": 10.0,
}


def sim_wrapper(directory: Path) -> str:
    """Write the simulator wrapper into ``directory``; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    odd = directory / "odd-lines"
    odd.write_bytes(b"".join(line + b"\n" for line in ODD_LINES))
    cases = "\n".join(f'    {model}) extra="{flags}" ;;' for model, flags in MODEL_FLAGS.items())
    cases += f'\n    fault-odd-lines) cat "{odd}" ;;'
    cases += "\n    fault-slow-exit) slow_exit=1 ;;"
    script = f"""#!/bin/sh
# Turnstile reliability tests: the simulator, plus start-up faults chosen by the session's model.
extra=""
slow_exit=""
for arg in "$@"; do
  case "$arg" in
{cases}
  esac
done
PYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"
export PYTHONPATH
if [ -n "$slow_exit" ]; then
  # The agent sees stdin EOF only 5 s after ours closed: closing it takes until SIGTERM.
  {{ cat; sleep 5; }} | "{sys.executable}" -m turnstile.engine.agents.sim "$@" $extra
  exit $?
fi
exec "{sys.executable}" -m turnstile.engine.agents.sim "$@" $extra
"""
    path = directory / "sim-fault"
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def runtime_config(
    data_dir: Path | str | None, *, pool_size: int, wrapper: str | None = None, **overrides: Any
) -> RuntimeConfig:
    """A runtime on the simulator at ``--speed 0`` with :data:`FAST` supervision timeouts."""
    agent = AgentConfig(agent="sim", binary=wrapper, extra_args=("--speed", "0"))
    fields: dict[str, Any] = {**FAST, **overrides}
    return RuntimeConfig(
        data_dir=None if data_dir is None else str(data_dir),
        pool_size=pool_size,
        default_agent=agent,
        **fields,
    )


@dataclass
class Live:
    """Where a running server listens."""

    base: str
    ws: str | None
    data_dir: Path | None

    def client(self, **kw: Any) -> httpx.AsyncClient:
        kw.setdefault("timeout", 30)
        kw["headers"] = {**JSON, **kw.get("headers", {})}
        return httpx.AsyncClient(base_url=self.base, **kw)


@contextlib.asynccontextmanager
async def inproc_server(runtime: RuntimeConfig, server: ServerConfig | None = None) -> AsyncIterator[Live]:
    """Run a server in this trio run; leaving the block shuts it down (every stream ends, every child
    is reaped) before returning."""
    sc = server or ServerConfig(port=0, ws_port=0, heartbeat_s=0.5, send_timeout_s=2.0)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(run_server, sc, runtime)
        ws = f"ws://127.0.0.1:{ports.ws}/" if ports.ws else None
        data = Path(runtime.data_dir) if runtime.data_dir else None
        try:
            yield Live(base=f"http://127.0.0.1:{ports.http}", ws=ws, data_dir=data)
        finally:
            nursery.cancel_scope.cancel()


@dataclass
class ServerProcess:
    """``turnstile serve`` as a process of its own (own process group), stderr to a file."""

    data_dir: Path
    pool_size: int = 1
    port: int = field(default_factory=free_port)
    ws_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    speed: float = 0.0  # the simulator's --speed
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def live(self) -> Live:
        return Live(base=self.base, ws=self.ws, data_dir=self.data_dir)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "turnstile.adapters.cli", "serve", "--port", str(self.port)]
        argv += ["--ws-port", str(self.ws_port), "--data-dir", str(self.data_dir)]
        argv += ["--pool-size", str(self.pool_size), "--sim-speed", str(self.speed)]
        argv += ["--log-level", "WARNING"]
        env = {**os.environ, **{f"TURNSTILE_{k.upper()}": str(v) for k, v in FAST.items()}}
        env.update({"TURNSTILE_HEARTBEAT_S": "0.5", "TURNSTILE_SEND_TIMEOUT_S": "2.0"})
        env.update(self.env)
        self.starts += 1
        log = open(self.data_dir.parent / f"server-{self.port}-{self.starts}.log", "wb")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )
        finally:
            log.close()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    async def wait_async(self, limit_s: float = 30.0) -> int | None:
        """Wait for the process to exit without blocking trio; None if it did not within ``limit_s``."""
        proc = self.proc
        assert proc is not None
        with trio.move_on_after(limit_s):
            await until(lambda: proc.poll() is not None)
        return proc.poll()

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s; the exit status (None if it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            return None

    def stderr_tail(self, n: int = 2000) -> str:
        logs = sorted(self.data_dir.parent.glob(f"server-{self.port}-*.log"))
        return "".join(p.read_text(errors="replace")[-n:] for p in logs[-2:])


async def wait_healthy(base: str, limit_s: float = 30.0) -> float:
    """Poll ``/healthz`` until it answers 200; seconds waited. Raises after ``limit_s``."""
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        while time.monotonic() - start < limit_s:
            try:
                r = await client.get("/healthz")
                if r.status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            await trio.sleep(0.02)
    raise AssertionError(f"server at {base} not healthy after {limit_s}s")
