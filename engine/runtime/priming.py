"""Priming a warm process: the SDK's start-up handshake, answered before the pool hands the process out.

The official SDK opens every CLI session with an ``initialize`` control request and waits for its answer.
The pool does the same for each process it warms, and also asks for ``get_context_usage``: to answer it the
CLI builds its system prompt and tool list — work its first turn would otherwise do while the user waits.
Measured with CLI 2.1.327 against the fake model API (8 processes each, 1.3 s after spawn): time from the
first prompt to ``system/init`` 67 ms unprimed, 57 ms after ``initialize`` alone, 49 ms after both.

A warm process is *ready* once it has answered every priming request (with ``success`` or ``error``: a CLI
that does not know a request still answers it, as 2.1.327 and the simulator do). That is a real signal of
a live, responsive process, where the pool used to rely on age alone.

Nothing the process prints meanwhile is lost: :class:`PrimedProcess` keeps those bytes. The session that
checks the process out logs them (:meth:`PrimedProcess.take_preamble`) right after ``process.spawned``, as
CLI lines of no stream — the ``control_response`` lines whose request ids start ``turnstile_prime_`` — so
they count as no turn's first event. Bytes not taken that way come first out of ``receive_stdout``.
"""

from __future__ import annotations

from typing import Final

from turnstile.engine.framing import LineFramer
from turnstile.engine.protocol import (
    ControlResponse,
    StdinControlRequest,
    decode_line,
    encode_stdin,
    initialize_request,
)
from turnstile.engine.runtime.process import AgentProcess

__all__ = ["PRIME_REQUEST_PREFIX", "PrimedProcess", "PrimingFailed", "prime", "priming_requests"]

PRIME_REQUEST_PREFIX: Final = "turnstile_prime_"
"""The request ids of the pool's priming requests start with this (so a log reader can tell them apart)."""


class PrimingFailed(Exception):
    """The process's stdout ended before it answered every priming request."""


def priming_requests() -> list[StdinControlRequest]:
    """The control requests the pool writes to a new warm process, in order."""
    return [
        initialize_request(f"{PRIME_REQUEST_PREFIX}initialize"),
        StdinControlRequest(
            request_id=f"{PRIME_REQUEST_PREFIX}context", request={"subtype": "get_context_usage"}
        ),
    ]


async def prime(proc: AgentProcess, requests: list[StdinControlRequest]) -> bytes:
    """Write ``requests`` to ``proc`` and read its stdout until each has its ``control_response``.

    Returns every byte read (give them to :class:`PrimedProcess`). Raises :class:`PrimingFailed` when
    stdout ends first, and what :meth:`AgentProcess.send` raises when stdin is gone. Unbounded in time:
    the caller puts a deadline on it. A cancelled or failed priming may have consumed stdout: the caller
    discards the process then.
    """
    pending = {r.request_id for r in requests}
    await proc.send(b"".join(encode_stdin(r) for r in requests))
    framer = LineFramer()
    read = bytearray()
    while pending:
        chunk = await proc.receive_stdout()
        if not chunk:
            answered = len(requests) - len(pending)
            raise PrimingFailed(
                f"stdout closed after {answered} of {len(requests)} answers to the priming requests"
            )
        read += chunk
        for frame in framer.feed(chunk):
            if type(frame) is bytes:
                view = decode_line(frame)
                if type(view) is ControlResponse:
                    pending.discard(view.response.request_id or "")
    return bytes(read)


class PrimedProcess:
    """An :class:`AgentProcess` whose stdout starts with the bytes read while priming it."""

    def __init__(self, proc: AgentProcess, preamble: bytes) -> None:
        self.inner = proc
        self._preamble = preamble

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.inner.pid

    @property
    def argv(self) -> list[str]:
        """The command line it was started with."""
        return self.inner.argv

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited, else None."""
        return self.inner.returncode

    async def send(self, data: bytes) -> None:
        """Write bytes to stdin."""
        await self.inner.send(data)

    async def close_stdin(self) -> None:
        """Close stdin. Idempotent."""
        await self.inner.close_stdin()

    def take_preamble(self) -> bytes:
        """The bytes read while priming (once; then ``b""``)."""
        data, self._preamble = self._preamble, b""
        return data

    async def receive_stdout(self) -> bytes:
        """What priming read, unless taken (in one chunk), then the process's own stdout chunks."""
        data = self.take_preamble()
        return data if data else await self.inner.receive_stdout()

    async def receive_stderr(self) -> bytes:
        """The next chunk of stderr; ``b""`` at end of file."""
        return await self.inner.receive_stderr()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the agent's whole process group."""
        self.inner.signal(sig)

    async def wait(self) -> int:
        """Wait for the exit and reap it; the exit status."""
        return await self.inner.wait()

    async def aclose(self) -> None:
        """Close the pipes."""
        await self.inner.aclose()
