"""State diagrams and reference tables generated from the machine specs (sans-IO).

Like h11's docs, ours cannot drift from the code: every diagram and table here is computed from
``specs/*.toml``, the same data :mod:`engine.machines` builds the machines from. ``docs/machines.md``
holds the generated parts between markers (``<!-- BEGIN generated: stream -->`` ... ``END``) and
hand-written prose around them; :func:`update_doc` refreshes the generated parts and a test fails when
the file is stale.

Drawing rules (Mermaid, which GitHub renders, and Graphviz DOT):

* A ``group`` of states is drawn as a composite state. Mermaid cannot draw an edge between a sub-state and
  a state outside its composite, so in Mermaid such an edge is attached to the composite itself: an edge
  *from* a composite leaves from its sub-states, an edge *into* it enters the sub-state its trigger names
  (the tables list every transition exactly). DOT draws every edge between the real states.
* Transitions that stay in their state (legal no-ops such as ``thinking --think--> thinking``) are not
  drawn; the tables list them.
* Triggers sharing a source and a destination share one arrow, their names joined.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

from turnstile.engine.errors import TurnstileError
from turnstile.engine.specs import REFLEXIVE, Spec, edges

__all__ = ["Arrow", "Drawing", "dot", "drawing", "markdown_section", "mermaid", "update_doc"]

_INDENT: Final = "    "


def _arrows(pairs: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str], list[str]]:
    """``(source, dest, trigger)`` triples merged into ``{(source, dest): [triggers...]}``, in order."""
    merged: dict[tuple[str, str], list[str]] = {}
    for source, dest, trigger in pairs:
        triggers = merged.setdefault((source, dest), [])
        if trigger not in triggers:
            triggers.append(trigger)
    return merged


def _condition(guard: str | None, unless: str | None) -> str:
    if guard is not None:
        return f" [{guard}]"
    if unless is not None:
        return f" [not {unless}]"
    return ""


def _moves(spec: Spec) -> list[tuple[str, str, str]]:
    """Every transition that changes state, as ``(source, dest, trigger + " [guard]")``."""
    return [
        (e.source, e.dest, e.trigger + _condition(e.guard, e.unless))
        for e in edges(spec)
        if e.source != e.dest
    ]


def _joined(labels: list[str]) -> str:
    """Triggers of one arrow joined, a guard they share written once: ``a, b [g]``."""
    guards = {label.partition(" [")[2] for label in labels}
    if len(guards) == 1 and (shared := guards.pop()):
        return ", ".join(label.partition(" [")[0] for label in labels) + f" [{shared}"
    return ", ".join(labels)


class Arrow(NamedTuple):
    """One drawn arrow: ``source`` and ``dest`` are states or (outside a group) group names; ``label`` its
    triggers joined (``a, b [guard]``)."""

    source: str
    dest: str
    label: str


class Drawing(NamedTuple):
    """What a state diagram draws, computed once from a spec for every renderer (Mermaid, the console).

    ``groups``: each group's member states, in spec order (groups without members are left out).
    ``inner``: per group, the arrows between two of its members. ``outer``: the other arrows, a member
    of a group replaced by the group (the Drawing rules in this module's docstring).
    """

    initial: str
    groups: dict[str, list[str]]
    inner: dict[str, list[Arrow]]
    outer: list[Arrow]
    terminal: list[str]


def drawing(spec: Spec) -> Drawing:
    """The machine as drawn: groups as composites, arrows merged, self-transitions left out."""
    group_of = {name: state.group for name, state in spec.states.items()}

    def node(state: str) -> str:
        return group_of[state] or state

    inner: dict[str, list[tuple[str, str, str]]] = {group: [] for group in spec.groups}
    outer: list[tuple[str, str, str]] = []
    for source, dest, label in _moves(spec):
        group = group_of[source]
        if group is not None and group == group_of[dest]:
            inner[group].append((source, dest, label))
        else:
            outer.append((node(source), node(dest), label))
    groups = {
        group: members
        for group in spec.groups
        if (members := [name for name, g in group_of.items() if g == group])
    }
    return Drawing(
        initial=spec.initial,
        groups=groups,
        inner={
            group: [Arrow(s, d, _joined(labels)) for (s, d), labels in _arrows(inner[group]).items()]
            for group in groups
        },
        outer=[Arrow(s, d, _joined(labels)) for (s, d), labels in _arrows(outer).items()],
        terminal=[name for name, state in spec.states.items() if state.terminal],
    )


def mermaid(spec: Spec) -> str:
    """The machine as a Mermaid ``stateDiagram-v2`` (renders on GitHub)."""
    drawn = drawing(spec)
    group_of = {name: state.group for name, state in spec.states.items()}
    start = group_of[spec.initial] or spec.initial
    lines = ["stateDiagram-v2", f"{_INDENT}direction LR", f"{_INDENT}[*] --> {start}"]
    for group, members in drawn.groups.items():
        lines.append(f"{_INDENT}state {group} {{")
        if spec.initial in members:
            lines.append(f"{_INDENT * 2}[*] --> {spec.initial}")
        for member in members:
            lines.append(f"{_INDENT * 2}{member}")
        for arrow in drawn.inner[group]:
            lines.append(f"{_INDENT * 2}{arrow.source} --> {arrow.dest}: {arrow.label}")
        lines.append(f"{_INDENT}}}")
    for arrow in drawn.outer:
        lines.append(f"{_INDENT}{arrow.source} --> {arrow.dest}: {arrow.label}")
    for name in drawn.terminal:
        lines.append(f"{_INDENT}{name} --> [*]")
    return "\n".join(lines) + "\n"


def dot(spec: Spec) -> str:
    """The machine as a Graphviz DOT digraph (groups as clusters, terminal states double-circled)."""
    lines = [
        f'digraph "{spec.name}" {{',
        f'{_INDENT}label="{_escape(spec.machine.title)}"; labelloc=t; rankdir=LR;',
        f'{_INDENT}node [shape=box, style=rounded, fontname="Helvetica"];',
        f'{_INDENT}edge [fontname="Helvetica", fontsize=10];',
        f'{_INDENT}"__start" [shape=point, label=""];',
    ]
    for group in spec.groups:
        members = [name for name, state in spec.states.items() if state.group == group]
        if not members:
            continue
        lines.append(f'{_INDENT}subgraph "cluster_{group}" {{')
        lines.append(f'{_INDENT * 2}label="{group}"; style=dashed;')
        lines.extend(f'{_INDENT * 2}"{m}";' for m in members)
        lines.append(f"{_INDENT}}}")
    for name, state in spec.states.items():
        if state.terminal:
            lines.append(f'{_INDENT}"{name}" [shape=doublecircle, style=""];')
    lines.append(f'{_INDENT}"__start" -> "{spec.initial}";')
    for (source, dest), labels in _arrows(_moves(spec)).items():
        lines.append(f'{_INDENT}"{source}" -> "{dest}" [label="{_escape(_joined(labels))}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def markdown_section(spec: Spec) -> str:
    """The generated part of a machine's section in ``docs/machines.md``: diagram, states, transitions."""
    out = [
        "```mermaid",
        mermaid(spec).rstrip("\n"),
        "```",
        "",
        f"_{_one_line(spec.machine.doc)}_" if spec.machine.doc.strip() else "",
        "",
        *[f"- group `{name}`: {_one_line(group.doc)}" for name, group in spec.groups.items()],
        "",
        "| state | group | time counts as | meaning |",
        "|---|---|---|---|",
    ]
    for name, state in spec.states.items():
        marks = " (initial)" if name == spec.initial else " (terminal)" if state.terminal else ""
        out.append(f"| `{name}`{marks} | {state.group or ''} | {state.phase or ''} | {_cell(state.doc)} |")
    out += ["", "| trigger | from | to | guard | fired by | why |", "|---|---|---|---|---|---|"]
    for t in spec.transitions:
        sources = ", ".join(f"`{s}`" for s in t.sources)
        dest = "(stays)" if t.dest == REFLEXIVE else f"`{t.dest}`"
        guard = t.guard or (f"not {t.unless}" if t.unless else "")
        out.append(f"| `{t.trigger}` | {sources} | {dest} | {guard} | {_cell(t.on)} | {_cell(t.doc)} |")
    if spec.guards:
        out += ["", "Guards:", ""]
        out += [f"- `{name}`: {_one_line(doc)}" for name, doc in spec.guards.items()]
    return "\n".join(out) + "\n"


_BLOCK = re.compile(r"(<!-- BEGIN generated: (\w+) -->\n)(.*?)(<!-- END generated: \2 -->)", re.DOTALL)


def update_doc(text: str, specs: Mapping[str, Spec]) -> str:
    """``text`` (``docs/machines.md``) with each generated block rewritten from ``specs``.

    Raises :class:`engine.errors.TurnstileError` when a spec has no block (add the two marker comments).
    """
    seen: set[str] = set()

    def refresh(match: re.Match[str]) -> str:
        kind = match.group(2)
        if kind not in specs:
            return match.group(0)
        seen.add(kind)
        return match.group(1) + markdown_section(specs[kind]) + match.group(4)

    updated = _BLOCK.sub(refresh, text)
    missing = sorted(set(specs) - seen)
    if missing:
        raise TurnstileError(
            f"docs/machines.md has no generated block for {', '.join(missing)}: add the lines "
            "'<!-- BEGIN generated: KIND -->' and '<!-- END generated: KIND -->' where the diagram belongs"
        )
    return updated
