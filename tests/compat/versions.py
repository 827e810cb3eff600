"""The CLI versions the compatibility matrix runs, why each is there, and where its binary comes from.

The bundled 2.1.327 (``claude-agent-sdk==0.2.184``, what ``make`` installs) always runs. The others come from
the ``turnstile cli fetch`` cache, which ``.ci/run`` (and ``make clis``) fill from the npm registry; a version
not in the cache is skipped with a message saying how to fetch it — never a failure for a registry that
could not be reached. ``TURNSTILE_COMPAT_VERSIONS=2.1.327,2.1.340`` runs another list (e.g. to try a new
release before adding it to :data:`VERSIONS`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from turnstile.adapters.clifetch import cached_cli, default_cache_dir
from turnstile.engine.agents.claude import SDK_REQUIREMENT, bundled_claude_binary

__all__ = ["BUNDLED", "VERSIONS", "MatrixVersion", "locate", "matrix_versions"]


@dataclass(frozen=True)
class MatrixVersion:
    """One column of the matrix."""

    version: str
    role: str  # bundled | newest | older | extra
    released: str  # the npm registry's publish date
    shape: str  # native | js (cli.js run with Node.js)
    why: str


BUNDLED: Final = MatrixVersion(
    "2.1.327",
    "bundled",
    "2026-11-17",
    "native",
    f"bundled in `{SDK_REQUIREMENT}`: what `make` installs, and what every other real-CLI test drives",
)

VERSIONS: Final[tuple[MatrixVersion, ...]] = (
    BUNDLED,
    MatrixVersion(
        "2.1.332",
        "newest",
        "2026-11-24",
        "native",
        "the newest release when the matrix was made. Pinned, not `latest`: a new release changes what the "
        "matrix says, so it is added on purpose (try one with `TURNSTILE_COMPAT_VERSIONS`)",
    ),
    MatrixVersion(
        "2.1.220",
        "older",
        "2026-07-25",
        "native",
        "four months older: the version of the held-out transcripts in tests/fixtures/transcripts (roma), so "
        "live and recorded output can be compared; a native build from between the switch to native builds "
        "(2.1.113) and today",
    ),
    MatrixVersion(
        "2.1.74",
        "older",
        "2026-03-12",
        "js",
        "eight months older, so the matrix spans more than six months: the `cli.js` shape run with Node.js "
        "(native builds start at 2.1.113), an older protocol (see the differences below), and inside the range "
        "of anthropics/claude-code#34046 (no `can_use_tool` with `--permission-prompt-tool stdio`, 2.1.73-74)",
    ),
)


def matrix_versions() -> list[MatrixVersion]:
    """:data:`VERSIONS`, or the list in ``$TURNSTILE_COMPAT_VERSIONS`` (known versions keep their notes)."""
    raw = os.environ.get("TURNSTILE_COMPAT_VERSIONS", "").strip()
    if not raw:
        return list(VERSIONS)
    known = {v.version: v for v in VERSIONS}
    chosen = [v.strip() for v in raw.split(",") if v.strip()]
    return [
        known.get(v) or MatrixVersion(v, "extra", "?", "?", "given in TURNSTILE_COMPAT_VERSIONS")
        for v in chosen
    ]


def locate(version: MatrixVersion) -> tuple[str | None, str]:
    """The binary for ``version`` and a note; ``(None, why)`` when it is not here (the caller skips or fails)."""
    if version.role == "bundled":
        binary = bundled_claude_binary()
        if binary is None:
            return None, f"the bundled CLI is missing: `pip install {SDK_REQUIREMENT}` (make installs it)"
        return binary, "bundled"
    found = cached_cli(version.version)
    if found is None:
        return None, (
            f"CLI {version.version} is not in the cache {default_cache_dir()}: run "
            f"`turnstile cli fetch {version.version}` (.ci/run and `make clis` do) — skipping its column"
        )
    return found.path, f"{found.shape} build fetched from npm"


def main() -> int:
    """``python -m tests.compat.versions``: fetch every non-bundled matrix version into the cache.

    What ``make clis`` and ``.ci/run`` run before the tests. Never fails: a version that cannot be fetched
    (registry unreachable, no build for this platform) is reported, and its column is skipped by the suite.
    """
    import sys

    from turnstile.adapters.clifetch import fetch_cli
    from turnstile.engine.errors import CliFetchError

    for version in matrix_versions():
        if version.role == "bundled":
            continue
        try:
            cli, cached = fetch_cli(version.version, progress=lambda m: print(f"  {m}", file=sys.stderr))
        except CliFetchError as exc:
            print(f"CLI {version.version}: not fetched ({exc}); the matrix will skip it", file=sys.stderr)
            continue
        print(f"CLI {version.version}: {cli.path}{' (cached)' if cached else ''}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
