// Sessions as the page knows them, from one source: the server's live summaries (GET /v1/sessions/events)
// kept in a SessionStore, and the sidebar that draws them.
//
// One source of truth: the sidebar, the session header and the machine panel all read the store. A
// summary carries the session's log position (`last_seq`); the store never replaces a summary with an
// older one, and a turn's own stream (which may be a few milliseconds ahead of the summaries) moves the
// store forward with the turn's terminal entry — so no part of the page says "busy / responding" about a
// turn another part already shows DONE.

import { approvals } from "./approvals.js";
import { LiveFeed } from "./api.js";
import { formatAgo, formatCost, h, sessionTitle } from "./util.js";

export class SessionStore extends EventTarget {
  constructor() {
    super();
    this.byId = new Map();
    this.loaded = false;
  }

  /** A `sessions` snapshot: exactly these sessions. */
  replaceAll(list) {
    const next = new Map();
    for (const info of list) {
      const known = this.byId.get(info.id);
      next.set(info.id, known && known.last_seq > info.last_seq ? known : info);
    }
    this.byId = next;
    this.loaded = true;
    this.changed(null);
  }

  /** A `session` summary (or a session this page just created): kept unless older than what we have. */
  upsert(info) {
    const known = this.byId.get(info.id);
    if (known && known.last_seq > info.last_seq) return;
    this.byId.set(info.id, info);
    this.changed(info.id);
  }

  remove(id) {
    if (this.byId.delete(id)) this.changed(id, true);
  }

  /** A turn's terminal entry, seen on the turn's own stream: the store shows it ended at once. */
  noteTurnEnded(sid, entry) {
    const info = this.byId.get(sid);
    if (!info || info.last_seq >= entry.seq) return;
    const turns = info.turns.map((t) =>
      t.id === entry.stream
        ? { ...t, state: entry.outcome, outcome: entry.outcome, reason: entry.reason || "", ended: true, timing: entry.timing || t.timing }
        : t,
    );
    const active = info.active_stream === entry.stream ? null : info.active_stream;
    this.byId.set(sid, { ...info, turns, active_stream: active, last_seq: entry.seq, last_activity: entry.ts ?? info.last_activity });
    this.changed(sid);
  }

  get(id) {
    return this.byId.get(id) || null;
  }

  /** Every session, the most recently active first. */
  list() {
    return [...this.byId.values()].sort(
      (a, b) => (b.last_activity ?? b.created_at) - (a.last_activity ?? a.created_at) || b.created_at - a.created_at,
    );
  }

  changed(id, removed = false) {
    this.dispatchEvent(new CustomEvent("change", { detail: { id, removed } }));
  }

  /** Follow the server's summaries; `onState` gets "connecting" / "live" / "reconnecting". */
  follow(onState) {
    return new LiveFeed(
      "/v1/sessions/events",
      {
        sessions: (data) => this.replaceAll(data.sessions || []),
        session: (info) => this.upsert(info),
        "session.deleted": (data) => this.remove(data.id),
      },
      onState,
    ).start();
  }
}

/** What a session's state chip says: "restarted" (not "crashed") after a server restart. */
export function stateLabel(info) {
  if (info.state === "crashed" && info.restarted) return { text: "restarted", cls: "state-restarted", title: "server restarted — next turn resumes the conversation" };
  return { text: info.state, cls: `state-${info.state}`, title: "" };
}

export function totalCost(info) {
  let sum = null;
  for (const t of info.turns) {
    const cost = t.timing && t.timing.cost_usd;
    if (typeof cost === "number") sum = (sum ?? 0) + cost;
  }
  return sum;
}

function matches(info, needle) {
  if (!needle) return true;
  const hay = [sessionTitle(info), info.id, info.state, info.restarted ? "restarted" : "", info.agent && info.agent.cwd, info.agent && info.agent.model]
    .filter(Boolean)
    .join(" ")
    .toLowerCase();
  return needle
    .toLowerCase()
    .split(/\s+/)
    .every((word) => hay.includes(word));
}

/** The sidebar: filter box, one card per session (title, state, activity, turns, cost). */
export class SessionList {
  constructor(store, { list, empty, filter, onSelect }) {
    this.store = store;
    this.listEl = list;
    this.emptyEl = empty;
    this.filterEl = filter;
    this.onSelect = onSelect;
    this.selected = null;
    this.filterEl.addEventListener("input", () => this.render());
    this.filterEl.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.filterEl.value) {
        e.stopPropagation();
        this.filterEl.value = "";
        this.render();
      }
    });
    store.addEventListener("change", () => this.render());
    // "2 min ago" ages by itself: redraw the times now and then (no request is made).
    setInterval(() => this.refreshTimes(), 15000);
  }

  visible() {
    const needle = this.filterEl.value.trim();
    return this.store.list().filter((info) => matches(info, needle));
  }

  select(id) {
    this.selected = id;
    this.render();
  }

  render() {
    const shown = this.visible();
    this.listEl.replaceChildren(...shown.map((info) => this.card(info)));
    const total = this.store.byId.size;
    this.emptyEl.hidden = shown.length > 0 || !this.store.loaded;
    this.emptyEl.textContent = total ? "No session matches the filter." : "No sessions yet.";
  }

  card(info) {
    const label = stateLabel(info);
    const cost = totalCost(info);
    const turns = info.turns.length;
    const waiting = approvals.pendingFor(info);
    const running = info.turns.find((t) => !t.ended);
    const li = h(
      "li",
      {
        class: info.id === this.selected ? "session selected" : "session",
        "data-testid": "session-item",
        "data-session-id": info.id,
        "data-state": info.state,
        "aria-current": info.id === this.selected ? "true" : null,
        tabindex: "0",
        onclick: () => this.onSelect(info.id),
        onkeydown: (e) => {
          if (e.key === "Enter") this.onSelect(info.id);
        },
      },
      h(
        "div",
        { class: "session-line" },
        h("span", { class: "session-name", "data-testid": "session-name", title: info.id }, sessionTitle(info)),
        h("span", { class: `chip ${label.cls}`, "data-testid": "session-state", title: label.title }, label.text),
      ),
      h(
        "div",
        { class: "session-line muted" },
        h("span", { "data-testid": "session-activity", "data-ts": info.last_activity ?? "" }, formatAgo(info.last_activity)),
        h("span", { class: "sep" }, "·"),
        h("span", { "data-testid": "session-turns" }, `${turns} turn${turns === 1 ? "" : "s"}`),
        cost !== null ? h("span", { class: "sep" }, "·") : null,
        cost !== null ? h("span", { "data-testid": "session-cost" }, formatCost(cost)) : null,
        running ? h("span", { class: "running-dot", "data-testid": "session-running", title: `${running.id} running` }) : null,
        waiting ? h("span", { class: "chip waiting", "data-testid": "waiting-badge" }, "waiting for you") : null,
      ),
    );
    return li;
  }

  refreshTimes() {
    for (const el of this.listEl.querySelectorAll("[data-testid=session-activity]")) {
      const ts = el.dataset.ts ? Number(el.dataset.ts) : null;
      el.textContent = formatAgo(ts);
    }
  }
}
