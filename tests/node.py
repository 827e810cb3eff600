"""``tests/js``: the Vercel AI SDK's client code (``ai`` 5, 6, 7) and esbuild, for the tests that drive
Turnstile with them. :func:`js_packages` installs them once with ``npm ci`` from the npm cache."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["JS_DIR", "js_packages"]

JS_DIR = Path(__file__).resolve().parent / "js"


def js_packages() -> Path:
    """``tests/js`` with ``node_modules`` as its lockfile says (``npm ci --prefer-offline`` when missing or
    older than the lockfile); fails the calling test when node or npm is missing or the install fails."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "node and npm are needed for the AI SDK tests (Node 20 is on these machines)", pytrace=False
        )
    installed = JS_DIR / "node_modules" / ".package-lock.json"
    lock = JS_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"npm ci in {JS_DIR} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}", pytrace=False
            )
    return JS_DIR
