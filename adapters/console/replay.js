// The replay viewer (/replay): a session's log, or a dropped file, run through the engine's fold on the
// server (GET /v1/sessions/{id}/replay, POST /v1/replay: `turnstile replay --json --trace` plus the entries),
// shown as a waterfall of turns, the session and turn state diagrams at the cursor, and the entries there.
// Nothing here computes a state: every state and transition comes from the server's trace.

import { api } from "./api.js";
import { StateDiagram } from "./diagram.js";
import { PHASES, Waterfall } from "./waterfall.js";
import { $, formatCost, formatMs, h, promptText, sessionTitle, stripSimDirectives, typing } from "./util.js";

const UNTIMED_STEP_MS = 100; // a file without times: one entry every 100 ms on the axis (and in playback)
const MAX_FILE_BYTES = 32 << 20;

/** Everything the page shows, derived from a replay document (ReplayDocument in adapters/replay_view.py). */
function buildModel(doc, machines) {
  const entries = doc.entries;
  const n = entries.length;
  const index = new Map(entries.map((e, i) => [e.seq, i]));
  const timed = entries.some((e) => typeof e.ts === "number");
  const t = new Array(n);
  if (timed) {
    const first = entries.find((e) => typeof e.ts === "number").ts;
    let prev = 0;
    for (let i = 0; i < n; i++) {
      const ts = entries[i].ts;
      // An entry without a time (or a clock that went backwards) sits where the previous one was.
      prev = typeof ts === "number" ? Math.max(prev, (ts - first) * 1000) : prev;
      t[i] = prev;
    }
  } else {
    for (let i = 0; i < n; i++) t[i] = i * UNTIMED_STEP_MS;
  }
  const changes = (doc.report.changes || [])
    .map((c) => ({ ...c, index: index.get(c.seq) }))
    .filter((c) => c.index !== undefined);
  const phaseOf = (state) => (machines.stream.states[state] && machines.stream.states[state].phase) || "waiting";
  const terminal = new Set(machines.stream.terminal);

  const summaries = new Map((doc.report.streams || []).map((s) => [s.id, s]));
  const byStream = new Map();
  const sessionChanges = [];
  for (const c of changes) {
    if (c.machine === "session") sessionChanges.push(c);
    else if (c.machine === "stream") {
      if (!byStream.has(c.id)) byStream.set(c.id, []);
      byStream.get(c.id).push(c);
    }
  }
  const last = n - 1;
  const streams = [];
  for (const [id, list] of byStream) {
    const segments = [];
    let end = null;
    let endState = null;
    list.forEach((c, k) => {
      if (terminal.has(c.dest)) {
        end = c.index;
        endState = c.dest;
        return;
      }
      const stop = k + 1 < list.length ? list[k + 1].index : last;
      const seg = { state: c.dest, phase: phaseOf(c.dest), start: c.index, end: stop };
      if (c.dest === "tool_running") seg.tool = toolNames(entries[c.index]);
      segments.push(seg);
    });
    streams.push({ id, changes: list, segments, end, endState, retries: [], summary: summaries.get(id) || null, start: list[0].index });
  }
  // API retries belong to the stream they name, else to the stream running at that point.
  for (let i = 0; i < n; i++) {
    const e = entries[i];
    if (e.kind !== "cli" || e.type !== "system" || !e.msg || e.msg.subtype !== "api_retry") continue;
    const owner = streams.find((s) => s.id === e.stream) || streams.filter((s) => s.start <= i && (s.end === null || s.end >= i)).pop();
    if (owner) owner.retries.push(i);
  }
  const sessionSegments = [];
  sessionChanges.forEach((c, k) => {
    const stop = k + 1 < sessionChanges.length ? sessionChanges[k + 1].index : last;
    sessionSegments.push({ state: c.dest, start: c.index, end: stop });
  });
  return { entries, t, timed, tmin: t[0] ?? 0, tmax: t[last] ?? 0, changes, streams, sessionChanges, sessionSegments, index };
}

function toolNames(entry) {
  const content = entry && entry.msg && entry.msg.message && entry.msg.message.content;
  if (!Array.isArray(content)) return "";
  return content.filter((b) => b && (b.type === "tool_use" || b.type === "server_tool_use")).map((b) => b.name).join(", ");
}

/** One line about an entry, for the list at the cursor. */
function describe(e) {
  const snip = (text, n = 70) => {
    const one = String(text ?? "").replace(/\s+/g, " ").trim();
    return one.length > n ? one.slice(0, n - 1) + "…" : one;
  };
  if (e.kind === "cli") {
    const m = e.msg || {};
    if (e.type === "stream_event") {
      const ev = m.event || {};
      const d = ev.delta || {};
      if (ev.type === "content_block_delta") return [`delta ${d.type || ""}`, snip(d.text ?? d.thinking ?? d.partial_json ?? "")];
      if (ev.type === "content_block_start") return [`block start`, (ev.content_block && ev.content_block.type) || ""];
      return [ev.type || "stream_event", ""];
    }
    if (e.type === "assistant") {
      const blocks = (m.message && m.message.content) || [];
      return ["assistant", snip(blocks.map((b) => (b.type === "text" ? b.text : b.type === "tool_use" ? `tool_use ${b.name} ${JSON.stringify(b.input)}` : b.type)).join(" · "))];
    }
    if (e.type === "user") {
      const c = m.message && m.message.content;
      if (typeof c === "string") return ["user", snip(c)];
      return ["user", snip((c || []).map((b) => (b.type === "tool_result" ? `tool_result ${typeof b.content === "string" ? b.content : ""}` : b.text || b.type)).join(" · "))];
    }
    if (e.type === "result") return [`result ${m.subtype || ""}`, m.is_error ? "is_error" : snip(m.result || "")];
    if (e.type === "system") return [`system ${m.subtype || ""}`, m.subtype === "api_retry" ? `attempt ${m.attempt ?? "?"}` : ""];
    return [e.type, ""];
  }
  if (e.kind === "turn.requested") return ["turn.requested", snip(stripSimDirectives(promptText(e.prompt)).text)];
  if (e.kind === "stream.ended") return ["stream.ended", `${e.outcome}${e.reason ? " — " + snip(e.reason, 50) : ""}`];
  if (e.kind === "process.spawned") return ["process.spawned", `pid ${e.pid}${e.warm ? " (warm)" : ""}${e.resume ? " --resume" : ""}`];
  if (e.kind === "process.exited") return ["process.exited", `pid ${e.pid} → ${e.returncode}${e.reason ? " — " + snip(e.reason, 40) : ""}`];
  if (e.kind === "stderr") return ["stderr", snip(e.text)];
  if (e.kind === "session.titled") return ["session.titled", snip(e.title)];
  if (e.kind === "timeout") return ["timeout", `${e.which} after ${e.after_s} s`];
  if (e.kind === "cli.decode_error") return ["cli.decode_error", `${e.reason}: ${snip(e.error, 50)}`];
  return [e.kind, ""];
}

class ReplayPage {
  constructor() {
    this.machines = null;
    this.model = null;
    this.cursor = 0;
    this.playing = false;
    this.speed = 1;
    this.playT = 0;
    this.frame = null;

    $("replay-session").addEventListener("change", (e) => {
      if (e.target.value) location.hash = e.target.value;
    });
    $("replay-file").addEventListener("change", (e) => {
      const file = e.target.files && e.target.files[0];
      if (file) this.openFile(file);
      e.target.value = "";
    });
    window.addEventListener("hashchange", () => this.fromHash());
    this.setUpDrop();
    $("play").addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    for (const button of document.querySelectorAll("[data-speed]")) {
      button.addEventListener("click", () => this.setSpeed(Number(button.dataset.speed)));
    }
    $("scrubber").addEventListener("input", (e) => {
      this.pause();
      this.setCursor(Number(e.target.value));
    });
    document.addEventListener("keydown", (e) => this.key(e));
    this.setSpeed(1);
  }

  async start() {
    try {
      this.machines = await api("GET", "/v1/machines");
    } catch (err) {
      this.error(`cannot read the machines from the server: ${err.message}`);
      return;
    }
    this.listSessions();
    this.fromHash();
  }

  async listSessions() {
    try {
      const { sessions } = await api("GET", "/v1/sessions");
      const select = $("replay-session");
      const options = sessions
        .slice()
        .sort((a, b) => (b.last_activity ?? b.created_at) - (a.last_activity ?? a.created_at))
        .map((s) => h("option", { value: s.id }, `${sessionTitle(s)} — ${s.id}`));
      select.replaceChildren(h("option", { value: "" }, "a session of this server…"), ...options);
      const current = decodeURIComponent(location.hash.slice(1));
      if (current) select.value = current;
    } catch {
      // the list is a convenience; a file still works
    }
  }

  fromHash() {
    const sid = decodeURIComponent(location.hash.slice(1));
    if (sid && sid !== this.loaded) this.openSession(sid);
  }

  async openSession(sid) {
    this.loaded = sid;
    this.busy(`replaying session ${sid}…`);
    try {
      this.load(await api("GET", `/v1/sessions/${encodeURIComponent(sid)}/replay`));
    } catch (err) {
      this.error(`cannot replay session ${sid}: ${err.message}`);
    }
  }

  async openFile(file) {
    if (file.size > MAX_FILE_BYTES) {
      this.error(`${file.name} is ${Math.round(file.size / 1048576)} MiB; the viewer takes up to 32 MiB — use \`turnstile replay --trace\` on it`);
      return;
    }
    this.busy(`replaying ${file.name}…`);
    try {
      const text = await file.text();
      const doc = await api("POST", "/v1/replay", { name: file.name, text });
      this.loaded = null;
      history.replaceState(null, "", location.pathname + location.search);
      $("replay-session").value = "";
      this.load(doc);
    } catch (err) {
      this.error(`cannot replay ${file.name}: ${err.message}`);
    }
  }

  setUpDrop() {
    const hint = $("drop-hint");
    let depth = 0;
    document.addEventListener("dragenter", (e) => {
      if (!e.dataTransfer || ![...e.dataTransfer.types].includes("Files")) return;
      depth++;
      hint.hidden = false;
    });
    document.addEventListener("dragleave", () => {
      if (--depth <= 0) {
        depth = 0;
        hint.hidden = true;
      }
    });
    document.addEventListener("dragover", (e) => e.preventDefault());
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      depth = 0;
      hint.hidden = true;
      const file = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
      if (file) this.openFile(file);
    });
  }

  busy(text) {
    $("replay-error").hidden = true;
    $("replay-facts").textContent = text;
  }

  error(text) {
    const el = $("replay-error");
    el.textContent = text;
    el.hidden = false;
  }

  // --- a document ---------------------------------------------------------------------------------------

  load(doc) {
    this.pause();
    this.doc = doc;
    this.model = buildModel(doc, this.machines);
    $("replay-empty").hidden = true;
    $("replay-error").hidden = true;
    $("replay-body").hidden = false;
    $("replay-body").dataset.format = doc.format;
    const report = doc.report;
    $("replay-name").textContent = doc.name;
    const n = this.model.streams.length;
    const facts = [
      doc.format === "turnstile" ? "Turnstile log" : "CLI transcript",
      `${report.entries} entries`,
      `${n} turn${n === 1 ? "" : "s"}`,
      this.model.timed ? formatMs(this.model.tmax - this.model.tmin) : "no times",
      `session ${report.session_state}`,
      report.violations.length ? `${report.violations.length} violation${report.violations.length === 1 ? "" : "s"}` : "no violations",
    ];
    $("replay-facts").textContent = facts.join(" · ");
    const scrubber = $("scrubber");
    scrubber.max = String(this.model.entries.length - 1);

    this.sessionDiagram = new StateDiagram(this.machines.session, { testid: "session-diagram" });
    this.streamDiagram = new StateDiagram(this.machines.stream, { testid: "stream-diagram" });
    $("session-diagram-box").replaceChildren(this.sessionDiagram.el);
    $("stream-diagram-box").replaceChildren(this.streamDiagram.el);
    this.waterfall = new Waterfall($("waterfall"), this.model, (i) => {
      this.pause();
      this.setCursor(i);
    });
    this.waterfall.render();
    $("legend").replaceChildren(
      ...PHASES.map(([phase, text]) => h("span", { class: "legend-item" }, h("span", { class: `swatch phase-${phase}` }), text)),
      h("span", { class: "legend-item" }, h("span", { class: "swatch retry" }), "API retry"),
      h("span", { class: "legend-item" }, h("span", { class: "swatch end" }), "end (outcome)"),
    );
    this.renderSummary();
    this.setCursor(this.model.entries.length - 1);
  }

  renderSummary() {
    const report = this.doc.report;
    const rows = report.streams.map((s) => {
      const t = s.timing || {};
      return h(
        "tr",
        { "data-testid": "summary-row", "data-stream": s.id },
        h("td", {}, h("code", {}, s.id)),
        h("td", {}, h("span", { class: `chip state-${s.outcome || s.state}` }, s.outcome || `open (${s.state})`)),
        h("td", {}, formatMs(t.ttfe_ms)),
        h("td", {}, formatMs(t.thinking_ms)),
        h("td", {}, formatMs(t.tool_ms)),
        h("td", {}, formatMs(t.total_ms)),
        h("td", {}, String(s.tool_calls)),
        h("td", {}, formatCost(t.cost_usd) || "?"),
        h("td", { class: "reason" }, s.reason),
      );
    });
    const table = h(
      "table",
      { class: "summary-table" },
      h("thead", {}, h("tr", {}, ...["turn", "outcome", "first event", "thinking", "tools", "total", "calls", "cost", "reason"].map((c) => h("th", {}, c)))),
      h("tbody", {}, ...rows),
    );
    const violations = report.violations.length
      ? h("ul", { class: "violations" }, ...report.violations.map((v) => h("li", {}, `seq ${v.seq}: ${v.machine} ${v.id} ${v.trigger || "-"}${v.state ? " in " + v.state : ""}: ${v.message}`)))
      : h("p", { class: "muted" }, "No violations: every entry was a transition the specs allow.");
    $("summary").replaceChildren(table, violations);
  }

  // --- the cursor ----------------------------------------------------------------------------------------

  setCursor(i) {
    const m = this.model;
    i = Math.max(0, Math.min(m.entries.length - 1, i));
    this.cursor = i;
    if (!this.playing) this.playT = m.t[i];
    $("scrubber").value = String(i);
    $("replay-body").dataset.cursorSeq = String(m.entries[i].seq);
    this.waterfall.setCursor(i);
    const total = m.entries.length;
    $("clock").textContent = m.timed
      ? `+${formatMs(m.t[i] - m.tmin)} of ${formatMs(m.tmax - m.tmin)} · seq ${m.entries[i].seq} (${i + 1}/${total})`
      : `entry ${i + 1} of ${total} · seq ${m.entries[i].seq}`;
    this.showMachines(i);
    this.showEntries(i);
  }

  showMachines(i) {
    const m = this.model;
    // The session machine: its last change at or before the cursor.
    let sc = null;
    for (const c of m.sessionChanges) {
      if (c.index > i) break;
      sc = c;
    }
    const sessionState = sc ? sc.dest : this.machines.session.initial;
    this.sessionDiagram.show({ state: sessionState, previous: sc ? sc.source : null, transition: sc });
    const chip = $("session-now");
    chip.textContent = sessionState;
    chip.className = `chip state-${sessionState}`;
    $("session-caption").textContent = sc
      ? `${sc.source || "(new)"} → ${sc.dest} on ${sc.trigger}, seq ${sc.seq}${sc.index === i ? " — this entry" : ""}`
      : "no change yet";

    // The turn: the stream whose state changed last at or before the cursor.
    let tc = null;
    for (const c of m.changes) {
      if (c.index > i) break;
      if (c.machine === "stream") tc = c;
    }
    if (!tc) {
      this.streamDiagram.show({});
      $("stream-id").textContent = "";
      $("stream-now").textContent = "no turn yet";
      $("stream-now").className = "chip";
      $("stream-caption").textContent = "";
      return;
    }
    this.streamDiagram.show({ state: tc.dest, previous: tc.source || null, transition: tc });
    this.streamDiagram.el.dataset.stream = tc.id;
    $("stream-id").textContent = tc.id;
    const now = $("stream-now");
    now.textContent = tc.dest;
    now.className = `chip state-${tc.dest}`;
    const tool = tc.dest === "tool_running" ? toolNames(m.entries[tc.index]) : "";
    $("stream-caption").textContent = `${tc.source || "(new)"} → ${tc.dest} on ${tc.trigger}${tool ? ` (${tool})` : ""}, seq ${tc.seq}${tc.index === i ? " — this entry" : ""}`;
  }

  showEntries(i) {
    const m = this.model;
    const from = Math.max(0, i - 6);
    const to = Math.min(m.entries.length - 1, i + 6);
    const items = [];
    for (let k = from; k <= to; k++) {
      const e = m.entries[k];
      const [what, detail] = describe(e);
      items.push(
        h(
          "li",
          { class: k === i ? "entry current" : "entry", "data-testid": "entry", "data-seq": e.seq, "data-current": k === i ? "true" : null, onclick: () => { this.pause(); this.setCursor(k); } },
          h("span", { class: "e-seq" }, String(e.seq)),
          h("span", { class: "e-time" }, m.timed ? `+${formatMs(m.t[k] - m.tmin)}` : ""),
          h("span", { class: "e-stream" }, e.stream || ""),
          h("span", { class: "e-kind" }, what),
          h("span", { class: "e-detail" }, detail),
        ),
      );
    }
    $("entries").replaceChildren(...items);
    const json = JSON.stringify(m.entries[i], null, 2);
    $("entry-json").textContent = json.length > 20000 ? json.slice(0, 20000) + "\n…" : json;
  }

  // --- playing -------------------------------------------------------------------------------------------

  setSpeed(speed) {
    this.speed = speed;
    for (const b of document.querySelectorAll("[data-speed]")) b.setAttribute("aria-pressed", String(Number(b.dataset.speed) === speed));
  }

  play() {
    if (!this.model) return;
    const m = this.model;
    if (this.cursor >= m.entries.length - 1) this.setCursor(0);
    this.playing = true;
    this.playT = m.t[this.cursor];
    $("play").textContent = "❚❚";
    $("play").setAttribute("aria-label", "Pause");
    let last = performance.now();
    const tick = (now) => {
      if (!this.playing) return;
      this.playT += (now - last) * this.speed;
      last = now;
      let i = this.cursor;
      while (i + 1 < m.entries.length && m.t[i + 1] <= this.playT) i++;
      if (i !== this.cursor) this.setCursor(i);
      if (i >= m.entries.length - 1) {
        this.pause();
        return;
      }
      this.frame = requestAnimationFrame(tick);
    };
    this.frame = requestAnimationFrame(tick);
  }

  pause() {
    this.playing = false;
    cancelAnimationFrame(this.frame);
    $("play").textContent = "▶";
    $("play").setAttribute("aria-label", "Play");
  }

  key(e) {
    if (!this.model || typing(e.target)) return;
    if (e.key === " ") {
      e.preventDefault();
      this.playing ? this.pause() : this.play();
    } else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      if (e.target === $("scrubber")) return; // the range input moves itself
      e.preventDefault();
      this.pause();
      this.setCursor(this.cursor + (e.key === "ArrowRight" ? 1 : -1));
    } else if (e.key === "Home" || e.key === "End") {
      if (e.target === $("scrubber")) return;
      e.preventDefault();
      this.pause();
      this.setCursor(e.key === "Home" ? 0 : this.model.entries.length - 1);
    }
  }
}

const page = new ReplayPage();
window.turnstileReplay = page; // for poking around in devtools
page.start();
