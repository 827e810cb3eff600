"""What the lean ``transitions`` subclasses buy: replay through them vs through transitions' public API.

``engine/machines.py`` builds its machines with four private subclasses (``_QuietState``,
``_QuietTransition``, ``_QuietEvent``, ``_LeanMachine``) that skip transitions' debug logging, its empty
callback lists and the per-model method binding. The rule (issue "One sans-IO place decides a turn's
life"): they stay only if transitions' public API costs more than 5 % of replay throughput. This script
measures it in one run, interleaved, on the replay benchmark's two corpora:

* ``lean``   — the machines as the fold builds them today;
* ``public`` — ``transitions.Machine`` with its default state, transition and event classes, models added
  with ``Machine.add_model`` (which binds ``model.trigger`` and friends), and triggers fired through the
  public ``Event.trigger`` (``machine.events[name].trigger(model, ctx)``). The spec table still answers
  illegal triggers first, as the fold requires (illegal triggers never raise).

It prints entries/s for each and the public API's cost as a fraction of the lean rate.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import _common  # noqa: F401  (puts the repo root on sys.path)
from _common import note, table, target
from replay import best_rate, decode_fold_timing, transcript_corpus, turnstile_corpus
from transitions import Machine

import turnstile.engine.machines as machines
from turnstile.engine.machines import MachineKind, Model


class PublicModel:
    """A model transitions may bind methods on (``Model`` has ``__slots__``, so it cannot)."""

    state: str


class PublicMachineKind(MachineKind):
    """:class:`MachineKind` built and fired through transitions' public API only."""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)  # the spec table (illegal triggers, stays), and a lean machine we replace
        conditions = {name: machines._condition(name) for name in spec.guards}
        self.machine = Machine(
            model=None,
            states=list(self.states),
            initial=spec.initial,
            transitions=[machines._transition(edge, conditions) for edge in self.edges],
            auto_transitions=False,
            send_event=False,
            ignore_invalid_triggers=False,
            name=f"{spec.name}: ",
        )

    def add(self, model: Model, state: str | None = None) -> None:
        self.machine.add_model(model, initial=state or self.initial)

    def fire(self, model: Model, trigger: str, ctx: object = None) -> str | None:
        source = model.state
        if not self.allows(source, trigger):
            return None
        if self._routes.get((source, trigger)) is None:
            return source  # an unguarded stay, answered from the table as the lean kind does
        if self.machine.events[trigger].trigger(model, ctx):
            return model.state
        return None


@contextmanager
def public_machines() -> Iterator[None]:
    """Make the fold build its machines with :class:`PublicMachineKind` (and bare models it can bind)."""
    built = machines._built
    fold_model = machines.Model

    def public_built(kind: str, directory: str) -> MachineKind:
        return PublicMachineKind(machines.load_specs([kind])[kind])

    import turnstile.engine.fold as fold

    machines._built = public_built  # type: ignore[assignment]
    fold.Model = PublicModel  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        machines._built = built
        fold.Model = fold_model  # type: ignore[misc]


def rate_with(public: bool, data: bytes) -> float:
    if public:
        with public_machines():
            return best_rate(decode_fold_timing, data)[0]
    return best_rate(decode_fold_timing, data)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200_000, help="corpus size (entries)")
    parser.add_argument("--quick", action="store_true", help="a small corpus (smoke test)")
    args = parser.parse_args()
    size = 5_000 if args.quick else args.entries
    rows = []
    worst = 0.0  # the largest share of throughput the public API costs, over the corpora
    for name, (data, _count) in (
        ("transcript", transcript_corpus(size)),
        ("turnstile", turnstile_corpus(size)),
    ):
        lean = public = 0.0
        for _ in range(1 if args.quick else 3):  # interleaved: the machine's noise hits both sides
            lean = max(lean, rate_with(False, data))
            public = max(public, rate_with(True, data))
        cost = 1 - public / lean
        worst = max(worst, cost)
        rows.append((name, f"{lean:,.0f}", f"{public:,.0f}", f"{cost:.1%}"))
    table(
        "replay entries/s: lean transitions subclasses vs transitions' public API",
        ("corpus", "lean", "public API", "public API costs"),
        rows,
    )
    # The subclasses earn their keep when the public API would cost more than 5 %: lean/public > 1/0.95.
    target("lean subclasses vs the public API (they stay above 1.05x)", 1 / (1 - worst), 1 / 0.95)
    verdict = "the lean subclasses stay" if worst > 0.05 else "the public API is cheap enough: drop them"
    note(f"the public API costs up to {worst:.1%} of replay throughput (the rule: 5 %): {verdict}")
    note("Both sides run the same fold and spec table; only how transitions is built and fired differs.")


if __name__ == "__main__":
    main()
