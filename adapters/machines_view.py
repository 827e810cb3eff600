"""The machine specs as JSON for clients: the console draws "where can this go next" from them, and the
replay viewer lays out the state diagrams (``diagram``: the same drawing as ``docs/machines.md``)."""

from __future__ import annotations

from functools import cache
from typing import Any

from turnstile.engine.diagram import drawing
from turnstile.engine.specs import edges, load_specs

__all__ = ["machines_json"]


@cache
def machines_json() -> dict[str, Any]:
    """``{kind: {initial, terminal, states: {name: {doc, terminal, group, phase}}, transitions: [...],
    diagram: {initial, groups, inner, outer, terminal}}}``."""
    out: dict[str, Any] = {}
    for kind, spec in load_specs().items():
        drawn = drawing(spec)
        out[kind] = {
            "title": spec.machine.title,
            "initial": spec.initial,
            "terminal": sorted(spec.terminal),
            "states": {
                name: {"doc": st.doc.strip(), "terminal": st.terminal, "group": st.group, "phase": st.phase}
                for name, st in spec.states.items()
            },
            "transitions": [
                {"trigger": e.trigger, "source": e.source, "dest": e.dest, "on": e.on} for e in edges(spec)
            ],
            "diagram": {
                "initial": drawn.initial,
                "groups": drawn.groups,
                "inner": {group: [a._asdict() for a in arrows] for group, arrows in drawn.inner.items()},
                "outer": [a._asdict() for a in drawn.outer],
                "terminal": drawn.terminal,
            },
        }
    return out
