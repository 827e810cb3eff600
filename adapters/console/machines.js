// The machine panel (behind the "machines" toggle): the session's, the latest turn's and the pool's state,
// and the states each can go to next, from GET /v1/machines — the specs/ the docs are generated from.

import { h } from "./util.js";

/** The states `kind` can go to from `state` (transitions that change state; the spec's order). */
export function nextStates(machines, kind, state) {
  const spec = machines && machines[kind];
  const next = [];
  if (!spec) return next;
  for (const t of spec.transitions) {
    if (t.source.includes(state) && t.dest !== "=" && t.dest !== state && !next.includes(t.dest)) next.push(t.dest);
  }
  return next;
}

/** "label state → next · next" into `el` (hover a state for the spec's text). */
export function renderMachine(el, machines, kind, state, label, id = "") {
  el.replaceChildren();
  delete el.dataset.state;
  if (!state) return;
  const spec = machines && machines[kind];
  const doc = (name) => (spec && spec.states[name] ? spec.states[name].doc : "");
  const next = nextStates(machines, kind, state);
  el.dataset.state = state;
  el.append(
    h("span", { class: "label" }, label, id ? h("code", { class: "machine-id" }, id) : null),
    h("span", { class: `chip state-${state}`, "data-testid": "machine-state", title: doc(state) }, state),
    h("span", { class: "arrow" }, next.length ? "→" : "(final)"),
    ...next.map((s) => h("span", { class: "next", "data-testid": "machine-next", title: doc(s) }, s)),
  );
}
