"""The fault matrix on the simulator: every fault x pool size 0, 1, 4, every subscriber kind in each run.

See :mod:`tests.reliability.matrix` for what a cell is and what must hold in it. By default each
(fault, pool size) run multiplexes all five subscriber kinds (none, one, three, resume, stall);
``TURNSTILE_RELIABILITY_FULL=1`` runs every kind on its own instead (five times the runs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.conftest import RESULTS
from tests.reliability.matrix import FAULTS, KINDS, POOL_SIZES, Fault, run_cell

pytestmark = pytest.mark.slow

FULL = os.environ.get("TURNSTILE_RELIABILITY_FULL") == "1"
KIND_SETS = [(k,) for k in KINDS] if FULL else [KINDS]


@pytest.mark.parametrize("kinds", KIND_SETS, ids=lambda ks: "+".join(ks) if len(ks) < 5 else "all")
@pytest.mark.parametrize("pool_size", POOL_SIZES, ids=lambda p: f"pool{p}")
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
async def test_cell(fault: Fault, pool_size: int, kinds: tuple[str, ...], tmp_path: Path) -> None:
    result = await run_cell(fault, pool_size, tmp_path, kinds)
    RESULTS.append(result)
    if result.skipped:
        pytest.skip(result.skipped)
    problems = result.all_problems()
    assert not problems, f"{fault.name} at pool size {pool_size}: " + "\n".join(problems)
