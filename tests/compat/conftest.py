"""The compatibility matrix's fixtures: the no-leftover-process guard, and what the live cells observed.

Every live cell stores its :class:`tests.compat.matrix.Cell` in :data:`OBSERVED`. At the end of the session
the terminal summary prints the matrix as it ran; with ``TURNSTILE_UPDATE_COMPAT=1`` the session also merges
the cells into ``tests/compat/results.json`` and rewrites docs/compatibility.md (cells that did not run keep
their committed value).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.compat.matrix import MARK, SCENARIO_IDS, Cell, load_results, render, save_results
from tests.procs import become_subreaper, descendants, leftovers_after

become_subreaper()

UPDATE = os.environ.get("TURNSTILE_UPDATE_COMPAT") == "1"
OBSERVED: dict[tuple[str, str], Cell] = {}


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Fail a test that leaves any process (or orphaned grandchild) of its own behind."""
    before = set(descendants())
    yield
    left = leftovers_after(before, wait_s=2.0)
    if left:
        pytest.fail(f"the test left processes behind: {left}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not UPDATE or not OBSERVED:
        return
    from tests.compat.matrix import DOC

    results = load_results()
    for (version, scenario), cell in OBSERVED.items():
        results.setdefault(version, {})[scenario] = cell
    save_results(results)
    DOC.write_text(render(results), encoding="utf-8")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not OBSERVED:
        return
    tr = terminalreporter
    versions = sorted(
        {v for v, _ in OBSERVED},
        key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()),
        reverse=True,
    )
    tr.section("compatibility matrix (this run)" + (": written to docs/compatibility.md" if UPDATE else ""))
    tr.write_line(f"{'scenario':<20}" + "".join(f"{v:>10}" for v in versions))
    for scenario in SCENARIO_IDS:
        cells = [OBSERVED.get((v, scenario)) for v in versions]
        tr.write_line(f"{scenario:<20}" + "".join(f"{(MARK[c.status] if c else '-'):>10}" for c in cells))
