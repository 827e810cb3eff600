"""Turnstile: run AI coding-agent CLI processes and stream every turn over SSE and WebSocket.

The import surface is two packages under this one name, so nothing collides with a user's own top-level
``engine`` or ``adapters``:

- :mod:`turnstile.engine` — the sans-IO core (protocol, log, machines, fold, timing, replay), the log
  stores, the agents, and :mod:`turnstile.engine.runtime` (the trio driver: ``open_runtime``).
- :mod:`turnstile.adapters` — the HTTP/SSE app (``create_app``), the WebSocket front-end, ``run_server``
  and the ``turnstile`` command.

In the repository the code lives in ``engine/`` and ``adapters/`` at the top level (the layout the design
card asks for); ``turnstile/engine``, ``turnstile/adapters`` and ``turnstile/specs`` are symbolic links to
them, and the wheel carries them as real directories.
"""

__version__ = "0.1.0"
