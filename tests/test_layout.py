"""The package layout is a contract: one import name, and a core that does no I/O.

The code lives in ``engine/`` and ``adapters/`` and is imported only as ``turnstile.engine`` and
``turnstile.adapters`` (``turnstile/`` holds symbolic links to them). An import of a bare ``engine`` or
``adapters`` would load a second copy of a module under another name in the repository — and would not
exist at all in an installed wheel.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("engine", "adapters", "tests", "bench")

# The sans-IO core (DESIGN.md, "Layers"): importable and testable with no event loop at all.
CORE = (
    "conductor",
    "rehearsal",
    "errors",
    "protocol",
    "framing",
    "log",
    "specs",
    "machines",
    "fold",
    "timing",
    "replay",
    "transcript",
    "diagram",
)


def _python_files() -> list[Path]:
    files: list[Path] = []
    for top in SOURCES:
        files.extend(p for p in (ROOT / top).rglob("*.py") if "node_modules" not in p.parts)
    return files


def test_no_bare_engine_or_adapters_imports() -> None:
    bad: list[str] = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("engine", "adapters"):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {name}")
    assert not bad, "import turnstile.engine / turnstile.adapters instead:\n" + "\n".join(bad)


def test_shim_links_point_at_the_code() -> None:
    for name in ("engine", "adapters", "specs"):
        link = ROOT / "turnstile" / name
        assert link.is_symlink(), f"turnstile/{name} must be a symbolic link to ../{name}"
        assert link.resolve() == (ROOT / name).resolve()


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io(module: str) -> None:
    # A fresh interpreter: what this test process already imported must not hide an import.
    code = (
        "import sys\n"
        f"import turnstile.engine.{module}\n"
        "print(','.join(m for m in ('trio', 'anyio', 'socket', 'asyncio') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "", f"turnstile.engine.{module} loads {out.stdout.strip()}"
