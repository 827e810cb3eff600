// Turnstile's web console: no build step, no dependencies. It speaks only the public API (docs/api.md).
//
//   api / withParams     JSON calls and URLs; with --token the page's cookie carries the token
//   TurnView             renders one turn from its log entries (text, thinking, tools, errors, timing)
//   TurnStream           one turn's SSE connection: LIVE / RECONNECTING / DONE, resume, retry, 204
//   Console              sessions, pool, machines, composer, keyboard
//
// The connection rules (what keeps a turn from being "stuck at RECONNECTING"):
//   * `stream.ended` is the turn's terminal entry: show DONE and close the EventSource ourselves.
//   * error with readyState CONNECTING: a drop; EventSource resumes with Last-Event-ID by itself.
//   * error with readyState CLOSED: EventSource gave up (a non-200 answer, e.g. during a server restart).
//     Retry with backoff from the last seen seq (`?after=`: a new EventSource cannot set Last-Event-ID).
//     Before reopening, probe the URL: 204 means the turn is over, which ends retrying.

// With `turnstile serve --token` the console is opened once as /?token=…: the server answers with an
// HttpOnly, SameSite=Strict cookie and a redirect to the same address without the token, so the token is
// never in the address bar or in page script, and every request (EventSource included) carries the cookie.

/** `path` with `params` as its query string. */
function withParams(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
  }
  return url.pathname + url.search;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A JSON API call. Throws ApiError (with the server's code and message) on a non-2xx answer. */
async function api(method, path, body) {
  // Every write says application/json: the server refuses anything else (no cross-site form posts).
  const init = { method, headers: method === "GET" ? {} : { "content-type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(withParams(path), init);
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: e.g. a reverse proxy's HTML error page while the server restarts
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(res.status, err.code || "http_" + res.status, err.message || res.statusText);
  }
  return data;
}

// --- small DOM helpers ----------------------------------------------------------------------------

/** h("div", {class: "x", "data-testid": "y"}, child, "text", ...) — text is never parsed as HTML. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children.filter((c) => c !== undefined && c !== null && c !== false));
  return el;
}

const $ = (testid, root = document) => root.querySelector(`[data-testid="${testid}"]`);

function formatMs(ms) {
  if (ms === null || ms === undefined) return "?";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60000);
  return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
}

function percent(part, total) {
  if (part === null || part === undefined || !total) return "?";
  return `${Math.round((100 * part) / total)}%`;
}

function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** The text of a tool_result's content: a string, or a list of blocks. */
function resultText(content) {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((b) => (b && b.type === "text" ? b.text : pretty(b))).join("\n");
  }
  return pretty(content);
}

/** A one-line summary of a tool's input, e.g. the Bash command. */
function toolSummary(input) {
  if (!input || typeof input !== "object") return "";
  const first = input.command ?? input.file_path ?? input.pattern ?? input.url ?? input.query ?? input.description;
  const text = first !== undefined ? String(first) : JSON.stringify(input);
  return text.length > 90 ? text.slice(0, 89) + "…" : text;
}

// Every entry kind the console listens for. EventSource only delivers named events to named listeners;
// kinds not listed here still advance Last-Event-ID, so resuming is unaffected.
const EVENT_KINDS = [
  "cli.system", "cli.assistant", "cli.user", "cli.result", "cli.stream_event", "cli.control_request",
  "cli.control_response", "cli.control_cancel_request", "cli.rate_limit_event", "cli.keep_alive",
  "cli.decode_error", "cli.oversized_line", "stderr", "session.created", "session.stop_requested",
  "session.stopped", "session.recovered", "process.spawned", "process.spawn_failed", "process.exited",
  "turn.requested", "prompt.written", "interrupt.requested", "interrupt.escalated", "timeout",
  "stream.ended", "log.repaired",
];

// --- one turn, rendered -------------------------------------------------------------------------------

/**
 * Renders one turn from its entries, fed in seq order by the log (history) or a TurnStream (live).
 * Text comes from `text_delta`s when the CLI streams partial messages, else from the `assistant` lines
 * (the CLI sends both with partials on, so a message seen via `message_start` skips its assistant text).
 */
class TurnView {
  constructor(sessionId, turnId, onChange) {
    this.sessionId = sessionId;
    this.turnId = turnId;
    this.onChange = onChange;
    this.lastSeq = 0; // the highest seq applied: the resume point
    this.duplicates = 0; // entries received twice (the server promises none; tests check)
    this.ended = null; // the stream.ended entry once seen
    this.state = "queued";
    this.partialMessages = new Set(); // message ids announced by a message_start stream event
    this.currentMessage = null;
    this.blocks = new Map(); // `${messageId}:${index}` -> {type, el, body, json}
    this.tools = new Map(); // tool_use id -> {el, startTs, ...}
    this.stderrLines = [];

    this.badge = h("span", { class: "badge", "data-testid": "turn-badge", "data-state": "IDLE", "data-history": "" }, "…");
    this.outcome = h("span", { class: "outcome", "data-testid": "turn-outcome" });
    this.prompt = h("div", { class: "prompt", "data-testid": "turn-prompt" });
    this.body = h("div", { class: "turn-body", "data-testid": "turn-body" });
    this.footer = h("div", { class: "turn-footer" });
    this.el = h(
      "article",
      { class: "turn", "data-testid": "turn", "data-turn-id": turnId, "data-state": "queued" },
      h("header", { class: "turn-head" }, h("code", { class: "turn-id" }, turnId), this.outcome, h("span", { class: "spacer" }), this.badge),
      this.prompt,
      this.body,
      this.footer,
    );
    this.setBadge("IDLE");
  }

  get live() {
    return this.ended === null;
  }

  setBadge(state) {
    if (this.badge.dataset.state === state && this.badge.textContent === state) return;
    this.badge.dataset.state = state;
    this.badge.textContent = state;
    const history = this.badge.dataset.history ? this.badge.dataset.history.split(",") : [];
    if (history[history.length - 1] !== state) history.push(state);
    this.badge.dataset.history = history.join(",");
    this.onChange(this);
  }

  setState(state) {
    this.state = state;
    this.el.dataset.state = state;
  }

  /** Apply one entry. Returns false for an entry already applied (a duplicate). */
  apply(entry) {
    if (typeof entry.seq === "number") {
      if (entry.seq <= this.lastSeq) {
        this.duplicates += 1;
        this.el.dataset.duplicates = String(this.duplicates);
        return false;
      }
      this.lastSeq = entry.seq;
      this.el.dataset.lastSeq = String(entry.seq);
    }
    const kind = entry.kind;
    if (kind === "cli") this.applyCli(entry);
    else if (kind === "turn.requested") this.prompt.textContent = typeof entry.prompt === "string" ? entry.prompt : pretty(entry.prompt);
    else if (kind === "prompt.written") this.setState("dispatched");
    else if (kind === "stderr") this.addStderr(entry.text);
    else if (kind === "stream.ended") this.end(entry);
    else if (kind === "interrupt.requested") this.note(`interrupt requested by ${entry.by || "client"}`);
    else if (kind === "interrupt.escalated") this.note(`the agent ignored the interrupt: ${entry.signal || "signal"} sent to its process group`, "warn");
    else if (kind === "timeout") this.note(`${entry.which} timeout after ${entry.after_s} s`, "warn");
    else if (kind === "process.exited") this.note(`process ${entry.pid} exited (${entry.returncode})${entry.reason ? ": " + entry.reason : ""}`, entry.expected ? "" : "warn");
    else if (kind === "process.spawn_failed") this.note(`the agent could not start: ${entry.error}`, "error");
    else if (kind === "session.recovered") this.note("the server restarted", "warn");
    else if (kind === "cli.decode_error") this.note(`undecodable output (${entry.reason}): ${entry.error}`, "warn");
    else if (kind === "cli.oversized_line") this.note(`an oversized line of ${entry.length} bytes (limit ${entry.limit})`, "warn");
    return true;
  }

  applyCli(entry) {
    const msg = entry.msg || {};
    if (entry.type === "stream_event") this.applyStreamEvent(msg.event || {}, entry);
    else if (entry.type === "assistant") this.applyAssistant(msg, entry);
    else if (entry.type === "user") this.applyUser(msg, entry);
    else if (entry.type === "result") this.result = msg;
    else if (entry.type === "system" && msg.subtype === "api_retry") this.note(`API retry ${msg.attempt ?? ""}`.trim(), "warn");
  }

  applyStreamEvent(event, entry) {
    if (this.state === "queued" || this.state === "dispatched") this.setState("thinking");
    if (event.type === "message_start") {
      this.currentMessage = (event.message && event.message.id) || `m${entry.seq}`;
      this.partialMessages.add(this.currentMessage);
    } else if (event.type === "content_block_start") {
      const block = event.content_block || {};
      this.openBlock(this.currentMessage, event.index, block, entry);
    } else if (event.type === "content_block_delta") {
      const block = this.blocks.get(`${this.currentMessage}:${event.index}`);
      const delta = event.delta || {};
      if (!block) return;
      if (delta.type === "text_delta") this.appendText(block, delta.text);
      else if (delta.type === "thinking_delta") this.appendText(block, delta.thinking);
      else if (delta.type === "input_json_delta") {
        block.json += delta.partial_json || "";
        block.input.textContent = block.json;
      }
    } else if (event.type === "content_block_stop") {
      const block = this.blocks.get(`${this.currentMessage}:${event.index}`);
      if (block && block.type === "thinking") block.el.classList.remove("open-block");
    }
  }

  applyAssistant(msg, entry) {
    const message = msg.message || {};
    const streamed = this.partialMessages.has(message.id);
    for (const block of message.content || []) {
      if (block.type === "tool_use" || block.type === "server_tool_use") {
        this.setState("tool_running");
        let tool = this.tools.get(block.id);
        if (!tool) {
          tool = this.openBlock(message.id, `a${entry.seq}`, block, entry);
        }
        tool.startTs = tool.startTs ?? entry.ts;
        tool.input.textContent = pretty(block.input);
        tool.summary.textContent = toolSummary(block.input);
      } else if (!streamed && (block.type === "text" || block.type === "thinking")) {
        const view = this.openBlock(message.id, `a${entry.seq}`, { type: block.type }, entry);
        this.appendText(view, block.type === "text" ? block.text : block.thinking);
        view.el.classList.remove("open-block");
      }
    }
  }

  applyUser(msg, entry) {
    const content = (msg.message && msg.message.content) ?? [];
    if (typeof content === "string") {
      if (content.startsWith("[Request interrupted")) this.note(content);
      return;
    }
    for (const block of content) {
      if (block.type === "tool_result") {
        const tool = this.tools.get(block.tool_use_id);
        if (!tool) continue;
        tool.result.textContent = resultText(block.content);
        tool.resultWrap.hidden = false;
        const failed = Boolean(block.is_error);
        tool.el.dataset.status = failed ? "error" : "ok";
        tool.status.textContent = failed ? "error" : "ok";
        if (typeof tool.startTs === "number" && typeof entry.ts === "number") {
          tool.duration.textContent = formatMs(Math.max(0, (entry.ts - tool.startTs) * 1000));
        }
        this.updateToolGroups();
        this.setState("thinking");
      } else if (block.type === "text" && String(block.text).startsWith("[Request interrupted")) {
        this.note(block.text);
      }
    }
  }

  /** Create the element of a content block (text, thinking, tool_use) and remember it. */
  openBlock(messageId, index, block, entry) {
    const key = `${messageId}:${index}`;
    let view;
    if (block.type === "text") {
      this.setState("responding");
      const el = h("div", { class: "text-block", "data-testid": "text-block" });
      view = { type: "text", el, body: el };
    } else if (block.type === "thinking" || block.type === "redacted_thinking") {
      this.setState("thinking");
      const body = h("div", { class: "thinking-text" });
      const el = h("details", { class: "thinking open-block", "data-testid": "thinking" }, h("summary", {}, "Thinking"), body);
      view = { type: "thinking", el, body };
    } else if (block.type === "tool_use" || block.type === "server_tool_use") {
      const summary = h("span", { class: "tool-summary" });
      const status = h("span", { class: "tool-status", "data-testid": "tool-status" }, "running");
      const duration = h("span", { class: "tool-duration", "data-testid": "tool-duration" });
      const input = h("pre", { class: "tool-input", "data-testid": "tool-input" });
      const result = h("pre", { class: "tool-result", "data-testid": "tool-result" });
      const resultWrap = h("div", { hidden: true }, h("div", { class: "label" }, "Result"), result);
      const el = h(
        "details",
        { class: "tool", "data-testid": "tool", "data-tool-id": block.id, "data-status": "running" },
        h("summary", {}, h("span", { class: "tool-name", "data-testid": "tool-name" }, block.name || "tool"), summary, h("span", { class: "spacer" }), duration, status),
        h("div", { class: "label" }, "Input"),
        input,
        resultWrap,
      );
      view = { type: "tool", el, body: input, json: "", input, result, resultWrap, summary, status, duration, startTs: undefined };
      this.tools.set(block.id, view);
      this.blocks.set(key, view);
      this.toolGroup().list.append(el);
      this.updateToolGroups();
      this.onChange(this);
      return view;
    } else {
      const el = h("div", { class: "note" }, `[${block.type} block]`);
      view = { type: block.type, el, body: el };
    }
    this.blocks.set(key, view);
    this.body.append(view.el);
    this.onChange(this);
    return view;
  }

  /** Consecutive tool calls share one collapsible group ("37 tool calls · 37 ok"). */
  toolGroup() {
    const last = this.body.lastElementChild;
    if (last && last.classList.contains("tools")) return last.group;
    const summary = h("summary", { "data-testid": "tool-group-summary" });
    const list = h("div", { class: "tools-list" });
    const el = h("details", { class: "tools", "data-testid": "tool-group", open: true }, summary, list);
    el.group = { el, summary, list };
    this.body.append(el);
    return el.group;
  }

  updateToolGroups() {
    for (const el of this.body.querySelectorAll(":scope > .tools")) {
      const tools = [...el.group.list.children];
      const counts = {};
      for (const tool of tools) counts[tool.dataset.status] = (counts[tool.dataset.status] || 0) + 1;
      const parts = Object.entries(counts).map(([status, n]) => `${n} ${status}`);
      el.group.summary.textContent = `${tools.length} tool call${tools.length === 1 ? "" : "s"} · ${parts.join(" · ")}`;
    }
  }

  appendText(view, text) {
    if (!text) return;
    view.body.append(text); // a Text node per delta: cheap, and never parsed as HTML
    this.onChange(this);
  }

  note(text, level = "") {
    this.body.append(h("div", { class: `note ${level}`, "data-testid": "note" }, text));
    this.onChange(this);
  }

  addStderr(text) {
    if (!this.stderr) {
      this.stderrPre = h("pre", {});
      this.stderr = h("details", { class: "stderr", "data-testid": "stderr" }, h("summary", {}, "stderr"), this.stderrPre);
      this.footer.before(this.stderr);
    }
    this.stderrLines.push(text);
    this.stderrPre.textContent = this.stderrLines.slice(-200).join("\n");
  }

  /** The terminal entry: outcome, reason and timing. */
  end(entry) {
    this.ended = entry;
    this.setState(entry.outcome);
    this.outcome.textContent = entry.outcome;
    this.outcome.dataset.outcome = entry.outcome;
    for (const tool of this.tools.values()) {
      if (tool.el.dataset.status === "running") {
        tool.el.dataset.status = "unfinished";
        tool.status.textContent = "unfinished";
      }
    }
    for (const block of this.blocks.values()) block.el.classList.remove("open-block");
    this.updateToolGroups();
    // A long run of tool calls folds away once the turn is over, so the answer is what one sees.
    for (const el of this.body.querySelectorAll(":scope > .tools")) {
      if (el.group.list.children.length > 5) el.open = false;
    }
    if (entry.outcome !== "completed") {
      const level = entry.outcome === "cancelled" ? "warn" : "error";
      const title = { failed: "Failed", cancelled: "Cancelled", timed_out: "Timed out" }[entry.outcome] || entry.outcome;
      this.footer.append(
        h("div", { class: `turn-error ${level}`, "data-testid": "turn-error" }, h("strong", {}, title), entry.reason ? h("span", { "data-testid": "turn-reason" }, ": " + entry.reason) : null),
      );
    }
    this.footer.append(this.renderTiming(entry.timing || {}, entry.outcome));
    this.onChange(this);
  }

  renderTiming(t, outcome) {
    const word = { completed: "Done", failed: "Failed", cancelled: "Cancelled", timed_out: "Timed out" }[outcome] || outcome;
    const tools = t.tool_calls ?? this.tools.size;
    const parts = [
      h("strong", {}, word),
      h("span", { "data-testid": "timing-total" }, `${formatMs(t.total_ms)} total`),
      h("span", { "data-testid": "timing-ttfe" }, `first event ${formatMs(t.ttfe_ms)}`),
      h("span", { "data-testid": "timing-thinking" }, `thinking ${percent(t.thinking_ms, t.total_ms)}`),
      h("span", { "data-testid": "timing-tools-pct" }, `tools ${percent(t.tool_ms, t.total_ms)}`),
      h("span", { "data-testid": "timing-tools" }, `${tools} ${tools === 1 ? "tool" : "tools"}`),
    ];
    if (t.output_tokens !== null && t.output_tokens !== undefined) parts.push(h("span", {}, `${t.input_tokens ?? "?"} in / ${t.output_tokens} out tokens`));
    if (t.cost_usd !== null && t.cost_usd !== undefined) parts.push(h("span", {}, `$${t.cost_usd.toFixed(4)}`));
    const el = h("div", { class: "timing", "data-testid": "timing" });
    parts.forEach((part, i) => {
      if (i > 0) el.append(h("span", { class: "sep" }, "·"));
      el.append(part);
    });
    return el;
  }
}

// --- one turn's SSE connection ------------------------------------------------------------------------

const BACKOFF_MS = [250, 500, 1000, 2000, 4000];

/** Follows a turn over SSE until its terminal entry, through drops and server restarts. */
class TurnStream {
  constructor(view, eventsUrl) {
    this.view = view;
    this.eventsUrl = eventsUrl;
    this.source = null;
    this.attempt = 0;
    this.timer = null;
    this.probe = null;
    this.closed = false;
    this.refusals = 0; // 404/400 answers in a row (a server still reading its logs back may not know it yet)
  }

  start() {
    this.open(this.view.lastSeq);
  }

  open(after) {
    if (this.closed) return;
    if (!this.source) this.view.setBadge("CONNECTING"); // later opens are reconnects: already RECONNECTING
    const source = new EventSource(withParams(this.eventsUrl, { after: after || undefined }));
    this.source = source;
    source.onopen = () => {
      this.attempt = 0;
      if (!this.closed) this.view.setBadge("LIVE");
    };
    const onEntry = (event) => this.receive(event);
    for (const kind of EVENT_KINDS) source.addEventListener(kind, onEntry);
    source.onerror = () => {
      if (this.closed || source !== this.source) return;
      this.view.setBadge("RECONNECTING");
      // CONNECTING: a drop, and EventSource resumes with Last-Event-ID by itself.
      // CLOSED: it gave up for good (the server answered something else than 200): retry ourselves.
      if (source.readyState === EventSource.CLOSED) this.retryLater();
    };
  }

  receive(event) {
    if (this.closed) return;
    let entry;
    try {
      entry = JSON.parse(event.data);
    } catch {
      this.view.note(`unreadable event ${event.lastEventId}`, "warn");
      return;
    }
    this.view.apply(entry);
    if (entry.kind === "stream.ended") this.finish();
  }

  /** The turn is over: DONE, and no connection left that could reconnect. */
  finish() {
    this.close();
    this.view.setBadge("DONE");
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.probe) this.probe.abort();
    if (this.source) this.source.close();
  }

  retryLater() {
    if (this.source) this.source.close();
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.timer = setTimeout(() => this.retry(), base + Math.random() * base * 0.3);
  }

  /** Probe the stream from the last seen seq: 204 ends retrying, 200 reopens, anything else waits. */
  async retry() {
    if (this.closed) return;
    const after = this.view.lastSeq;
    this.probe = new AbortController();
    let status = 0;
    try {
      const res = await fetch(withParams(this.eventsUrl, { after: after || undefined }), { signal: this.probe.signal });
      status = res.status;
      this.probe.abort(); // only the status was needed
    } catch {
      status = 0; // the server is down (or restarting)
    }
    if (this.closed) return;
    if (status === 204) {
      this.finish(); // the server says this turn is over and we have everything
    } else if (status === 200) {
      this.refusals = 0;
      this.open(after);
    } else if ((status === 404 || status === 400) && ++this.refusals >= 3) {
      // Asked three times: the server does not know this turn (another data directory?). Give up.
      this.view.note(`cannot follow this turn any more (HTTP ${status})`, "error");
      this.close();
      this.view.setBadge("DONE");
    } else {
      this.retryLater();
    }
  }
}

// --- the page -----------------------------------------------------------------------------------------

class Console {
  constructor() {
    this.sessions = [];
    this.sessionId = null;
    this.views = new Map(); // turn id -> {view, stream}
    this.latest = null; // the TurnView shown in the top bar
    this.machines = null;
    this.readiness = null;
    this.pollTimer = null;
    this.loadToken = 0; // which showSession() call is current
    this.loadedSession = null; // the session whose log is drawn (new turns are followed from then on)

    this.transcript = $("transcript");
    this.promptBox = $("prompt");
    this.interruptButton = $("interrupt");
    this.sendButton = $("send");

    $("new-session").addEventListener("click", () => this.createSession());
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.promptBox.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.send();
      }
    });
    this.interruptButton.addEventListener("click", () => this.interrupt());
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.liveView()) {
        e.preventDefault();
        this.interrupt();
      }
    });
    window.addEventListener("hashchange", () => this.selectFromHash());
  }

  async start() {
    this.loadMachines();
    await this.poll();
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

  // -- polling sessions and readiness ----------------------------------------------------------------

  async poll() {
    await Promise.all([this.refreshReadiness(), this.refreshSessions()]);
    const busy = this.liveView() !== null;
    clearTimeout(this.pollTimer); // one timer, however many polls ran at once
    this.pollTimer = setTimeout(() => this.poll(), busy ? 1000 : 3000);
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

  async refreshSessions() {
    try {
      this.sessions = (await api("GET", "/v1/sessions")).sessions || [];
    } catch {
      return; // keep showing the last list; the pool chip says the server is unreachable
    }
    this.renderSessions();
    this.followNewTurns();
    this.renderMachines();
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

  renderSessions() {
    const list = $("sessions");
    list.replaceChildren(
      ...this.sessions
        .slice()
        .reverse()
        .map((s) =>
          h(
            "li",
            {
              class: s.id === this.sessionId ? "session selected" : "session",
              "data-testid": "session-item",
              "data-session-id": s.id,
              "data-state": s.state,
              onclick: () => (location.hash = s.id),
            },
            h("code", { class: "sid" }, s.id),
            h("span", { class: `chip state-${s.state}`, "data-testid": "session-state" }, s.state),
            h("span", { class: "muted" }, `${s.turns.length} turn${s.turns.length === 1 ? "" : "s"}${s.active_stream ? " · " + s.active_stream + " running" : ""}`),
          ),
        ),
    );
    $("no-sessions").hidden = this.sessions.length > 0;
  }

  currentSession() {
    return this.sessions.find((s) => s.id === this.sessionId) || null;
  }

  /** "state → next · next" for a machine kind, from GET /v1/machines (the specs the docs come from). */
  renderMachine(el, kind, state, label, id = "") {
    el.replaceChildren();
    if (!state) return;
    const spec = this.machines && this.machines[kind];
    const next = new Set();
    if (spec) {
      for (const t of spec.transitions) {
        if (t.source.includes(state) && t.dest !== "=" && t.dest !== state) next.add(t.dest);
      }
    }
    const doc = spec && spec.states[state] ? spec.states[state].doc : "";
    el.dataset.state = state;
    el.append(
      h("span", { class: "label" }, label, id ? h("code", { class: "machine-id" }, id) : null),
      h("span", { class: `chip state-${state}`, "data-testid": "machine-state", title: doc }, state),
      h("span", { class: "arrow" }, next.size ? "→" : "(final)"),
      ...[...next].map((s) => h("span", { class: "next", "data-testid": "machine-next", title: spec.states[s] ? spec.states[s].doc : "" }, s)),
    );
  }

  renderMachines() {
    const session = this.currentSession();
    $("session-head").hidden = !this.sessionId;
    $("session-id").textContent = this.sessionId || "";
    this.renderMachine($("session-machine"), "session", session && session.state, "session");
    const view = this.latestOfSession();
    let streamState = view ? view.state : null;
    if (view && session && view.live) {
      const info = session.turns.find((t) => t.id === view.turnId);
      if (info) streamState = info.state; // the server's fold is the authority while the turn runs
    }
    this.renderMachine($("stream-machine"), "stream", streamState, "turn", view ? view.turnId : "");
    const pool = this.readiness && this.readiness.pool;
    this.renderMachine($("pool-machine"), "pool", pool && pool.state, "pool");
  }

  // -- selecting a session and showing its turns -----------------------------------------------------

  selectFromHash() {
    const sid = decodeURIComponent(location.hash.slice(1));
    if (sid && sid !== this.sessionId) this.showSession(sid);
  }

  /** Show a session: its turns from the log, and a live stream for every turn still open. */
  async showSession(sid) {
    this.closeViews();
    this.sessionId = sid;
    const load = ++this.loadToken;
    this.renderSessions();
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
    const entries = text.split("\n").filter((line) => line.trim()).map((line) => JSON.parse(line));
    for (const entry of entries) {
      if (!entry.stream) continue;
      let item = this.views.get(entry.stream);
      if (!item) item = this.addTurn(entry.stream, null);
      item.view.apply(entry);
    }
    for (const [tid, item] of this.views) {
      if (item.view.live) this.follow(tid);
      else item.view.setBadge("DONE");
    }
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
    if (view === this.latest) this.updateTopBadge();
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

  latestOfSession() {
    return this.latest;
  }

  updateButtons() {
    const live = this.liveView();
    this.interruptButton.disabled = !live;
  }

  isAtEnd(slack = 40) {
    const t = this.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < slack;
  }

  scrollToEnd(yes) {
    if (yes) this.transcript.scrollTop = this.transcript.scrollHeight;
  }

  // -- actions ------------------------------------------------------------------------------------------

  async createSession() {
    try {
      const info = await api("POST", "/v1/sessions");
      this.sessions.push(info);
      location.hash = info.id;
      await this.showSession(info.id);
      this.refreshSessions();
      this.promptBox.focus();
      return info.id;
    } catch (err) {
      this.flash(`cannot create a session: ${err.message}`);
      return null;
    }
  }

  async send() {
    const prompt = this.promptBox.value;
    if (!prompt.trim()) return;
    this.sendButton.disabled = true;
    try {
      const sid = this.sessionId || (await this.createSession());
      if (!sid) return;
      const turn = await api("POST", `/v1/sessions/${encodeURIComponent(sid)}/turns`, { prompt });
      this.promptBox.value = "";
      if (sid !== this.sessionId) return;
      const item = this.views.get(turn.turn_id) || this.addTurn(turn.turn_id);
      item.view.prompt.textContent = prompt;
      if (!item.stream && item.view.live) this.follow(turn.turn_id);
      this.poll();
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
