"""docs/compatibility.md is fresh, complete and explained — checked offline, with no CLI run.

The live suite (test_cli_matrix.py) keeps ``tests/compat/results.json`` true to the CLIs; this keeps the page
true to the results, the notes and the recordings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.compat.conftest import UPDATE
from tests.compat.matrix import DOC, FIXTURES, SCENARIO_IDS, differences, load_results, protocol_shape, render
from tests.compat.notes import explanation
from tests.compat.versions import BUNDLED, VERSIONS


def test_docs_compatibility_md_is_fresh() -> None:
    if UPDATE:
        pytest.skip("TURNSTILE_UPDATE_COMPAT=1: the page is rewritten at the end of this session")
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/compatibility.md is stale: run `python -m tests.compat.matrix` (after a change to the notes) or "
        "`TURNSTILE_UPDATE_COMPAT=1 pytest tests/compat` (after a change to the scenarios or the CLIs)"
    )


def test_every_version_has_every_cell_and_its_recordings() -> None:
    results = load_results()
    for version in VERSIONS:
        assert set(results.get(version.version, {})) == set(SCENARIO_IDS), version.version
        recordings = FIXTURES / f"cli-{version.version}"
        assert (recordings / "README.md").is_file(), f"no recordings of {version.version} in {recordings}"
    assert BUNDLED.role == "bundled" and VERSIONS[0] == BUNDLED


def test_every_cross_and_pending_cell_is_explained() -> None:
    for version, cells in load_results().items():
        for scenario, cell in cells.items():
            if cell.status != "pass":
                assert "UNEXPLAINED" not in explanation(scenario, [version]), (
                    f"{version}/{scenario} is {cell.status} without a note in tests/compat/notes.py"
                )
            # Facts are compared on every run: a timing or an id would make the cell flap.
            assert not re.search(r"\d\s*(ms|s)\b", cell.observed), f"{version}/{scenario}: {cell.observed!r}"
            assert "<id>" not in cell.observed, f"{version}/{scenario} depends on an id: {cell.observed!r}"


def test_matrix_spans_six_months_and_both_package_shapes() -> None:
    dates = sorted(v.released for v in VERSIONS)
    first, last = (int(d[:4]) * 12 + int(d[5:7]) for d in (dates[0], dates[-1]))
    assert last - first >= 6
    assert {v.shape for v in VERSIONS} == {"native", "js"}
    assert sum(v.role == "newest" for v in VERSIONS) == 1


def _write(directory: Path, *messages: dict[str, object]) -> None:
    directory.mkdir(parents=True)
    (directory / "x.jsonl").write_text("".join(json.dumps(m) + "\n" for m in messages))


def test_protocol_differences_name_what_was_added_and_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(
        tmp_path / "cli-9.0.0",
        {"type": "system", "subtype": "init", "session_id": "s", "tools": []},
        {"type": "system", "subtype": "status", "status": "requesting"},
        {"type": "result", "subtype": "success", "is_error": False, "terminal_reason": "completed"},
    )
    _write(
        tmp_path / "cli-8.0.0",
        {"type": "system", "subtype": "init", "session_id": "s", "tools": [], "legacy": 1},
        {"type": "result", "subtype": "success", "is_error": False},
        {"type": "keep_alive"},
    )
    _write(
        tmp_path / "cli-8.5.0",
        *[json.loads(line) for line in (tmp_path / "cli-9.0.0" / "x.jsonl").read_text().splitlines()],
    )
    assert protocol_shape(tmp_path / "cli-8.0.0")["top-level types"] == {"system", "result", "keep_alive"}
    monkeypatch.setattr("tests.compat.matrix.FIXTURES", tmp_path)
    lines = differences("9.0.0", ["9.0.0", "8.0.0", "8.5.0"])
    text = "\n".join(lines)
    assert "**8.0.0** against 9.0.0" in text
    assert "top-level types: adds `keep_alive`" in text
    assert "`system` subtypes: lacks `status`" in text
    assert "`system/init` keys: adds `legacy`" in text
    assert "`result` keys: lacks `terminal_reason`" in text
    assert "**8.5.0**: the same shapes as 9.0.0" in text
