"""The transitions machines built from the specs: model-based paths over every transition, and a
cross-check of random trigger sequences against a direct reading of the spec (like h11's tests of its
state table)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnstile.engine.machines import (
    MachineKind,
    Model,
    machine_for,
    pool_machine,
    session_machine,
    stream_machine,
)
from turnstile.engine.specs import KINDS, Edge, load_specs


@dataclass
class Ctx:
    """A guard context for the pool: the guards read attributes."""

    at_target: bool = False


def ctx_for(edge: Edge) -> Ctx:
    """A context under which ``edge``'s guard holds."""
    if edge.guard is not None:
        return Ctx(**{edge.guard: True})
    if edge.unless is not None:
        return Ctx(**{edge.unless: False})
    return Ctx()


def path_to(kind: MachineKind, target: str) -> list[Edge]:
    """The shortest list of state-changing edges from the initial state to ``target`` (BFS)."""
    seen: dict[str, list[Edge]] = {kind.initial: []}
    todo: deque[str] = deque([kind.initial])
    while todo:
        state = todo.popleft()
        if state == target:
            return seen[state]
        for edge in kind.edges:
            if edge.source == state and edge.dest not in seen:
                seen[edge.dest] = [*seen[state], edge]
                todo.append(edge.dest)
    raise AssertionError(f"{target} unreachable")


def check_invariants(kind: MachineKind, model: Model) -> None:
    assert model.state in kind.states
    if kind.is_terminal(model.state):
        # terminal is absorbing: nothing fires, nothing moves
        for trigger in kind.triggers:
            assert kind.fire(model, trigger, Ctx(at_target=True)) is None
            assert kind.fire(model, trigger, Ctx(at_target=False)) is None
        assert kind.is_terminal(model.state)


@pytest.mark.parametrize("kind_name", KINDS)
def test_every_transition_of_every_spec_is_taken(kind_name: str) -> None:
    kind = machine_for(kind_name)
    assert kind.edges
    for edge in kind.edges:
        model = Model()
        kind.add(model)
        try:
            for step in path_to(kind, edge.source):
                assert kind.fire(model, step.trigger, ctx_for(step)) == step.dest
                check_invariants(kind, model)
            assert model.state == edge.source
            assert kind.fire(model, edge.trigger, ctx_for(edge)) == edge.dest, edge
            assert model.state == edge.dest
            check_invariants(kind, model)
        finally:
            kind.remove(model)


def test_one_machine_per_kind_shared_by_all_models() -> None:
    assert stream_machine() is stream_machine() is machine_for("stream")
    assert session_machine() is machine_for("session")
    assert pool_machine() is machine_for("pool")
    assert stream_machine().machine is not session_machine().machine


@pytest.mark.parametrize("kind_name", KINDS)
def test_no_auto_transitions_and_bare_models(kind_name: str) -> None:
    kind = machine_for(kind_name)
    assert not any(name.startswith("to_") for name in kind.machine.events)
    assert set(kind.machine.events) == set(kind.spec.triggers)
    model = Model()
    kind.add(model)
    try:
        # nothing but `state` is bound on a model: no trigger methods that could clash or bypass the fold
        assert not hasattr(model, "__dict__")
        assert model.state == kind.initial
        assert kind.machine.on_exception == []
    finally:
        kind.remove(model)


def test_illegal_trigger_returns_none_and_does_not_move() -> None:
    kind = stream_machine()
    model = Model()
    kind.add(model)
    try:
        assert kind.fire(model, "tool_result") is None  # not from queued
        assert kind.fire(model, "no_such_trigger") is None
        assert model.state == "queued"
        assert kind.fire(model, "dispatch") == "dispatched"
        assert kind.fire(model, "dispatch") is None
        assert kind.allows("queued", "dispatch") and not kind.allows("dispatched", "dispatch")
    finally:
        kind.remove(model)


def test_unguarded_self_loop_is_legal_and_changes_nothing() -> None:
    kind = stream_machine()
    model = Model()
    kind.add(model)
    try:
        kind.fire(model, "think")
        assert kind.fire(model, "think") == "thinking"
        assert model.state == "thinking"
    finally:
        kind.remove(model)


def test_pool_guards_choose_the_destination() -> None:
    kind = pool_machine()
    model = Model()
    kind.add(model)
    try:
        assert kind.fire(model, "start", Ctx(at_target=False)) == "warming"
        assert kind.fire(model, "process_ready", Ctx(at_target=False)) == "warming"
        assert kind.fire(model, "process_ready", Ctx(at_target=True)) == "ready"
        assert kind.fire(model, "process_gone", Ctx(at_target=False)) == "warming"
        assert kind.dests("warming", "process_ready") == ("ready", "warming")
    finally:
        kind.remove(model)


def test_models_leave_the_machine() -> None:
    kind = stream_machine()
    before = kind.live()
    models = [Model() for _ in range(10)]
    for m in models:
        kind.add(m)
    kind.add(models[0])  # adding twice is a no-op
    assert kind.live() == before + 10
    for m in models:
        kind.remove(m)
    kind.remove(models[0])  # removing twice is a no-op
    assert kind.live() == before
    assert models[3].state == "queued"  # still readable after leaving


def test_a_model_can_join_in_a_given_state() -> None:
    kind = session_machine()
    model = Model()
    kind.add(model, "idle")
    try:
        assert model.state == "idle"
    finally:
        kind.remove(model)


def test_missing_trigger_is_reported_against_the_spec() -> None:
    from turnstile.engine.errors import SpecError

    with pytest.raises(SpecError, match=r"specs/stream\.toml has no trigger 'warp'"):
        stream_machine().require(triggers=["dispatch", "warp"], user="a test")


# --- cross-check: random trigger sequences against a direct reading of the spec -------------------------


def reference_step(kind_name: str, state: str, trigger: str, at_target: bool) -> str | None:
    """What the spec says ``trigger`` does from ``state`` (None: not allowed or no guard holds)."""
    for edge in (e for e in _edges(kind_name) if e.source == state and e.trigger == trigger):
        if edge.guard is not None and not at_target:
            continue
        if edge.unless is not None and at_target:
            continue
        return edge.dest
    return None


def _edges(kind_name: str) -> list[Edge]:
    from turnstile.engine.specs import edges

    return edges(load_specs()[kind_name])


@settings(max_examples=300, deadline=None)
@given(
    kind_name=st.sampled_from(KINDS),
    steps=st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=40),
)
def test_random_trigger_sequences_match_the_spec(kind_name: str, steps: list[tuple[int, bool]]) -> None:
    kind = machine_for(kind_name)
    triggers = [*kind.triggers, "bogus"]
    model = Model()
    kind.add(model)
    try:
        for index, at_target in steps:
            trigger = triggers[index % len(triggers)]
            state = model.state
            expected = reference_step(kind_name, state, trigger, at_target)
            got = kind.fire(model, trigger, Ctx(at_target=at_target))
            assert got == expected, (state, trigger, at_target)
            assert model.state == (expected if expected is not None else state)
            check_invariants(kind, model)
    finally:
        kind.remove(model)


# --- cross-check: the lean subclasses against transitions' own public machine -------------------------


class _PublicModel:
    """A model transitions' own ``add_model`` can bind its methods on (``Model`` has ``__slots__``)."""

    state: str


def _public_machine(kind: MachineKind) -> object:
    """The same spec as a plain ``transitions.Machine``: default classes, nothing of ours."""
    from transitions import Machine

    from turnstile.engine import machines

    conditions = {name: machines._condition(name) for name in kind.spec.guards}
    return Machine(
        model=None,
        states=list(kind.states),
        initial=kind.initial,
        transitions=[machines._transition(edge, conditions) for edge in kind.edges],
        auto_transitions=False,
        send_event=False,
        ignore_invalid_triggers=True,
    )


@settings(max_examples=300, deadline=None)
@given(
    kind_name=st.sampled_from(KINDS),
    steps=st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=40),
)
def test_the_lean_machine_moves_as_transitions_own_does(
    kind_name: str, steps: list[tuple[int, bool]]
) -> None:
    """The private subclasses (bench/machines.py: they double replay throughput) change how transitions
    runs, never where a model goes: transitions' own Machine, fed the same triggers, agrees at every step."""
    kind = machine_for(kind_name)
    public = _public_machine(kind)
    model, twin = Model(), _PublicModel()
    kind.add(model)
    public.add_model(twin)  # type: ignore[attr-defined]
    try:
        for index, at_target in steps:
            trigger = kind.triggers[index % len(kind.triggers)]
            if model.state in kind.terminal:
                break
            kind.fire(model, trigger, Ctx(at_target=at_target))
            twin.trigger(trigger, Ctx(at_target=at_target))  # type: ignore[attr-defined]
            assert model.state == twin.state, (trigger, at_target)
    finally:
        kind.remove(model)
