"""The compatibility matrix as data: scenarios, cells, the committed results, and docs/compatibility.md.

``tests/compat/results.json`` holds what the live suite (``tests/compat/test_cli_matrix.py``) observed for
each version and scenario: a status and the facts seen (``observed``: what differs between versions). The
live tests compare every cell they run with it, so a CLI that starts behaving differently fails the suite
until the matrix is regenerated (``TURNSTILE_UPDATE_COMPAT=1 pytest tests/compat``) and — for a new ✘ — a
note says where it comes from (:mod:`tests.compat.notes`). docs/compatibility.md is rendered from the
results, the notes and the recordings in ``tests/fixtures/cli-<version>/``;
``tests/compat/test_compat_doc.py`` fails when it is stale. Render it alone with
``python -m tests.compat.matrix``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

ROOT: Final = Path(__file__).resolve().parents[2]
RESULTS: Final = Path(__file__).resolve().parent / "results.json"
DOC: Final = ROOT / "docs" / "compatibility.md"
FIXTURES: Final = ROOT / "tests" / "fixtures"

Status = Literal["pass", "fail", "pending"]
MARK: Final = {"pass": "✔", "fail": "✘", "pending": "⏳"}


class Cell(msgspec.Struct, frozen=True):
    """One version x scenario: ``status`` and ``observed`` (facts seen, deterministic; no timings)."""

    status: Status
    observed: str = ""


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    level: str  # "turnstile" (the real runtime), "protocol" (a direct subprocess), "doctor"


SCENARIOS: Final[tuple[Scenario, ...]] = (
    Scenario("plain", "a text answer streamed in deltas", "turnstile"),
    Scenario("tool", "one Bash tool call, really run", "turnstile"),
    Scenario("tools", "three tool calls in one turn", "turnstile"),
    Scenario("thinking", "a thinking block, then text", "turnstile"),
    Scenario(
        "interrupt", "interrupt mid-stream: the turn ends `cancelled`, the process is kept", "turnstile"
    ),
    Scenario("interrupt-next", "the next turn after an interrupt, on the same process", "turnstile"),
    Scenario(
        "api-400", "the API answers 400: the turn fails with the reason, the next one works", "turnstile"
    ),
    Scenario("api-500-retried", "the API answers 500 once: the CLI retries, the turn completes", "turnstile"),
    Scenario(
        "stall-silent", "the API stream stalls in silence: `timed_out` at the idle timeout", "turnstile"
    ),
    Scenario("stall-pings", "the API stream stalls but sends keep-alive pings", "turnstile"),
    Scenario("killed", "the CLI is SIGKILLed mid-turn: `failed`, the next turn resumes", "turnstile"),
    Scenario("resume", "`--resume` after a crash between turns carries the conversation", "turnstile"),
    Scenario("warm-pool", "a warm pool process primed (`initialize`, `get_context_usage`)", "turnstile"),
    Scenario("approval-allow", "`can_use_tool` over stdio, answered allow: the tool runs", "protocol"),
    Scenario("approval-deny", "`can_use_tool` over stdio, answered deny: it does not", "protocol"),
    Scenario("approval-turnstile", "tool approvals through Turnstile's API", "turnstile"),
    Scenario("doctor", "`turnstile doctor`: every capability Turnstile relies on", "doctor"),
)
SCENARIO_IDS: Final = tuple(s.id for s in SCENARIOS)


def load_results(path: Path = RESULTS) -> dict[str, dict[str, Cell]]:
    """version -> scenario -> cell, as committed."""
    if not path.exists():
        return {}
    return msgspec.json.decode(path.read_bytes(), type=dict[str, dict[str, Cell]])


def save_results(results: dict[str, dict[str, Cell]], path: Path = RESULTS) -> None:
    ordered = {
        v: {s: results[v][s] for s in SCENARIO_IDS if s in results[v]}
        for v in sorted(results, key=_version_key, reverse=True)
    }
    path.write_bytes(msgspec.json.format(msgspec.json.encode(ordered), indent=2) + b"\n")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


# --- what differs in the recordings ----------------------------------------------------------------------


def _messages(directory: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        out.extend(json.loads(raw) for raw in path.read_bytes().splitlines() if raw.strip())
    return out


def protocol_shape(directory: Path) -> dict[str, set[str]]:
    """What a version's recordings contain, by aspect: types, subtypes, keys of the main messages."""
    shape: dict[str, set[str]] = {
        "top-level types": set(),
        "`system` subtypes": set(),
        "`system/init` keys": set(),
        "`result` keys": set(),
        "`assistant` keys": set(),
        "`stream_event` event types": set(),
        "`control_request` subtypes": set(),
        "`can_use_tool` request keys": set(),
    }
    for m in _messages(directory):
        kind = str(m.get("type"))
        shape["top-level types"].add(kind)
        if kind == "system":
            shape["`system` subtypes"].add(str(m.get("subtype")))
            if m.get("subtype") == "init":
                shape["`system/init` keys"].update(m)
        elif kind == "result":
            shape["`result` keys"].update(m)
        elif kind == "assistant":
            shape["`assistant` keys"].update(m)
        elif kind == "stream_event" and isinstance(m.get("event"), dict):
            shape["`stream_event` event types"].add(str(m["event"].get("type")))
        elif kind == "control_request" and isinstance(m.get("request"), dict):
            shape["`control_request` subtypes"].add(str(m["request"].get("subtype")))
            if m["request"].get("subtype") == "can_use_tool":
                shape["`can_use_tool` request keys"].update(m["request"])
    return shape


def _names(items: Iterable[str]) -> str:
    return ", ".join(f"`{i}`" for i in sorted(items))


def differences(base: str, versions: list[str]) -> list[str]:
    """Markdown lines: for each version, what its recordings have that ``base``'s lack, and the reverse."""
    base_dir = FIXTURES / f"cli-{base}"
    if not base_dir.is_dir():
        return [f"(no recordings of {base})"]
    reference = protocol_shape(base_dir)
    lines: list[str] = []
    for version in versions:
        directory = FIXTURES / f"cli-{version}"
        if version == base or not directory.is_dir():
            continue
        shape = protocol_shape(directory)
        found = []
        for aspect, have in shape.items():
            added, missing = have - reference[aspect], reference[aspect] - have
            if added or missing:
                parts = ([f"adds {_names(added)}"] if added else []) + (
                    [f"lacks {_names(missing)}"] if missing else []
                )
                found.append(f"  - {aspect}: {'; '.join(parts)}")
        lines.append(
            f"- **{version}** against {base}:" if found else f"- **{version}**: the same shapes as {base}"
        )
        lines.extend(found)
    return lines


# --- the document ----------------------------------------------------------------------------------------


def render(results: dict[str, dict[str, Cell]] | None = None) -> str:
    """docs/compatibility.md from the results, the notes and the recordings."""
    from tests.compat.notes import CAVEATS, INTRO, RUNNING, explanation
    from tests.compat.versions import BUNDLED, VERSIONS

    results = load_results() if results is None else results
    known = {v.version: v for v in VERSIONS}
    versions = [v.version for v in VERSIONS if v.version in results] + sorted(
        (v for v in results if v not in known), key=_version_key, reverse=True
    )
    out: list[str] = [
        "# Compatibility: every Claude Code CLI a user may have",
        "",
        "<!-- Generated by tests/compat (TURNSTILE_UPDATE_COMPAT=1 pytest tests/compat, or python -m "
        "tests.compat.matrix); do not edit by hand: tests/compat/test_compat_doc.py fails when it is stale. -->",
        "",
        INTRO,
        "",
        "## Versions",
        "",
        "| version | released | shape | why it is in the matrix |",
        "|---|---|---|---|",
    ]
    for v in versions:
        meta = known.get(v)
        if meta is None:
            out.append(f"| {v} | ? | ? | an extra version (TURNSTILE_COMPAT_VERSIONS) |")
        else:
            shape = "native build" if meta.shape == "native" else "`cli.js` on Node.js"
            out.append(
                f"| {v}{' (bundled)' if meta.role == 'bundled' else ''} | {meta.released} | {shape} | {meta.why} |"
            )
    out += [
        "",
        "## The matrix",
        "",
        "| scenario | " + " | ".join(versions) + " |",
        "|---|" + "---|" * len(versions),
    ]
    for sc in SCENARIOS:
        cells = []
        for v in versions:
            cell = results.get(v, {}).get(sc.id)
            cells.append("-" if cell is None else MARK[cell.status] + (" ¹" if cell.status != "pass" else ""))
        level = {"protocol": " *(protocol level)*", "doctor": ""}.get(sc.level, "")
        out.append(f"| **{sc.id}**: {sc.title}{level} | " + " | ".join(cells) + " |")
    out += [
        "",
        "✔ works as Turnstile expects · ✘ does not (¹ explained below) · ⏳ pending another issue (¹) · "
        "- not run. *Protocol level*: the CLI driven directly over stdin/stdout, because Turnstile does not "
        "use that part of the protocol yet.",
        "",
        "## Every ✘ and ⏳, and where it comes from",
        "",
    ]
    for sc in SCENARIOS:
        bad = [v for v in versions if (c := results.get(v, {}).get(sc.id)) is not None and c.status != "pass"]
        if not bad:
            continue
        out.append(f"- **{sc.id}** ({', '.join(bad)}): {explanation(sc.id, bad)}")
    out += ["", CAVEATS, "", "## What was observed, scenario by scenario", ""]
    out.append("Facts each scenario records (the live suite compares them on every run); a scenario whose")
    out.append("facts are the same for every version shows them once.")
    out.append("")
    for sc in SCENARIOS:
        seen = {v: results[v][sc.id].observed for v in versions if sc.id in results.get(v, {})}
        if not any(seen.values()):
            continue
        if len(set(seen.values())) == 1:
            out.append(f"- **{sc.id}**: {next(iter(seen.values()))}")
        else:
            out.append(f"- **{sc.id}**:")
            out.extend(f"  - {v}: {text or '(nothing of note)'}" for v, text in seen.items())
    out += [
        "",
        f"## Protocol differences in the recordings (against {BUNDLED.version})",
        "",
        "From `tests/fixtures/cli-<version>/` (the same eight scripted scenarios recorded from each version by",
        "`tests/fixtures/record_real_cli.py`; the replay tests decode and replay all of them offline):",
        "",
        *differences(BUNDLED.version, versions),
        "",
        RUNNING,
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.compat.matrix [--check]``: rewrite (or check) docs/compatibility.md."""
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        fresh = DOC.exists() and DOC.read_text(encoding="utf-8") == text
        print("docs/compatibility.md is " + ("up to date" if fresh else "stale"), file=sys.stderr)
        return 0 if fresh else 1
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
