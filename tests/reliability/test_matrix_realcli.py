"""The fault matrix on the REAL Claude Code CLI (offline, against ``tests/fakeapi.py``), for the faults the
fake model API can cause (plus a SIGKILL of the CLI and an interrupt, which the harness causes while
the fake API streams slowly). Same cells and checks as :mod:`tests.reliability.test_matrix`.

A real CLI start costs far more than a simulator's, so CI runs each fault at one pool size, rotating
through 0, 1 and 4 (every subscriber kind in every run); ``TURNSTILE_RELIABILITY_FULL=1`` runs every
fault at every pool size.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.conftest import RESULTS
from tests.reliability.matrix import KINDS, POOL_SIZES, REAL_FAULTS, Fault, run_cell

pytestmark = [pytest.mark.slow, pytest.mark.realcli]

if os.environ.get("TURNSTILE_RELIABILITY_FULL") == "1":
    CELLS = [(f, p) for f in REAL_FAULTS for p in POOL_SIZES]
else:
    CELLS = [(f, POOL_SIZES[i % len(POOL_SIZES)]) for i, f in enumerate(REAL_FAULTS)]


@pytest.mark.parametrize(("fault", "pool_size"), CELLS, ids=[f"{f.name}-pool{p}" for f, p in CELLS])
async def test_cell_real_cli(fault: Fault, pool_size: int, tmp_path: Path) -> None:
    result = await run_cell(fault, pool_size, tmp_path, KINDS)
    RESULTS.append(result)
    if result.skipped:
        pytest.skip(result.skipped)
    problems = result.all_problems()
    assert not problems, f"{fault.name} (real CLI) at pool size {pool_size}: " + "\n".join(problems)
