// One turn, rendered from its log entries: the prompt, text (markdown) as it streams, thinking and tool
// calls as collapsible blocks, notes, stderr, errors in plain words, and the timing line.

import { approvals } from "./approvals.js";
import { MarkdownBlock } from "./markdown.js";
import { formatMs, h, percent, pretty, promptText, resultText, stripSimDirectives, toolSummary } from "./util.js";

// Every entry kind the console listens for. EventSource only delivers named events to named listeners;
// kinds not listed here still advance Last-Event-ID, so resuming is unaffected.
export const EVENT_KINDS = [
  "cli.system", "cli.assistant", "cli.user", "cli.result", "cli.stream_event", "cli.control_request",
  "cli.control_response", "cli.control_cancel_request", "cli.rate_limit_event", "cli.keep_alive",
  "cli.decode_error", "cli.oversized_line", "stderr", "session.created", "session.stop_requested",
  "session.stopped", "session.recovered", "session.titled", "process.spawned", "process.spawn_failed",
  "process.exited", "turn.requested", "prompt.written", "interrupt.requested", "interrupt.escalated", "timeout",
  "stream.ended", "log.repaired",
];

/**
 * Renders one turn from its entries, fed in seq order by the log (history) or a TurnStream (live).
 * Text comes from `text_delta`s when the CLI streams partial messages, else from the `assistant` lines
 * (the CLI sends both with partials on, so a message seen via `message_start` skips its assistant text).
 */
export class TurnView {
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
    this.simChip = h("span", { class: "sim-chip", "data-testid": "sim-directives", hidden: true }, "sim");
    this.promptRow = h("div", { class: "prompt-row" }, this.simChip, this.prompt);
    this.body = h("div", { class: "turn-body", "data-testid": "turn-body" });
    this.footer = h("div", { class: "turn-footer" });
    this.el = h(
      "article",
      { class: "turn", "data-testid": "turn", "data-turn-id": turnId, "data-state": "queued" },
      h("header", { class: "turn-head" }, h("code", { class: "turn-id" }, turnId), this.outcome, h("span", { class: "spacer" }), this.badge),
      this.promptRow,
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
    else if (kind === "turn.requested") this.setPrompt(entry.prompt);
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

  /** The prompt bubble: the prompt as typed, minus `[[sim …]]` directives (kept in the chip's tooltip). */
  setPrompt(prompt) {
    const { text, directives } = stripSimDirectives(promptText(prompt));
    this.prompt.textContent = text;
    this.prompt.classList.toggle("only-directives", !text);
    this.simChip.hidden = directives.length === 0;
    this.simChip.title = directives.length ? `simulator directives (not shown):\n${directives.join("\n")}` : "";
  }

  applyCli(entry) {
    const msg = entry.msg || {};
    if (entry.type === "stream_event") this.applyStreamEvent(msg.event || {}, entry);
    else if (entry.type === "assistant") this.applyAssistant(msg, entry);
    else if (entry.type === "user") this.applyUser(msg, entry);
    else if (entry.type === "result") this.result = msg;
    else if (entry.type === "control_request" || entry.type === "control_cancel_request") approvals.onControl(this, entry);
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
      if (block && block.markdown) block.markdown.flush();
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
        if (view.markdown) view.markdown.flush();
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
      const markdown = new MarkdownBlock();
      view = { type: "text", el: markdown.el, body: markdown.el, markdown };
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
    if (view.markdown) view.markdown.append(text); // rendered (sanitized) at most once per frame
    else view.body.append(text); // thinking: a Text node per delta, never parsed as HTML
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
    for (const block of this.blocks.values()) {
      block.el.classList.remove("open-block");
      if (block.markdown && block.markdown.pending) block.markdown.flush();
    }
    this.updateToolGroups();
    // A long run of tool calls folds away once the turn is over, so the answer is what one sees.
    for (const el of this.body.querySelectorAll(":scope > .tools")) {
      if (el.group.list.children.length > 5) el.open = false;
    }
    if (entry.outcome !== "completed") {
      // A turn cut short by a server restart is not the agent's failure: amber, not red.
      const restart = entry.reason === "server restarted";
      const level = entry.outcome === "cancelled" || restart ? "warn" : "error";
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

