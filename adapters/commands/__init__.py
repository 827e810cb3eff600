"""Subcommands of the ``turnstile`` command: one module each, exposing ``add_parser`` and ``run``."""
