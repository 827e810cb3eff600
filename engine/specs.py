"""Machine specifications: the ``specs/*.toml`` tables, loaded and checked (sans-IO apart from reading them).

A spec is the single source of one kind of machine — ``session``, ``stream`` or ``pool``. It lists the
states (with the initial and terminal ones) and the transitions ``trigger: source -> dest``, each with an
optional guard. :mod:`engine.machines` builds a :class:`transitions.Machine` from it, :mod:`engine.fold`
fires its triggers, and :mod:`engine.diagram` draws it. The file format::

    [machine]
    name = "stream"             # the kind; must match the file name
    title = "Stream (one turn)"
    initial = "queued"
    doc = "..."

    [guards]                    # optional: named conditions, evaluated by the fold
    at_target = "what it means"

    [groups.streaming]          # optional: sub-states drawn together (a composite state in diagrams)
    doc = "..."

    [states.queued]
    doc = "..."
    group = "streaming"         # optional
    phase = "waiting"           # optional: waiting|thinking|responding|tool|stalled|done (its time)
    terminal = false            # terminal states are absorbing

    [[transitions]]
    trigger = "dispatch"
    source = ["queued"]         # one state or a list
    dest = "dispatched"         # "=" means: stay in the source state (a legal no-op)
    guard = "at_target"         # optional; `unless` is its negation
    on = "prompt.written"       # which log entries fire it (documentation)
    doc = "..."

Loading fails with a :class:`engine.errors.SpecError` that names the file and the problem when the TOML is
not of this shape (the msgspec schema) or when the machine is not sound: an unknown state, guard or group;
a state unreachable from the initial one; a non-terminal dead end (no way out, or no way to any terminal
state); a transition out of a terminal state; two transitions for one trigger and source that no guard
tells apart; a trigger name that would clash with what :mod:`transitions` puts on a model.
"""

from __future__ import annotations

import keyword
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final, Literal, TypeAlias

import msgspec

from turnstile.engine.errors import SpecError

__all__ = [
    "KINDS",
    "SPECS_ENV",
    "Edge",
    "GroupSpec",
    "Kind",
    "MachineInfo",
    "Phase",
    "Spec",
    "StateSpec",
    "TransitionSpec",
    "edges",
    "load_spec",
    "load_specs",
    "parse_spec",
    "specs_dir",
]

Kind: TypeAlias = Literal["session", "stream", "pool"]
KINDS: Final[tuple[Kind, ...]] = ("session", "stream", "pool")

Phase: TypeAlias = Literal["waiting", "thinking", "responding", "tool", "stalled", "done"]
"""What time spent in a state counts as in a turn's timing (see :mod:`engine.timing`)."""

SPECS_ENV: Final = "TURNSTILE_SPECS_DIR"
"""Environment variable naming another directory of specs (for experiments and tests)."""

REFLEXIVE: Final = "="

# transitions binds these on models (or refuses them as trigger names); a trigger must not shadow them.
_RESERVED: Final = frozenset({"state", "trigger", "may_trigger"})
_RESERVED_PREFIXES: Final = ("is_", "to_", "may_")


class _Schema(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class MachineInfo(_Schema):
    """The ``[machine]`` table."""

    name: str
    title: str
    initial: str
    doc: str = ""


class GroupSpec(_Schema):
    """A ``[groups.NAME]`` table: sub-states that belong together (drawn as one composite state)."""

    doc: str = ""


class StateSpec(_Schema):
    """A ``[states.NAME]`` table."""

    doc: str = ""
    terminal: bool = False
    group: str | None = None
    phase: Phase | None = None


class TransitionSpec(_Schema):
    """One ``[[transitions]]`` item. ``source`` is normalised to a list on load."""

    trigger: str
    source: list[str] | str
    dest: str
    guard: str | None = None
    unless: str | None = None
    on: str = ""
    doc: str = ""

    @property
    def sources(self) -> list[str]:
        """The source states as a list."""
        return [self.source] if isinstance(self.source, str) else list(self.source)


class Spec(_Schema):
    """One machine specification, as in its TOML file (order of states and transitions kept)."""

    machine: MachineInfo
    states: dict[str, StateSpec]
    transitions: list[TransitionSpec]
    guards: dict[str, str] = {}
    groups: dict[str, GroupSpec] = {}

    @property
    def name(self) -> str:
        """The machine's kind (``session``, ``stream``, ``pool``)."""
        return self.machine.name

    @property
    def initial(self) -> str:
        """The state a new model starts in."""
        return self.machine.initial

    @property
    def terminal(self) -> frozenset[str]:
        """The terminal (absorbing) states."""
        return frozenset(name for name, state in self.states.items() if state.terminal)

    @property
    def triggers(self) -> list[str]:
        """Every trigger name, in order of first appearance."""
        return list(dict.fromkeys(t.trigger for t in self.transitions))


@dataclass(frozen=True, slots=True)
class Edge:
    """One expanded transition: a single source, the real destination (``=`` resolved)."""

    trigger: str
    source: str
    dest: str
    guard: str | None
    unless: str | None
    on: str
    doc: str


def edges(spec: Spec) -> list[Edge]:
    """Every transition of ``spec`` expanded to one :class:`Edge` per source, in spec order."""
    out: list[Edge] = []
    for t in spec.transitions:
        for source in t.sources:
            dest = source if t.dest == REFLEXIVE else t.dest
            out.append(Edge(t.trigger, source, dest, t.guard, t.unless, t.on, t.doc))
    return out


def specs_dir() -> Path:
    """Where the specs live: ``$TURNSTILE_SPECS_DIR`` if set, else the ``specs/`` directory of the project."""
    override = os.environ.get(SPECS_ENV)
    if override:
        return Path(override)
    return _project_specs()


@cache
def _project_specs() -> Path:
    # Resolved once: every session's fold asks (through machine_for), and resolving is a filesystem walk.
    return Path(__file__).resolve().parent.parent / "specs"


def parse_spec(data: str, *, source: str = "<spec>", kind: str | None = None) -> Spec:
    """Parse and check one spec from TOML; ``source`` names it in errors, ``kind`` is its expected name."""
    try:
        raw = tomllib.loads(data)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: not valid TOML ({exc}); fix the file's syntax") from None
    try:
        spec = msgspec.convert(raw, Spec)
    except msgspec.ValidationError as exc:
        raise SpecError(f"{source}: {exc}; see engine/specs.py for the format") from None
    problems = check(spec, kind=kind)
    if problems:
        listed = "; ".join(problems)
        raise SpecError(f"{source}: {listed}")
    return spec


def load_spec(kind: str, directory: Path | None = None) -> Spec:
    """Load and check ``<directory>/<kind>.toml`` (default directory: :func:`specs_dir`)."""
    path = (directory or specs_dir()) / f"{kind}.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(
            f"cannot read the {kind} machine spec {path}: {exc.strerror or exc}; "
            f"restore specs/{kind}.toml or point {SPECS_ENV} at a directory that has it"
        ) from None
    return parse_spec(text, source=str(path), kind=kind)


@cache
def _load_default(kind: str, directory: str) -> Spec:
    return load_spec(kind, Path(directory))


def load_specs(kinds: Iterable[str] = KINDS) -> dict[str, Spec]:
    """The default specs by kind, loaded once per process (and per specs directory)."""
    directory = str(specs_dir())
    return {kind: _load_default(kind, directory) for kind in kinds}


# --- soundness ----------------------------------------------------------------------------------------------


def check(spec: Spec, *, kind: str | None = None) -> list[str]:
    """Every problem of ``spec`` as a readable sentence (empty when the machine is sound)."""
    problems: list[str] = []
    states = spec.states
    if kind is not None and spec.name != kind:
        problems.append(f"[machine] name is {spec.name!r} but the file is for the {kind!r} machine")
    if not states:
        return [*problems, "no states: add [states.NAME] tables"]
    if spec.initial not in states:
        problems.append(f"initial state {spec.initial!r} is not a declared state")
    elif states[spec.initial].terminal:
        problems.append(f"initial state {spec.initial!r} is terminal: a model would be born finished")
    if not spec.terminal:
        problems.append("no terminal state: mark at least one state `terminal = true`")
    for group in spec.groups:
        if group in states or not group.isidentifier():
            problems.append(f"group name {group!r} must be an identifier distinct from every state name")
    for name, state in states.items():
        if not name.isidentifier():
            problems.append(f"state name {name!r} is not an identifier")
        if state.group is not None and state.group not in spec.groups:
            problems.append(
                f"state {name!r} is in unknown group {state.group!r}: declare [groups.{state.group}]"
            )
    problems += _check_transitions(spec)
    if problems:
        return problems
    return _check_graph(spec)


def _check_transitions(spec: Spec) -> list[str]:
    problems: list[str] = []
    states = spec.states
    for i, t in enumerate(spec.transitions, start=1):
        where = f"transition #{i} ({t.trigger})"
        if not t.trigger.isidentifier() or keyword.iskeyword(t.trigger):
            problems.append(f"{where}: trigger {t.trigger!r} is not an identifier")
        elif t.trigger in _RESERVED or t.trigger.startswith(_RESERVED_PREFIXES) or t.trigger in states:
            problems.append(
                f"{where}: trigger {t.trigger!r} clashes with a state or with a name transitions puts on "
                "models (state, trigger, is_*, to_*, may_*); rename it"
            )
        if not t.sources:
            problems.append(f"{where}: empty source list")
        for source in t.sources:
            if source not in states:
                problems.append(f"{where}: unknown source state {source!r}")
            elif states[source].terminal:
                problems.append(f"{where}: leaves terminal state {source!r}; terminal states are absorbing")
        if t.dest != REFLEXIVE and t.dest not in states:
            problems.append(f"{where}: unknown destination state {t.dest!r}")
        for guard in (t.guard, t.unless):
            if guard is not None and guard not in spec.guards:
                problems.append(f"{where}: unknown guard {guard!r}: declare it under [guards]")
        if t.guard is not None and t.unless is not None:
            problems.append(f"{where}: give `guard` or `unless`, not both")
    if problems:
        return problems
    # One trigger from one state: a single unguarded transition, or alternatives that guards tell apart.
    seen: dict[tuple[str, str], list[Edge]] = {}
    for edge in edges(spec):
        seen.setdefault((edge.source, edge.trigger), []).append(edge)
    for (source, trigger), options in seen.items():
        if len(options) < 2:
            continue
        conditions = [(e.guard, e.unless) for e in options]
        if any(g is None and u is None for g, u in conditions) or len(set(conditions)) < len(conditions):
            problems.append(
                f"trigger {trigger!r} from {source!r} has {len(options)} transitions no guard tells apart"
            )
    return problems


def _check_graph(spec: Spec) -> list[str]:
    problems: list[str] = []
    out: dict[str, set[str]] = {name: set() for name in spec.states}
    for edge in edges(spec):
        if edge.dest != edge.source:
            out[edge.source].add(edge.dest)
    reachable = _closure({spec.initial}, out)
    for name in spec.states:
        if name not in reachable:
            problems.append(f"state {name!r} is unreachable from the initial state {spec.initial!r}")
    terminal = spec.terminal
    for name, targets in out.items():
        if spec.states[name].terminal:
            continue
        if not targets:
            problems.append(f"state {name!r} is a dead end: it has no way out and is not terminal")
        elif not (_closure({name}, out) & terminal):
            problems.append(f"state {name!r} cannot reach any terminal state: a model there would never end")
    return problems


def _closure(start: set[str], out: dict[str, set[str]]) -> set[str]:
    seen = set(start)
    todo = list(start)
    while todo:
        for nxt in out[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
