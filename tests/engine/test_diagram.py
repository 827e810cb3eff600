"""Diagrams and docs generated from the specs: docs/machines.md is fresh, every transition is drawn."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from turnstile.adapters.commands import diagram as command
from turnstile.engine.diagram import dot, markdown_section, mermaid, update_doc
from turnstile.engine.errors import TurnstileError
from turnstile.engine.specs import KINDS, edges, load_specs

DOC = Path(__file__).resolve().parents[2] / "docs" / "machines.md"


def test_docs_machines_md_is_fresh() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert update_doc(text, load_specs()) == text, (
        "docs/machines.md is stale: run `turnstile diagram --update-doc` (or "
        "`python -m turnstile.adapters.commands.diagram --update-doc`) and commit the result"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_dot_draws_every_state_changing_transition(kind: str) -> None:
    spec = load_specs()[kind]
    text = dot(spec)
    for name in spec.states:
        assert f'"{name}"' in text
    drawn = set(re.findall(r'"(\w+)" -> "(\w+)" \[label="([^"]*)"\]', text))
    pairs = {(s, d) for s, d, _ in drawn}
    for e in edges(spec):
        if e.source != e.dest:
            assert (e.source, e.dest) in pairs, e
            label = next(lbl for s, d, lbl in drawn if (s, d) == (e.source, e.dest))
            assert e.trigger in label
    assert text.count("doublecircle") == len(spec.terminal)


@pytest.mark.parametrize("kind", KINDS)
def test_mermaid_names_every_state_and_trigger(kind: str) -> None:
    spec = load_specs()[kind]
    text = mermaid(spec)
    assert text.startswith("stateDiagram-v2\n")
    for name in spec.states:
        assert re.search(rf"\b{name}\b", text), name
    for e in edges(spec):
        if e.source != e.dest:
            assert e.trigger in text
    for name in spec.terminal:
        assert f"{name} --> [*]" in text
    assert text.count("{") == text.count("}")


def test_markdown_section_lists_every_transition_including_self_loops() -> None:
    spec = load_specs()["pool"]
    text = markdown_section(spec)
    assert text.count("\n| `") >= len(spec.states) + len(spec.transitions)
    assert "(stays)" in text and "at_target" in text


def test_update_doc_requires_the_markers() -> None:
    with pytest.raises(TurnstileError, match="no generated block for pool, session, stream"):
        update_doc("# nothing here\n", load_specs())


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(
        machine=kw.get("machine", "all"), format=kw.get("format", "mermaid"), update_doc=kw.get("update_doc")
    )


def test_command_prints_mermaid_and_dot(capsys: pytest.CaptureFixture[str]) -> None:
    assert command.run(_args()) == 0
    out = capsys.readouterr().out
    assert out.count("stateDiagram-v2") == 3 and "%% stream machine" in out
    assert command.run(_args(machine="stream", format="dot")) == 0
    assert capsys.readouterr().out.startswith("// stream machine")


def test_command_svg_needs_graphviz(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert command.run(_args(machine="pool", format="svg")) == 2
    assert "needs Graphviz" in capsys.readouterr().err
    assert command.run(_args(format="svg")) == 2  # all machines do not fit one SVG
    assert "name the machine" in capsys.readouterr().err


def test_command_updates_a_doc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "machines.md"
    doc.write_text(
        "".join(f"<!-- BEGIN generated: {k} -->\nOLD-CONTENT\n<!-- END generated: {k} -->\n" for k in KINDS)
    )
    assert command.run(_args(update_doc=doc)) == 0
    assert "updated" in capsys.readouterr().err
    assert "stateDiagram-v2" in doc.read_text() and "OLD-CONTENT" not in doc.read_text()
    assert command.run(_args(update_doc=doc)) == 0
    assert "up to date" in capsys.readouterr().err
    assert command.run(_args(update_doc=tmp_path / "missing.md")) == 2
