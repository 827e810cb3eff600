"""Turnstile's front-ends: the ``turnstile`` command, HTTP/SSE, WebSocket and the web console.

Adapters sit on :mod:`engine.runtime`; nothing in :mod:`engine` imports from here.
"""
