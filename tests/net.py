"""Loopback helpers shared by the test suites."""

from __future__ import annotations

import socket

__all__ = ["JSON", "free_port"]

#: What every API client sends: the server refuses a POST that does not say it is JSON (adapters.guard),
#: so the tests' HTTP clients send it on every request by default (a test of that rule overrides it).
JSON = {"content-type": "application/json"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (picked by the kernel), for a server started later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
