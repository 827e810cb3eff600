"""The spec tables themselves: the shipped specs load, and every kind of broken spec fails clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnstile.engine.errors import SpecError
from turnstile.engine.specs import KINDS, edges, load_spec, load_specs, parse_spec, specs_dir

BASE = """
[machine]
name = "toy"
title = "Toy"
initial = "a"

[guards]
ok = "always"

[groups.g]
doc = "a group"

[states.a]
doc = "start"
[states.b]
group = "g"
[states.c]
terminal = true

[[transitions]]
trigger = "go"
source = "a"
dest = "b"

[[transitions]]
trigger = "stay"
source = ["a", "b"]
dest = "="

[[transitions]]
trigger = "end"
source = ["a", "b"]
dest = "c"
"""


def test_shipped_specs_load_and_are_sound() -> None:
    specs = load_specs()
    assert set(specs) == set(KINDS)
    assert specs["stream"].initial == "queued"
    assert specs["stream"].terminal == {"completed", "failed", "cancelled", "timed_out"}
    assert specs["session"].initial == "starting"
    assert specs["session"].terminal == {"stopped"}
    assert specs["pool"].terminal == {"stopped"}
    for kind, spec in specs.items():
        assert spec.name == kind
        assert spec.triggers, kind


def test_specs_dir_is_the_project_specs_folder() -> None:
    assert (specs_dir() / "stream.toml").is_file()


def test_base_toy_spec_is_valid_and_edges_expand() -> None:
    spec = parse_spec(BASE, kind="toy")
    got = [(e.trigger, e.source, e.dest) for e in edges(spec)]
    assert got == [
        ("go", "a", "b"),
        ("stay", "a", "a"),
        ("stay", "b", "b"),
        ("end", "a", "c"),
        ("end", "b", "c"),
    ]


BROKEN = [
    pytest.param(BASE + '[states.d]\ndoc = "lonely"\n', "'d' is unreachable", id="unreachable"),
    pytest.param(
        BASE + '[states.d]\n[[transitions]]\ntrigger = "to_d"\nsource = "a"\ndest = "d"\n',
        "clashes",
        id="reserved-trigger-prefix",
    ),
    pytest.param(
        BASE + '[states.d]\n[[transitions]]\ntrigger = "dd"\nsource = "a"\ndest = "d"\n',
        "'d' is a dead end",
        id="dead-end",
    ),
    pytest.param(
        BASE + '[[transitions]]\ntrigger = "back"\nsource = "c"\ndest = "a"\n',
        "leaves terminal state 'c'",
        id="exit-from-terminal",
    ),
    pytest.param(
        BASE + '[[transitions]]\ntrigger = "x"\nsource = "nowhere"\ndest = "a"\n',
        "unknown source state 'nowhere'",
        id="unknown-source",
    ),
    pytest.param(
        BASE + '[[transitions]]\ntrigger = "x"\nsource = "a"\ndest = "nowhere"\n',
        "unknown destination state 'nowhere'",
        id="unknown-dest",
    ),
    pytest.param(
        BASE + '[[transitions]]\ntrigger = "x"\nsource = "a"\ndest = "b"\nguard = "nope"\n',
        "unknown guard 'nope'",
        id="unknown-guard",
    ),
    pytest.param(BASE.replace('group = "g"', 'group = "h"'), "unknown group 'h'", id="unknown-group"),
    pytest.param(BASE.replace('initial = "a"', 'initial = "zz"'), "initial state 'zz'", id="unknown-initial"),
    pytest.param(
        BASE.replace('initial = "a"', 'initial = "c"'), "initial state 'c' is terminal", id="terminal-initial"
    ),
    pytest.param(
        BASE + '[[transitions]]\ntrigger = "go"\nsource = "a"\ndest = "c"\n',
        "no guard tells apart",
        id="ambiguous",
    ),
    pytest.param(
        BASE + '[[transitions]]\ntrigger = "state"\nsource = "a"\ndest = "b"\n', "clashes", id="reserved-name"
    ),
    pytest.param(BASE.replace("terminal = true", "terminal = false"), "no terminal state", id="no-terminal"),
    pytest.param(
        BASE.replace('dest = "c"', 'dest = "a"'),
        "'c' is unreachable",
        id="terminal-unreachable",
    ),
    pytest.param(
        BASE.replace('title = "Toy"', 'title = "Toy"\ncolour = "red"'), "colour", id="unknown-field"
    ),
    pytest.param(BASE.replace('title = "Toy"', "title = 3"), "Expected `str`", id="wrong-type"),
    pytest.param(
        BASE.replace('[machine]\nname = "toy"\ntitle = "Toy"\ninitial = "a"\n', ""),
        "missing required field `machine`",
        id="missing-table",
    ),
    pytest.param("[machine\n", "not valid TOML", id="bad-toml"),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_broken_specs_fail_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="toy.toml", kind="toy")
    assert message in str(info.value)
    assert str(info.value).startswith("toy.toml: ")


def test_a_state_that_cannot_reach_a_terminal_state_is_rejected() -> None:
    text = BASE + (
        "[states.loop1]\n[states.loop2]\n"
        '[[transitions]]\ntrigger = "l1"\nsource = "a"\ndest = "loop1"\n'
        '[[transitions]]\ntrigger = "l2"\nsource = "loop1"\ndest = "loop2"\n'
        '[[transitions]]\ntrigger = "l3"\nsource = "loop2"\ndest = "loop1"\n'
    )
    with pytest.raises(SpecError, match="'loop1' cannot reach any terminal state"):
        parse_spec(text, kind="toy")


def test_kind_must_match_the_file() -> None:
    with pytest.raises(SpecError, match="name is 'toy' but the file is for the 'pool' machine"):
        parse_spec(BASE, kind="pool")


def test_a_missing_spec_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec("stream", tmp_path)
    assert str(tmp_path / "stream.toml") in str(info.value)
    assert "TURNSTILE_SPECS_DIR" in str(info.value)


def test_specs_dir_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "toy.toml").write_text(BASE)
    monkeypatch.setenv("TURNSTILE_SPECS_DIR", str(tmp_path))
    assert load_specs(["toy"])["toy"].machine.title == "Toy"
