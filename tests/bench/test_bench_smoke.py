"""Every benchmark script runs in its ``--quick`` mode and prints its table (figures are never checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [
    "decode",
    "replay",
    "machines",
    "pipeline",
    "latency",
    "fanout",
    "redis_store",
    "fanout_nodes",
    "coldwarm",
    "footprint",
]

pytestmark = pytest.mark.slow


def _quick_args(script: Path) -> list[str]:
    help_text = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert "--quick" in help_text, f"bench/{script.name} has no --quick (every script has one)"
    return ["--quick"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_prints_its_table(name: str) -> None:
    script = ROOT / "bench" / f"{name}.py"
    if not script.exists():
        pytest.skip(f"bench/{name}.py is not there yet")
    if name == "fanout":
        pytest.importorskip("sse_starlette")
    if name in ("redis_store", "fanout_nodes"):
        from tests.redisd import require_redis

        require_redis()
    done = subprocess.run(
        [sys.executable, str(script), *_quick_args(script)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "\n### " in out, out  # a table title
    assert "\n|" in out and "|---" in out.replace("|-", "|---"), out  # a Markdown table
    if name != "footprint":  # footprint reports sizes, no targets
        assert "\ntarget: " in out, out
