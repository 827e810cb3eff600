"""Which sessions changed: what a live session list needs, without a queue that could grow.

A :class:`SessionWatch` is a *set* of session ids that changed since its owner last looked, and an event
that wakes the owner. The runtime marks a session when an engine entry is appended to its log (a turn
requested or ended, a process spawned or exited, a title, a stop), when a CLI line moves one of its
machines (a turn starts thinking, responding, running a tool; a result) — never for a token delta —,
when it is created or read back after a restart, and when it is deleted. However fast sessions change
and however slowly the owner reads, a watch holds at most one mark per session: the owner reads each
session's *current* state when it looks, so nothing is lost by coalescing.

Open one with :meth:`engine.runtime.runtime.Runtime.watch_sessions`.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["SessionWatch"]


class SessionWatch:
    """A coalescing set of changed session ids. Used from the runtime's trio thread only."""

    def __init__(self, on_close: Callable[[SessionWatch], None]) -> None:
        self._dirty: dict[str, None] = {}  # ordered: sessions in the order they first changed
        self._wake = trio.Event()
        self._poked = False
        self._on_close = on_close
        self.closed = False

    def mark(self, sid: str) -> None:
        """Note that session ``sid`` changed (or appeared, or was deleted)."""
        if self.closed:
            return
        self._dirty[sid] = None
        self._wake.set()

    def poke(self) -> None:
        """Make a pending :meth:`changed` return at once (with no ids, if none changed): e.g. a heartbeat."""
        self._poked = True
        self._wake.set()

    async def changed(self) -> list[str]:
        """Wait until a session changed (or :meth:`poke`); return the ids, in order, and forget them."""
        while not self._dirty and not self._poked:
            if self.closed:
                return []
            self._wake = trio.Event()
            await self._wake.wait()
        out = list(self._dirty)
        self._dirty.clear()
        self._poked = False
        return out

    def close(self) -> None:
        """Stop watching (idempotent); a pending :meth:`changed` returns."""
        if not self.closed:
            self.closed = True
            self._wake.set()
            self._on_close(self)

    def __enter__(self) -> SessionWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
