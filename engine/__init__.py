"""Turnstile's engine.

The core modules (``protocol``, ``framing``, ``log``, ``specs``, ``machines``, ``fold``, ``timing``,
``replay``) are sans-IO: they never import trio and never touch sockets or processes. ``engine.stores``
persists logs; ``engine.runtime`` is the trio driver that spawns and supervises agent processes.
"""
