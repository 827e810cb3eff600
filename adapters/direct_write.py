"""Write to a connected socket without waiting: whatever the kernel takes at once, in one system call.

The SSE (hypercorn) and WebSocket writers use it before their locked, timed ``send_all``: a live stream's
events are small and the socket's buffer is large, so the kernel nearly always takes a write whole, and
then no lock, timer or pass through trio's scheduler is needed for it.
"""

from __future__ import annotations

import os

import trio

__all__ = ["write_now"]


def write_now(stream: trio.SocketStream, data: bytes) -> int:
    """How many bytes of ``data`` the kernel took at once (0 when the socket's buffer is full).

    Raises :class:`OSError` when the connection is broken or the socket closed. Synchronous, so no
    other task can write in between; the caller sends the rest (``data[n:]``) the usual way.
    """
    try:
        return os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        return 0
