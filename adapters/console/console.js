// Turnstile's web console: plain ES modules, no build step. It speaks only the public API (docs/api.md).
//
//   util.js          DOM building, formatting, the simulator's prompt directives
//   api.js           JSON calls; LiveFeed (an EventSource that never gives up)
//   markdown.js      answers as sanitized markdown, highlighted code with a copy button
//   turn-view.js     one turn rendered from its entries
//   turn-stream.js   one turn's SSE: LIVE / RECONNECTING / DONE, resume, retry, 204
//   sessions.js      the sessions: one store fed live by the server, and the sidebar
//   machines.js      the machine panel (behind the "machines" toggle)
//   new-session.js   the New session dialog (working directory picker, model, permission mode)
//   approvals.js     the seam for tool approvals (issue 17): no-ops today
//   console.js       this file: the page — selection, header, transcript, composer, keyboard

import { api, withParams } from "./api.js";
import { renderMachine } from "./machines.js";
import { NewSessionDialog } from "./new-session.js";
import { SessionList, SessionStore, stateLabel, totalCost } from "./sessions.js";
import { TurnStream } from "./turn-stream.js";
import { TurnView } from "./turn-view.js";
import { $, formatCost, h, sessionTitle, typing } from "./util.js";

const MACHINES_KEY = "turnstile.machines";

class Console {
  constructor() {
    this.store = new SessionStore();
    this.sessionId = null;
    this.views = new Map(); // turn id -> {view, stream}
    this.latest = null; // the TurnView shown in the top bar
    this.machines = null;
    this.readiness = null;
    this.pollTimer = null;
    this.loadToken = 0; // which showSession() call is current
    this.loadedSession = null; // the session whose log is drawn (new turns are followed from then on)
    this.editingTitle = false;

    this.transcript = $("transcript");
    this.promptBox = $("prompt");
    this.interruptButton = $("interrupt");
    this.sendButton = $("send");

    this.list = new SessionList(this.store, {
      list: $("sessions"),
      empty: $("no-sessions"),
      filter: $("session-filter"),
      onSelect: (id) => this.select(id),
    });
    this.dialog = new NewSessionDialog(
      $("new-session-dialog"),
      (options) => this.createSession(options),
      (id) => this.enterSession(id),
    );
    this.store.addEventListener("change", (e) => this.storeChanged(e.detail));

    $("new-session").addEventListener("click", () => this.dialog.open());
    $("sidebar-toggle").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.promptBox.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.altKey && !e.isComposing) {
        e.preventDefault();
        this.send();
      }
    });
    this.interruptButton.addEventListener("click", () => this.interrupt());
    document.addEventListener("keydown", (e) => this.shortcut(e));
    window.addEventListener("hashchange", () => this.selectFromHash());

    const toggle = $("machines-toggle");
    this.setMachinesShown(localStorage.getItem(MACHINES_KEY) === "1");
    toggle.addEventListener("click", () => this.setMachinesShown(toggle.getAttribute("aria-pressed") !== "true"));
    $("edit-title").addEventListener("click", () => this.editTitle());
    $("stop-session").addEventListener("click", () => this.stopSession());
    $("delete-session").addEventListener("click", () => this.deleteSession());
  }

  start() {
    this.loadMachines();
    this.pollReadiness();
    this.feed = this.store.follow((state) => {
      $("sidebar").dataset.feed = state;
    });
    this.selectFromHash();
  }

  async loadMachines() {
    for (let attempt = 0; !this.machines; attempt++) {
      try {
        this.machines = await api("GET", "/v1/machines");
        this.renderMachines();
      } catch {
        await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** attempt)));
      }
    }
  }

  // -- the pool chip (readiness is polled: it is one cheap request, and says when the server is gone) --

  async pollReadiness() {
    await this.refreshReadiness();
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(() => this.pollReadiness(), this.readiness ? 3000 : 1000);
  }

  async refreshReadiness() {
    const chip = $("pool-state");
    try {
      const res = await fetch(withParams("/readyz"));
      this.readiness = await res.json();
      const pool = this.readiness.pool || {};
      chip.dataset.state = pool.state || "unknown";
      chip.dataset.ready = String(Boolean(this.readiness.ready));
      let text = `pool ${pool.state || "?"} ${pool.ready ?? "?"}/${pool.target ?? "?"}`;
      if (pool.reason) text += ` — ${pool.reason}`;
      if (!this.readiness.ready) text += ` · not ready: ${(this.readiness.reasons || []).join("; ")}`;
      chip.textContent = text;
      chip.title = this.readiness.ready ? "the server accepts turns" : "the server is not ready";
      this.renderAgent(this.readiness.agent);
    } catch {
      this.readiness = null;
      chip.dataset.state = "unreachable";
      chip.textContent = "server unreachable — retrying";
    }
    this.renderMachines();
  }

  /** The agent CLI's check (`turnstile doctor` at server start): what it lacks and what Turnstile does then. */
  renderAgent(agent) {
    const chip = $("agent-state");
    if (!agent) return;
    chip.hidden = false;
    chip.dataset.state = agent.state;
    const missing = agent.missing || [];
    chip.textContent = agent.state === "degraded" ? `agent degraded: without ${missing.map((m) => m.name).join(", ")}` : agent.summary;
    chip.title = [agent.summary, ...missing.map((m) => `${m.title}: ${m.without || "not checked"}`)].join("\n");
  }

  // -- the store changed: sidebar (drawn by SessionList), header, machines, turns others started -------

  storeChanged({ id, removed }) {
    if (removed && id === this.sessionId) {
      this.deselect(`session ${id} was deleted`);
      return;
    }
    if (id === null || id === this.sessionId) {
      this.renderHeader();
      this.renderMachines();
      this.followNewTurns();
    }
  }

  /** Turns of the shown session that someone else started (another tab, the API): follow them too. */
  followNewTurns() {
    const session = this.currentSession();
    if (!session || this.loadedSession !== session.id) return;
    for (const turn of session.turns) {
      if (!this.views.has(turn.id)) {
        this.addTurn(turn.id);
        this.follow(turn.id);
      }
    }
  }

  currentSession() {
    return this.sessionId ? this.store.get(this.sessionId) : null;
  }

  renderHeader() {
    const info = this.currentSession();
    $("session-head").hidden = !this.sessionId;
    if (!this.sessionId) return;
    $("session-id").textContent = this.sessionId;
    if (!this.editingTitle) $("session-title").textContent = info ? sessionTitle(info) : this.sessionId;
    const chip = $("session-state-chip");
    if (info) {
      const label = stateLabel(info);
      chip.className = `chip ${label.cls}`;
      chip.textContent = label.text;
      chip.title = label.title;
      chip.hidden = false;
    } else {
      chip.hidden = true;
    }
    $("restart-note").hidden = !(info && info.state === "crashed" && info.restarted);
    const meta = [];
    if (info) {
      const agent = info.agent || {};
      meta.push(agent.cwd ? `in ${agent.cwd}` : "in the server's directory");
      if (agent.model) meta.push(agent.model);
      meta.push(`${info.turns.length} turn${info.turns.length === 1 ? "" : "s"}`);
      const cost = totalCost(info);
      if (cost !== null) meta.push(formatCost(cost));
    }
    $("session-meta").textContent = meta.join(" · ");
    $("session-replay").href = `replay#${encodeURIComponent(this.sessionId)}`;
    const stopped = info ? info.state === "stopped" || info.state === "stopping" : true;
    $("stop-session").disabled = stopped;
    this.promptBox.disabled = Boolean(info && info.state === "stopped");
    this.promptBox.placeholder = info && info.state === "stopped"
      ? "This session is stopped. Create a new session to go on."
      : "Ask something… (Enter sends · Shift+Enter newline · Esc interrupts)";
  }

  setMachinesShown(shown) {
    $("machines-toggle").setAttribute("aria-pressed", String(shown));
    $("machines").hidden = !shown;
    localStorage.setItem(MACHINES_KEY, shown ? "1" : "0");
    this.renderMachines();
  }

  renderMachines() {
    if ($("machines").hidden) return;
    const session = this.currentSession();
    renderMachine($("session-machine"), this.machines, "session", session && session.state, "session");
    // The turn's state: the server's fold, kept in the store (which the turn's own terminal entry also
    // moves forward), so the panel and the turn card never disagree.
    const view = this.latest;
    let streamState = view ? view.state : null;
    if (view && session) {
      const info = session.turns.find((t) => t.id === view.turnId);
      if (info) streamState = info.state;
    }
    renderMachine($("stream-machine"), this.machines, "stream", streamState, "turn", view ? view.turnId : "");
    const pool = this.readiness && this.readiness.pool;
    renderMachine($("pool-machine"), this.machines, "pool", pool && pool.state, "pool");
  }

  // -- selecting a session and showing its turns -----------------------------------------------------

  selectFromHash() {
    const sid = decodeURIComponent(location.hash.slice(1));
    if (sid && sid !== this.sessionId) this.showSession(sid);
  }

  select(id) {
    document.body.classList.remove("sidebar-open");
    if (location.hash.slice(1) !== id) location.hash = id;
    else if (id !== this.sessionId) this.showSession(id);
  }

  /** Select the next (+1) or previous (-1) session of the sidebar, as filtered. */
  step(delta) {
    const ids = this.list.visible().map((s) => s.id);
    if (!ids.length) return;
    const at = ids.indexOf(this.sessionId);
    const next = at < 0 ? (delta > 0 ? 0 : ids.length - 1) : Math.min(ids.length - 1, Math.max(0, at + delta));
    if (ids[next] !== this.sessionId) this.select(ids[next]);
  }

  deselect(note) {
    this.closeViews();
    this.sessionId = null;
    this.list.select(null);
    history.replaceState(null, "", location.pathname + location.search);
    this.renderHeader();
    if (note) this.transcript.append(h("p", { class: "hint" }, note));
  }

  /** Show a session: its turns from the log, and a live stream for every turn still open. */
  async showSession(sid) {
    this.closeViews();
    this.sessionId = sid;
    this.editingTitle = false;
    const load = ++this.loadToken;
    this.list.select(sid);
    this.renderHeader();
    this.renderMachines();
    let text;
    try {
      const res = await fetch(withParams(`/v1/sessions/${encodeURIComponent(sid)}/log`));
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      text = await res.text();
    } catch (err) {
      if (load === this.loadToken) this.transcript.append(h("div", { class: "note error" }, `cannot read session ${sid}: ${err.message}`));
      return;
    }
    if (load !== this.loadToken) return; // another session was selected meanwhile
    this.loadedSession = sid;
    // A turn sent from this page while the log was loading already has its view and its stream (which
    // replays it from its start): the log's copy of its entries is not applied a second time.
    const following = new Set(this.views.keys());
    const entries = text.split("\n").filter((line) => line.trim()).map((line) => JSON.parse(line));
    for (const entry of entries) {
      if (!entry.stream || following.has(entry.stream)) continue;
      let item = this.views.get(entry.stream);
      if (!item) item = this.addTurn(entry.stream, null);
      item.view.apply(entry);
    }
    for (const [tid, item] of this.views) {
      if (item.stream) continue;
      if (item.view.live) this.follow(tid);
      else item.view.setBadge("DONE");
    }
    if (!this.views.size) this.transcript.append(h("p", { class: "hint", "data-testid": "hint" }, "No turns yet: type a prompt below."));
    this.followNewTurns();
    this.scrollToEnd(true);
  }

  closeViews() {
    this.loadedSession = null;
    for (const { stream } of this.views.values()) if (stream) stream.close();
    this.views.clear();
    this.latest = null;
    this.transcript.replaceChildren();
    this.updateTopBadge();
  }

  addTurn(tid) {
    const hint = $("hint", this.transcript);
    if (hint) hint.remove();
    const view = new TurnView(this.sessionId, tid, (v) => this.viewChanged(v));
    const item = { view, stream: null };
    this.views.set(tid, item);
    this.latest = view;
    const atEnd = this.isAtEnd();
    this.transcript.append(view.el);
    this.scrollToEnd(atEnd);
    return item;
  }

  follow(tid) {
    const item = this.views.get(tid);
    const url = `/v1/sessions/${encodeURIComponent(this.sessionId)}/turns/${encodeURIComponent(tid)}/events`;
    item.stream = new TurnStream(item.view, url);
    item.stream.start();
  }

  viewChanged(view) {
    if (view.ended && !view.reportedEnd) {
      view.reportedEnd = true;
      this.store.noteTurnEnded(view.sessionId, view.ended);
    }
    if (view === this.latest) {
      this.updateTopBadge();
      this.renderMachines();
    }
    this.updateButtons();
    if (this.isAtEnd(120)) this.scrollToEnd(true);
  }

  updateTopBadge() {
    const badge = $("badge");
    const state = this.latest ? this.latest.badge.dataset.state : "IDLE";
    badge.dataset.state = state;
    badge.textContent = state;
  }

  liveView() {
    for (const { view, stream } of [...this.views.values()].reverse()) {
      if (view.live && stream) return view;
    }
    return null;
  }

  updateButtons() {
    this.interruptButton.disabled = !this.liveView();
  }

  isAtEnd(slack = 40) {
    const t = this.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < slack;
  }

  scrollToEnd(yes) {
    if (yes) this.transcript.scrollTop = this.transcript.scrollHeight;
  }

  // -- actions ------------------------------------------------------------------------------------------

  /** POST /v1/sessions with `options`; returns the new id. Throws ApiError (the dialog shows it). */
  async createSession(options = {}) {
    const info = await api("POST", "/v1/sessions", options);
    this.store.upsert(info);
    return info.id;
  }

  /** Show a session just created, and put it in the address (which then does not load it again). */
  async enterSession(id) {
    const shown = this.showSession(id); // selects it at once, then reads its log
    if (location.hash.slice(1) !== id) location.hash = id;
    await shown;
    this.promptBox.focus();
  }

  async send() {
    const prompt = this.promptBox.value;
    if (!prompt.trim()) return;
    this.sendButton.disabled = true;
    try {
      let sid = this.sessionId;
      if (!sid) {
        sid = await this.createSession();
        await this.enterSession(sid);
      }
      const turn = await api("POST", `/v1/sessions/${encodeURIComponent(sid)}/turns`, { prompt });
      this.promptBox.value = "";
      if (sid !== this.sessionId) return;
      const item = this.views.get(turn.turn_id) || this.addTurn(turn.turn_id);
      item.view.setPrompt(prompt);
      if (!item.stream && item.view.live) this.follow(turn.turn_id);
    } catch (err) {
      this.flash(`cannot send: ${err.message}`);
    } finally {
      this.sendButton.disabled = false;
    }
  }

  async interrupt() {
    const view = this.liveView();
    if (!view) return;
    this.interruptButton.disabled = true;
    try {
      await api("POST", `/v1/sessions/${encodeURIComponent(view.sessionId)}/turns/${encodeURIComponent(view.turnId)}/interrupt`);
    } catch (err) {
      this.flash(`cannot interrupt: ${err.message}`);
      this.updateButtons();
    }
  }

  editTitle() {
    const info = this.currentSession();
    if (!info || this.editingTitle) return;
    this.editingTitle = true;
    const title = $("session-title");
    const input = h("input", { class: "title-input", "data-testid": "title-input", maxlength: "200", "aria-label": "session title" });
    input.value = info.title || sessionTitle(info);
    const done = async (save) => {
      if (!this.editingTitle) return;
      this.editingTitle = false;
      input.replaceWith(title);
      if (save && input.value.trim() !== (info.title || sessionTitle(info))) {
        try {
          this.store.upsert(await api("PATCH", `/v1/sessions/${encodeURIComponent(info.id)}`, { title: input.value.trim() }));
        } catch (err) {
          this.flash(`cannot rename: ${err.message}`);
        }
      }
      this.renderHeader();
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        done(true);
      } else if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        done(false);
      }
    });
    input.addEventListener("blur", () => done(true));
    title.replaceWith(input);
    input.focus();
    input.select();
  }

  async stopSession() {
    const sid = this.sessionId;
    if (!sid) return;
    $("stop-session").disabled = true;
    try {
      this.store.upsert(await api("DELETE", `/v1/sessions/${encodeURIComponent(sid)}`));
    } catch (err) {
      this.flash(`cannot stop: ${err.message}`);
    }
  }

  /** Delete asks once more on the button itself: the first click arms it for a few seconds. */
  async deleteSession() {
    const sid = this.sessionId;
    const button = $("delete-session");
    if (!sid) return;
    if (button.dataset.armed !== "true") {
      button.dataset.armed = "true";
      button.textContent = "Delete for good?";
      clearTimeout(this.disarm);
      this.disarm = setTimeout(() => {
        delete button.dataset.armed;
        button.textContent = "Delete";
      }, 4000);
      return;
    }
    clearTimeout(this.disarm);
    delete button.dataset.armed;
    button.textContent = "Delete";
    button.disabled = true;
    try {
      await api("DELETE", `/v1/sessions/${encodeURIComponent(sid)}?purge=true`);
      this.store.remove(sid);
    } catch (err) {
      this.flash(`cannot delete: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  shortcut(e) {
    if (e.key === "Escape" && this.liveView() && !e.defaultPrevented && !document.querySelector("dialog[open]")) {
      e.preventDefault();
      this.interrupt();
    } else if (e.altKey && (e.key === "ArrowDown" || e.key === "ArrowUp")) {
      e.preventDefault();
      this.step(e.key === "ArrowDown" ? 1 : -1);
    } else if (e.key === "/" && !typing(e.target) && !document.querySelector("dialog[open]")) {
      e.preventDefault();
      $("session-filter").focus();
    }
  }

  flash(text) {
    const el = h("div", { class: "note error flash", "data-testid": "flash" }, text);
    this.transcript.append(el);
    this.scrollToEnd(true);
    setTimeout(() => el.remove(), 8000);
  }
}

const app = new Console();
window.turnstileConsole = app; // for poking around in devtools
app.start();
