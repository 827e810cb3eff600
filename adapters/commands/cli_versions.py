"""``turnstile cli fetch VERSION…`` and ``turnstile cli list``: Claude Code CLI versions in a local cache.

``fetch`` installs each version from the npm registry (see :mod:`adapters.clifetch`) and prints the path of
its executable, one per line, for ``--claude-bin`` / ``TURNSTILE_CLAUDE_BIN``. A version already in the
cache is printed at once, without touching the network. Exit status 0 when every version is there, 2 when
any could not be fetched (each failure is one line on stderr saying why).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from turnstile.adapters.clifetch import CACHE_ENV, cached_cli, cached_versions, default_cache_dir, fetch_cli
from turnstile.engine.errors import CliFetchError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``cli`` (with ``fetch`` and ``list``) on the ``turnstile`` command."""
    parser = subparsers.add_parser(
        "cli",
        help="fetch Claude Code CLI versions from the npm registry into a cache (for --claude-bin)",
        description="Claude Code CLI versions in a local cache.",
    )
    sub = parser.add_subparsers(dest="cli_command", required=True, metavar="ACTION")
    fetch = sub.add_parser(
        "fetch",
        help="install versions from the npm registry and print their paths",
        description="Install @anthropic-ai/claude-code versions from the npm registry (the native build for "
        "this platform where the version has one, else its cli.js run with Node.js) and print the path of "
        "each executable, for --claude-bin. Needs npm. The CLI's auto-updater is never run.",
    )
    fetch.add_argument("versions", nargs="+", metavar="VERSION", help="e.g. 2.1.220, or a dist-tag: latest")
    _cache_arg(fetch)
    fetch.add_argument("--platform", help="platform build to fetch (default: this machine's, e.g. linux-x64)")
    fetch.add_argument("--registry", help="npm registry URL (default: npm's configuration)")
    fetch.add_argument("--force", action="store_true", help="fetch again even when the version is cached")
    fetch.add_argument(
        "--offline", action="store_true", help="only look in the cache; a version not there is an error"
    )
    fetch.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds for each metadata request (default 30; a download gets up to 15 minutes)",
    )
    fetch.add_argument("--json", action="store_true", help="print one JSON object per version")
    fetch.set_defaults(func=run_fetch)
    listing = sub.add_parser("list", help="the versions in the cache", description="List cached versions.")
    _cache_arg(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)


def _cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help=f"where versions live (default: ${CACHE_ENV}, else $XDG_CACHE_HOME/turnstile/cli)",
    )


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action (argparse sets ``func`` per action)."""
    return int(args.func(args))


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch (or find) every version; print paths on stdout, failures on stderr."""
    cache = args.cache_dir or default_cache_dir()
    failed = 0
    for spec in args.versions:
        try:
            if args.offline:
                found = cached_cli(spec, cache)
                if found is None:
                    raise CliFetchError(
                        f"not in the cache {cache} (run `turnstile cli fetch {spec}` with network access)"
                    )
                cli, was_cached = found, True
            else:
                cli, was_cached = fetch_cli(
                    spec,
                    cache_dir=cache,
                    platform=args.platform,
                    registry=args.registry,
                    force=args.force,
                    timeout_s=args.timeout,
                    progress=lambda message: print(f"turnstile cli fetch: {message}", file=sys.stderr),
                )
        except CliFetchError as exc:
            failed += 1
            print(f"turnstile cli fetch: {spec}: {exc}", file=sys.stderr)
            continue
        if args.json:
            data = msgspec.to_builtins(cli)
            data["cached"] = was_cached
            print(msgspec.json.encode(data).decode())
        else:
            print(cli.path)
    return 2 if failed else 0


def run_list(args: argparse.Namespace) -> int:
    """Print the cached versions."""
    found = cached_versions(args.cache_dir)
    if args.json:
        print(msgspec.json.encode(found).decode())
        return 0
    for cli in found:
        print(f"{cli.version}\t{cli.shape}\t{cli.path}")
    if not found:
        print(f"no CLI versions in {args.cache_dir or default_cache_dir()}", file=sys.stderr)
    return 0
