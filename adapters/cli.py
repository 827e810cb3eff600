"""The ``turnstile`` command. Each subcommand lives in :mod:`adapters.commands` (one module each).

Exit codes a script can trust, for every subcommand: 0 ok, 1 findings, 2 usage or configuration error;
130 after Ctrl-C, 141 when stdout was closed early (see :data:`EPILOG`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Final

__all__ = [
    "EPILOG",
    "EXIT_CLOSED_PIPE",
    "EXIT_FINDINGS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

EXIT_OK: Final = 0
EXIT_FINDINGS: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
EXIT_CLOSED_PIPE: Final = 141
"""128 + SIGPIPE: what a shell reports for ``yes | head``, so ``set -o pipefail`` scripts see the same."""

EPILOG: Final = """\
exit status (every command):
  0    ok
  1    findings: `log stats` found bad lines, `replay` found violations or (--check) a difference
  2    usage or configuration error: bad flags, a file that cannot be read, a port that cannot be bound
  130  interrupted (Ctrl-C)
  141  stdout was closed before everything was written (e.g. `| head`); nothing else is printed
`turnstile sim` exits as the Claude Code CLI it stands in for (see `turnstile sim --help`)."""

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
        description="Run AI coding-agent CLIs (Claude Code in stream-json mode), keep a hot pool, and\n"
        "stream every turn over SSE and WebSocket — no stream lost, orphaned or stuck.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    """Entry point of the ``turnstile`` console script: the subcommand's exit code (see :data:`EPILOG`)."""
    try:
        try:
            code = _run(list(sys.argv[1:] if argv is None else argv))
        finally:
            # Here (also after argparse's --help and usage errors, which raise SystemExit), so that a
            # closed pipe is caught below and not at interpreter exit.
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`turnstile log stats big.ndjson | head`): stop quietly. Python's own
        # recipe: point stdout at /dev/null so the final flush at exit cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_CLOSED_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code


def _run(argv: list[str]) -> int:
    if argv[:1] == ["sim"]:
        # The simulator parses its own flags (the CLI's), so they pass through untouched.
        from turnstile.engine.agents.sim import main as sim_main

        return sim_main(argv[1:], prog="turnstile sim")
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
