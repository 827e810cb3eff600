"""The ``transitions`` machines built from ``specs/`` — one machine per kind, many models (sans-IO).

Each kind of machine (``session``, ``stream``, ``pool``) is one :class:`transitions.Machine`, built once per
process from its spec (:mod:`engine.specs`), and every session, stream or pool is a *model* of it: a bare
object whose ``state`` attribute the machine sets. :class:`MachineKind` wraps the machine with the few
operations the fold needs::

    kind = stream_machine()
    model = Model()
    kind.add(model)                    # joins the machine in the initial state ("queued")
    kind.fire(model, "dispatch")       # -> "dispatched"
    kind.fire(model, "dispatch")       # -> None: illegal in "dispatched" (the caller records a violation)
    kind.remove(model)                 # when the model is terminal, it leaves the machine

How we use transitions, and why:

* ``auto_transitions=False``: no ``to_<state>`` backdoors around the spec (and 6x cheaper construction).
* Illegal triggers never raise. :meth:`MachineKind.fire` looks the (state, trigger) pair up in the spec's
  table first and returns ``None`` when the spec does not allow it; transitions itself keeps
  ``ignore_invalid_triggers`` off, so a disagreement between the table and the machine is a loud bug,
  not a silent no-op.
* A transition that stays in its state without a guard (thinking -> thinking) is legal but changes
  nothing; it is answered from the table without running transitions (a trigger costs ~10 us).
* No callbacks: the fold reads the source and destination around :meth:`MachineKind.fire` itself, so
  nothing can fail half-way through a transition (transitions has no rollback), and no ``on_exception``
  is set (transitions' handler would catch ``BaseException``, swallowing trio's ``Cancelled``).
* Guards are the only code transitions calls: each spec guard ``g`` becomes the condition
  ``bool(ctx.g)`` on the context object passed to :meth:`MachineKind.fire` — a plain attribute read.
* Models are bare and nothing is bound on them but ``state``: :class:`_LeanMachine` does not bind one
  method per trigger and per state on every model (~30 us per model, and silently skipped on a name
  clash); the fold fires through ``machine.events[trigger]`` instead.
* Our states and transitions have no callbacks, so :class:`_QuietState` and :class:`_QuietTransition`
  (transitions' ``state_cls`` / ``transition_cls`` extension points) skip the empty callback lists and
  the debug logging around them: a trigger costs ~4 us instead of ~8 us. Checks, conditions and state
  changes are transitions' own.
* ``Machine.add_model`` checks membership in a list, so its cost grows with live models: the fold removes
  each model as soon as it is terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from functools import cache
from typing import Any, Final, TypeAlias, cast

from transitions import Event, EventData, Machine, State, Transition

from turnstile.engine.errors import SpecError
from turnstile.engine.specs import Edge, Spec, edges, load_specs, specs_dir

__all__ = [
    "MachineKind",
    "Model",
    "machine_for",
    "pool_machine",
    "session_machine",
    "stream_machine",
]


class Model:
    """A bare model: the machine sets ``state`` on it. Keep it bare — transitions silently refuses to bind
    a trigger whose name collides with a model attribute."""

    __slots__ = ("__weakref__", "state")

    state: str


class _QuietState(State):
    """A state that runs its enter/exit callbacks (when it has any) without logging around them."""

    def enter(self, event_data: EventData) -> None:
        if self.on_enter:
            event_data.machine.callbacks(self.on_enter, event_data)

    def exit(self, event_data: EventData) -> None:
        if self.on_exit:
            event_data.machine.callbacks(self.on_exit, event_data)


class _QuietTransition(Transition):
    """``Transition.execute`` in the same order (prepare, conditions, before, change, after), minus the
    debug logging and the calls over empty callback lists."""

    def execute(self, event_data: EventData) -> bool:
        machine = event_data.machine
        if self.prepare:
            machine.callbacks(self.prepare, event_data)
        if self.conditions and not self._eval_conditions(event_data):
            return False
        if machine.before_state_change or self.before:
            machine.callbacks([*machine.before_state_change, *self.before], event_data)
        if self.dest:
            # transitions' _change_state: exit the source, set the model's state, enter the destination,
            # then the machine's on_final for a final state (each state looked up once, not three times).
            states = machine.states
            source = states[self.source]
            if source.on_exit:
                source.exit(event_data)
            dest = states[self.dest]
            setattr(event_data.model, machine.model_attribute, dest.value)
            event_data.state = dest
            if dest.on_enter:
                dest.enter(event_data)
            if dest.final and machine.on_final:
                machine.callbacks(machine.on_final, event_data)
        if self.after or machine.after_state_change:
            machine.callbacks([*self.after, *machine.after_state_change], event_data)
        return True


class _QuietEvent(Event):
    """``Event.trigger`` for a machine built as :class:`MachineKind` builds it — no queue, no machine-level
    ``prepare_event`` / ``finalize_event`` / ``on_exception`` callbacks (checked there) — minus the
    ``functools.partial`` hop through ``Machine._process`` and the calls over those empty lists.

    The same steps as transitions: look the model's state up, refuse a trigger with no transition from it
    (``MachineError``), try the transitions from that state in order until one executes. An exception
    propagates, as it does without ``on_exception``.
    """

    def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:
        state = self.machine.get_model_state(model)
        if state.name not in self.transitions:
            self._is_valid_source(state)  # raises MachineError (ignore_invalid_triggers is off)
        # (MachineKind.fire runs the same loop inline, with the state and transitions looked up in advance)
        event_data = EventData(state, self, self.machine, model, args=args, kwargs=kwargs)
        for trans in self.transitions[state.name]:
            event_data.transition = trans
            if trans.execute(event_data):
                event_data.result = True
                return True
        return False


class _LeanMachine(Machine):
    """A Machine whose ``add_model`` only sets the model's initial state and registers it.

    transitions' own ``add_model`` also binds ``model.<trigger>()``, ``model.may_<trigger>()`` and
    ``model.is_<state>()`` for every trigger and state; the fold never uses them (it fires through
    ``machine.events`` and reads ``model.state``), and binding them is most of the cost of a new stream.
    """

    state_cls = _QuietState
    transition_cls = _QuietTransition
    event_cls = _QuietEvent

    def get_state(self, state: str | Enum) -> State:
        # Our states are plain strings: one dict lookup (transitions first checks for an Enum). Anything
        # else, or an unknown name, takes transitions' own path (and its error).
        if type(state) is str:
            found = self.states.get(state)
            if found is not None:
                return found
        return super().get_state(state)

    def add_model(self, model: Any, initial: str | Enum | State | None = None) -> None:
        state = initial if initial is not None else self.initial
        if state is None:  # pragma: no cover - every spec has an initial state
            raise ValueError("no initial state configured for the machine")
        value = (state if isinstance(state, State) else self.get_state(state)).value
        for mod in model if isinstance(model, list) else [model]:
            if mod not in self.models:
                setattr(mod, self.model_attribute, value)  # what set_state does, for one model
                self.models.append(mod)


_Route: TypeAlias = tuple[_QuietEvent, State, list[Transition]]
_STAY: Final = "="  # table marker: an unguarded transition back to its own source
_NO_ROUTE: Final[Any] = object()


def _condition(name: str) -> Callable[[object], bool]:
    def guard(ctx: object) -> bool:
        return bool(getattr(ctx, name))

    guard.__name__ = f"guard_{name}"
    return guard


class MachineKind:
    """One kind of machine: the spec, its :class:`transitions.Machine`, and a lookup table over the spec."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.name = spec.name
        self.initial = spec.initial
        self.terminal: frozenset[str] = spec.terminal
        self.states: tuple[str, ...] = tuple(spec.states)
        self.triggers: tuple[str, ...] = tuple(spec.triggers)
        self.edges: tuple[Edge, ...] = tuple(edges(spec))
        conditions = {name: _condition(name) for name in spec.guards}
        self.machine = _LeanMachine(
            model=None,
            states=[_QuietState(name, final=name in self.terminal) for name in self.states],
            initial=spec.initial,
            transitions=[_transition(edge, conditions) for edge in self.edges],
            auto_transitions=False,
            send_event=False,
            ignore_invalid_triggers=False,
            name=f"{spec.name}: ",
        )
        machine = self.machine
        if machine.has_queue or machine.prepare_event or machine.finalize_event or machine.on_exception:
            raise AssertionError(
                "_QuietEvent skips the queue and machine-level event callbacks"
            )  # pragma: no cover
        self._events: dict[str, Event] = dict(self.machine.events)
        # (state, trigger) -> "=" for an unguarded stay, else the trigger to run through transitions.
        self._plan: dict[tuple[str, str], str] = {}
        for edge in self.edges:
            key = (edge.source, edge.trigger)
            unguarded_stay = edge.dest == edge.source and edge.guard is None and edge.unless is None
            self._plan[key] = _STAY if unguarded_stay and key not in self._plan else edge.trigger
        # The same table resolved for fire(): the event, the source State and the event's transitions from
        # it (looked up once here, not on every fire); None for an unguarded stay.
        self._routes: dict[tuple[str, str], _Route | None] = {}
        for (source, trigger), plan in self._plan.items():
            if plan is _STAY:
                self._routes[source, trigger] = None
            else:
                event = cast(_QuietEvent, self._events[plan])
                self._routes[source, trigger] = (event, machine.states[source], event.transitions[source])
        self._dests: dict[tuple[str, str], tuple[str, ...]] = {}
        for edge in self.edges:
            key = (edge.source, edge.trigger)
            self._dests[key] = (*self._dests.get(key, ()), edge.dest)

    # -- models ------------------------------------------------------------------------------------------

    def add(self, model: Model, state: str | None = None) -> None:
        """Add ``model`` to the machine, in ``state`` (default: the initial state)."""
        self.machine.add_model(model, initial=state or self.initial)

    def remove(self, model: Model) -> None:
        """Take ``model`` out of the machine (a no-op when it is not in it). Its ``state`` stays readable."""
        if model in self.machine.models:  # (not contextlib.suppress: this runs once per stream)
            self.machine.remove_model(model)

    def live(self) -> int:
        """How many models the machine holds."""
        return len(self.machine.models)

    # -- transitions -----------------------------------------------------------------------------------

    def fire(self, model: Model, trigger: str, ctx: object = None) -> str | None:
        """Fire ``trigger`` on ``model``; return its new state, or ``None`` when the spec does not allow it.

        ``ctx`` is the object guards read (``bool(ctx.<guard>)``). Never raises for an illegal trigger;
        an exception from transitions here would mean the table and the machine disagree (a bug).
        """
        source = model.state
        key = (source, trigger)
        route = self._routes.get(key, _NO_ROUTE)
        if route is None:
            return source  # an unguarded stay: nothing to run
        if route is _NO_ROUTE:
            return None
        # _QuietEvent.trigger's loop, inline: the event's transitions from the source, in order.
        event, state, candidates = route
        event_data = EventData(state, event, self.machine, model, args=(ctx,), kwargs={})
        for trans in candidates:
            event_data.transition = trans
            if trans.execute(event_data):
                event_data.result = True
                return model.state
        return None

    def allows(self, state: str, trigger: str) -> bool:
        """Whether the spec has a transition for ``trigger`` from ``state`` (guards aside)."""
        return (state, trigger) in self._plan

    def dests(self, state: str, trigger: str) -> tuple[str, ...]:
        """The possible destinations of ``trigger`` from ``state`` (several when guarded)."""
        return self._dests.get((state, trigger), ())

    def is_terminal(self, state: str) -> bool:
        """Whether ``state`` is terminal (absorbing)."""
        return state in self.terminal

    def require(self, *, triggers: Iterable[str] = (), states: Iterable[str] = (), user: str) -> None:
        """Fail with a clear :class:`SpecError` when the spec lacks a trigger or state that ``user`` fires."""
        missing_t = sorted(set(triggers) - set(self.triggers))
        missing_s = sorted(set(states) - set(self.states))
        if missing_t or missing_s:
            what = ", ".join([*(f"trigger {t!r}" for t in missing_t), *(f"state {s!r}" for s in missing_s)])
            raise SpecError(
                f"specs/{self.name}.toml has no {what}, which {user} needs; "
                "restore them in the spec or update the code that fires them"
            )

    def __repr__(self) -> str:
        return f"<MachineKind {self.name}: {len(self.states)} states, {self.live()} live models>"


def _transition(edge: Edge, conditions: dict[str, Callable[[object], bool]]) -> dict[str, Any]:
    spec: dict[str, Any] = {"trigger": edge.trigger, "source": edge.source, "dest": edge.dest}
    if edge.guard is not None:
        spec["conditions"] = [conditions[edge.guard]]
    if edge.unless is not None:
        spec["unless"] = [conditions[edge.unless]]
    return spec


@cache
def _built(kind: str, directory: str) -> MachineKind:
    return MachineKind(load_specs([kind])[kind])


def machine_for(kind: str) -> MachineKind:
    """The process-wide machine of ``kind``, built from its spec on first use."""
    return _built(kind, str(specs_dir()))


def session_machine() -> MachineKind:
    """The session machine (``specs/session.toml``)."""
    return machine_for("session")


def stream_machine() -> MachineKind:
    """The stream machine (``specs/stream.toml``)."""
    return machine_for("stream")


def pool_machine() -> MachineKind:
    """The pool machine (``specs/pool.toml``)."""
    return machine_for("pool")
