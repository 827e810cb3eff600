"""The ``turnstile`` command. Each subcommand lives in :mod:`adapters.commands` (one module each)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

# Subcommand modules, in the order --help lists them. Each exposes add_parser(subparsers) and run(args).
_COMMANDS = (
    "turnstile.adapters.commands.serve",
    "turnstile.adapters.commands.sim",
    "turnstile.adapters.commands.replay",
    "turnstile.adapters.commands.diagram",
    "turnstile.adapters.commands.stats",
    "turnstile.adapters.commands.cli_versions",
    "turnstile.adapters.commands.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="turnstile",
        description="Run AI coding-agent CLIs (Claude Code in stream-json mode), keep a hot pool, and stream "
        "every turn over SSE and WebSocket — no stream lost, orphaned or stuck.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a subcommand not built yet in this checkout
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``turnstile`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:
        # The simulator parses its own flags (the CLI's), so they pass through untouched.
        from turnstile.engine.agents.sim import main as sim_main

        return sim_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
