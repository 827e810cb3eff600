"""``turnstile diagram``: draw the machines from their specs, and keep ``docs/machines.md`` fresh.

``turnstile diagram [session|stream|pool|all] [--format mermaid|dot|svg]`` prints Mermaid text (GitHub
renders it), Graphviz DOT, or SVG when Graphviz's ``dot`` is installed. ``--update-doc`` rewrites the
generated blocks of ``docs/machines.md`` from the specs (the tests fail while it is stale).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from turnstile.engine.diagram import dot, mermaid, update_doc
from turnstile.engine.errors import TurnstileError
from turnstile.engine.specs import KINDS, Spec, load_specs

__all__ = ["DEFAULT_DOC", "add_parser", "run"]

DEFAULT_DOC: Final = Path(__file__).resolve().parents[2] / "docs" / "machines.md"
_SVG_TIMEOUT_S: Final = 30


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``diagram`` on the ``turnstile`` command."""
    parser = subparsers.add_parser(
        "diagram",
        help="draw the session, stream and pool machines from specs/",
        description="Print the state diagram of a machine, generated from its spec in specs/.",
        epilog="exit status:\n"
        "  0  printed (or the doc updated, or already up to date)\n"
        "  2  bad arguments, an unreadable spec or doc, or Graphviz missing or failing (--format svg)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("machine", nargs="?", default="all", choices=[*KINDS, "all"], help="default: all")
    parser.add_argument(
        "--format",
        choices=["mermaid", "dot", "svg"],
        default="mermaid",
        help="mermaid (default; renders on GitHub), dot (Graphviz), or svg (needs Graphviz's `dot`)",
    )
    parser.add_argument(
        "--update-doc",
        nargs="?",
        const=DEFAULT_DOC,
        type=Path,
        metavar="PATH",
        help=f"rewrite the generated blocks of PATH (default {DEFAULT_DOC.name}) from the specs",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the diagram(s), or update the machines doc."""
    try:
        specs = load_specs()
        if args.update_doc is not None:
            return _update(Path(args.update_doc), specs)
        kinds = list(KINDS) if args.machine == "all" else [args.machine]
        if args.format == "svg":
            if len(kinds) != 1:
                raise TurnstileError("SVG holds one diagram: name the machine (session, stream or pool)")
            sys.stdout.write(_svg(dot(specs[kinds[0]])))
            return 0
        draw = mermaid if args.format == "mermaid" else dot
        comment = "%%" if args.format == "mermaid" else "//"
        parts = [f"{comment} {kind} machine (specs/{kind}.toml)\n{draw(specs[kind])}" for kind in kinds]
        sys.stdout.write("\n".join(parts))
        return 0
    except TurnstileError as exc:
        print(f"turnstile diagram: {exc}", file=sys.stderr)
        return 2


def _update(path: Path, specs: Mapping[str, Spec]) -> int:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TurnstileError(f"cannot read {path}: {exc.strerror or exc}") from None
    updated = update_doc(text, specs)
    if updated == text:
        print(f"{path} is up to date", file=sys.stderr)
        return 0
    try:
        path.write_text(updated, encoding="utf-8")
    except OSError as exc:
        raise TurnstileError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"updated {path}", file=sys.stderr)
    return 0


def _svg(source: str) -> str:
    binary = shutil.which("dot")
    if binary is None:
        raise TurnstileError("SVG needs Graphviz's `dot` on PATH; install graphviz or use --format dot")
    try:
        done = subprocess.run(
            [binary, "-Tsvg"],
            input=source.encode(),
            capture_output=True,
            timeout=_SVG_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TurnstileError(f"graphviz failed to run: {exc}") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise TurnstileError(f"graphviz failed: {message[0] if message else done.returncode}")
    return done.stdout.decode()


if __name__ == "__main__":  # pragma: no cover - `python -m turnstile.adapters.commands.diagram ...`
    _parser = argparse.ArgumentParser(prog="turnstile")
    add_parser(_parser.add_subparsers())
    sys.exit(run(_parser.parse_args(["diagram", *sys.argv[1:]])))
