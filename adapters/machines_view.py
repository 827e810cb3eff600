"""The machine specs as JSON for clients (the console draws "where can this go next" from them)."""

from __future__ import annotations

from functools import cache
from typing import Any

from turnstile.engine.specs import edges, load_specs

__all__ = ["machines_json"]


@cache
def machines_json() -> dict[str, Any]:
    """``{kind: {initial, terminal, states: {name: {doc, terminal, group}}, transitions: [...]}}``."""
    out: dict[str, Any] = {}
    for kind, spec in load_specs().items():
        out[kind] = {
            "title": spec.machine.title,
            "initial": spec.initial,
            "terminal": sorted(spec.terminal),
            "states": {
                name: {"doc": st.doc.strip(), "terminal": st.terminal, "group": st.group}
                for name, st in spec.states.items()
            },
            "transitions": [
                {"trigger": e.trigger, "source": e.source, "dest": e.dest, "on": e.on} for e in edges(spec)
            ],
        }
    return out
