"""Fixtures of the reliability suite, the no-leftover-process guard, and the matrix summary table.

Every fault-matrix run appends its :class:`tests.reliability.matrix.CellResult` to :data:`RESULTS`; at
the end of the session :func:`pytest_terminal_summary` prints the table (per fault and pool size:
subscriber cells held / run) and the totals, and writes them as JSON to ``$TURNSTILE_RELIABILITY_REPORT``
when that is set (``docs/reliability.md`` quotes the last run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import become_subreaper, descendants, leftovers_after
from tests.reliability.matrix import KINDS, CellResult, summary_rows, to_json

become_subreaper()

RESULTS: list[CellResult] = []
EXTRA: list[str] = []  # figures other tests want printed in the summary (load, soak)


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Fail a test that leaves any process (or orphaned grandchild) of its own behind."""
    before = set(descendants())
    yield
    left = leftovers_after(before, wait_s=2.0)
    if left:
        pytest.fail(f"the test left processes behind: {left}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS and not EXTRA:
        return
    tr = terminalreporter
    if RESULTS:
        tr.section("reliability: fault matrix (subscriber cells held / run)")
        pools = sorted({r.pool_size for r in RESULTS})
        header = f"{'fault':<20}" + "".join(f"{'pool ' + str(p):>10}" for p in pools)
        tr.write_line(header)
        for name, cells in summary_rows(RESULTS):
            tr.write_line(f"{name:<20}" + "".join(f"{cells.get(p, '-'):>10}" for p in pools))
        ran = [r for r in RESULTS if not r.skipped]
        cells_run = sum(len(r.kinds) for r in ran)
        cells_held = sum(1 for r in ran for k in r.kinds if r.held(k))
        runs_s = sum(r.seconds for r in RESULTS)
        tr.write_line(
            f"cells run: {cells_run}, cells held: {cells_held} "
            f"({len(ran)} runs of {len(KINDS)} subscriber kinds max, {runs_s:.0f} s); "
            f"skipped runs: {sum(1 for r in RESULTS if r.skipped)}"
        )
        for r in ran:
            for p in r.all_problems()[:5]:
                tr.write_line(f"  NOT HELD {r.fault} pool={r.pool_size}: {p[:300]}")
    if EXTRA:
        tr.section("reliability: load and soak figures")
        for line in EXTRA:
            tr.write_line(line)
    report = os.environ.get("TURNSTILE_RELIABILITY_REPORT")
    if report:
        Path(report).write_text(to_json(RESULTS) + "\n")
