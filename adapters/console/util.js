// Small helpers shared by the console and the replay viewer: DOM building (text is never parsed as HTML),
// number and time formatting, and the simulator's prompt directives.

/** h("div", {class: "x", "data-testid": "y", onclick: fn}, child, "text", ...): an element; strings become
 *  Text nodes, never HTML. */
export function h(tag, attrs = {}, ...children) {
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

/** The element with `data-testid` = `testid` under `root`. */
export const $ = (testid, root = document) => root.querySelector(`[data-testid="${testid}"]`);

/** An SVG element (for the state diagrams and the waterfall). */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, String(value));
  }
  el.append(...children.filter((c) => c !== undefined && c !== null && c !== false));
  return el;
}

export function formatMs(ms) {
  if (ms === null || ms === undefined) return "?";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60000);
  return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function percent(part, total) {
  if (part === null || part === undefined || !total) return "?";
  return `${Math.round((100 * part) / total)}%`;
}

export function formatCost(usd) {
  if (usd === null || usd === undefined) return "";
  if (usd === 0) return "$0";
  return usd < 0.01 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

/** "just now", "12 s ago", "5 min ago", "3 h ago", else the date. `ts` in seconds since the epoch. */
export function formatAgo(ts, now = Date.now() / 1000) {
  if (ts === null || ts === undefined) return "no activity";
  const s = Math.max(0, now - ts);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts * 1000).toLocaleDateString();
}

export function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** The text of a tool_result's content: a string, or a list of blocks. */
export function resultText(content) {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((b) => (b && b.type === "text" ? b.text : pretty(b))).join("\n");
  }
  return pretty(content);
}

/** A one-line summary of a tool's input, e.g. the Bash command. */
export function toolSummary(input) {
  if (!input || typeof input !== "object") return "";
  const first = input.command ?? input.file_path ?? input.pattern ?? input.url ?? input.query ?? input.description;
  const text = first !== undefined ? String(first) : JSON.stringify(input);
  return text.length > 90 ? text.slice(0, 89) + "…" : text;
}

/** The text of a prompt (a string, or content blocks). */
export function promptText(prompt) {
  if (typeof prompt === "string") return prompt;
  if (Array.isArray(prompt)) return prompt.filter((b) => b && b.type === "text").map((b) => b.text).join("\n");
  return pretty(prompt);
}

/**
 * The built-in simulator reads `[[sim key=value ...]]` directives from prompts (engine/agents/sim.py,
 * parse_directives). They are instructions to the test agent, not words for a person: the console shows
 * the prompt without them. Same scanning rules as the simulator: `[[sim` followed by a space or `]]`,
 * quoted values may hold `]]` and `\"`; an unclosed bracket is left as it is (the simulator does too).
 * Returns {text, directives} — `directives` holds the removed brackets, verbatim.
 */
export function stripSimDirectives(prompt) {
  let text = "";
  const directives = [];
  let i = 0;
  for (;;) {
    const j = prompt.indexOf("[[sim", i);
    if (j < 0) {
      text += prompt.slice(i);
      break;
    }
    let k = j + 5;
    if (k < prompt.length && !/\s/.test(prompt[k]) && !prompt.startsWith("]]", k)) {
      text += prompt.slice(i, k);
      i = k;
      continue;
    }
    const end = scanBracket(prompt, k);
    if (end < 0) {
      text += prompt.slice(i);
      break;
    }
    text += prompt.slice(i, j);
    directives.push(prompt.slice(j, end));
    i = end;
  }
  return { text: text.replace(/[ \t]+\n/g, "\n").trim(), directives };
}

function scanBracket(s, k) {
  const n = s.length;
  for (;;) {
    while (k < n && /\s/.test(s[k])) k++;
    if (k >= n) return -1;
    if (s.startsWith("]]", k)) return k + 2;
    while (k < n && !/\s/.test(s[k]) && s[k] !== "=" && !s.startsWith("]]", k)) k++;
    if (k < n && s[k] === "=") {
      k++;
      if (k < n && (s[k] === '"' || s[k] === "'")) {
        const quote = s[k++];
        while (k < n && s[k] !== quote) k += s[k] === "\\" && k + 1 < n ? 2 : 1;
        if (k >= n) return -1;
        k++;
      } else {
        while (k < n && !/\s/.test(s[k]) && !s.startsWith("]]", k)) k++;
      }
    }
  }
}

/** A title for a session: its own, else its first prompt without simulator directives, else its id. */
export function sessionTitle(info) {
  if (info.title) return info.title;
  if (info.first_prompt) {
    const { text } = stripSimDirectives(info.first_prompt);
    // A preview cut inside a directive leaves an unclosed "[[sim …": drop it.
    const cut = text.replace(/\[\[sim(\s[^\]]*)?$/, "").trim();
    const line = cut.split("\n")[0].trim();
    if (line) return line.length > 80 ? line.slice(0, 79) + "…" : line;
  }
  return info.id;
}

/** Whether keyboard focus is in a text field (so single-key shortcuts stay out of the way). */
export function typing(target) {
  const el = target instanceof Element ? target : null;
  return Boolean(el && (el.closest("input, textarea, select, [contenteditable=true]")));
}
