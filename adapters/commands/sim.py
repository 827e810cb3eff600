"""``turnstile sim``: the built-in simulated agent, speaking the CLI's stream-json protocol on stdio."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``sim``; its flags are the simulator's own (see ``turnstile sim --help``)."""
    p = subparsers.add_parser(
        "sim",
        help="run the built-in simulated agent on stdio (same flags and protocol as the Claude Code CLI)",
        add_help=False,
    )
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Hand over to :func:`engine.agents.sim.main` with the remaining arguments."""
    from turnstile.engine.agents.sim import main

    return main(list(args.sim_args), prog="turnstile sim")
