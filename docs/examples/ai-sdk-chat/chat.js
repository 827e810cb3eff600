// A chat page on Turnstile with the Vercel AI SDK's framework-free client (`AbstractChat` from "ai",
// the class under useChat). Bundle it with any bundler, e.g.:
//   npx esbuild chat.js --bundle --format=esm --outfile=chat.bundle.js
// The chat id lives in the URL's #fragment, so a reload is the same chat: the page loads the history
// (GET /v1/chat/<id>/messages) and resumes a running answer (GET /v1/chat/<id>/stream).
import { AbstractChat, DefaultChatTransport } from "ai";

const API = document.body.dataset.api || "/v1/chat";

// The state AbstractChat keeps its messages and status in (what @ai-sdk/react's useChat keeps in React).
class PageState {
  constructor(messages, changed) {
    this._messages = messages;
    this._status = "ready";
    this._error = undefined;
    this.changed = changed;
  }
  get messages() { return this._messages; }
  set messages(messages) { this._messages = messages; this.changed(); }
  get status() { return this._status; }
  set status(status) { this._status = status; this.changed(); }
  get error() { return this._error; }
  set error(error) { this._error = error; this.changed(); }
  pushMessage(message) { this.messages = [...this._messages, message]; }
  popMessage() { this.messages = this._messages.slice(0, -1); }
  replaceMessage(index, message) {
    this.messages = [...this._messages.slice(0, index), message, ...this._messages.slice(index + 1)];
  }
  snapshot(value) { return structuredClone(value); }
}

class Chat extends AbstractChat {
  constructor({ messages, changed, ...init }) {
    super({ ...init, state: new PageState(messages, changed) });
  }
}

function chatId() {
  if (!location.hash.slice(1)) location.hash = crypto.randomUUID();
  return location.hash.slice(1);
}

function render(chat) {
  const list = document.getElementById("messages");
  list.replaceChildren(
    ...chat.messages.map((message) => {
      const box = document.createElement("div");
      box.className = "message";
      box.dataset.role = message.role;
      box.dataset.id = message.id;
      for (const part of message.parts) {
        const el = document.createElement(part.type === "reasoning" ? "details" : "div");
        if (part.type === "text") {
          el.className = "text";
          el.textContent = part.text;
        } else if (part.type === "reasoning") {
          el.className = "reasoning";
          el.textContent = part.text || "(thinking)";
        } else if (part.type === "dynamic-tool") {
          el.className = "tool";
          el.dataset.state = part.state;
          const output = part.state === "output-error" ? part.errorText : JSON.stringify(part.output ?? "");
          el.textContent = `${part.toolName} ${JSON.stringify(part.input ?? {})} → ${output ?? "…"}`;
        } else if (part.type === "data-turnstile-timing") {
          el.className = "timing";
          el.textContent = `${part.data.outcome} in ${Math.round(part.data.totalMs ?? 0)} ms`;
        } else {
          continue;
        }
        box.append(el);
      }
      return box;
    }),
  );
  document.getElementById("status").textContent = chat.status;
  const error = document.getElementById("error");
  error.hidden = !chat.error;
  error.textContent = chat.error ? String(chat.error.message ?? chat.error) : "";
}

async function main() {
  const id = chatId();
  const history = await (await fetch(`${API}/${encodeURIComponent(id)}/messages`)).json();
  let chat;
  let queued = false;
  const changed = () => {
    if (queued || !chat) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      render(chat);
    });
  };
  chat = new Chat({ id, messages: history, changed, transport: new DefaultChatTransport({ api: API }) });
  render(chat);
  chat.resumeStream(); // what useChat({ resume: true }) does on mount: 204 when nothing runs
  document.getElementById("form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("prompt");
    if (!input.value.trim()) return;
    chat.sendMessage({ text: input.value });
    input.value = "";
  });
  document.getElementById("stop").addEventListener("click", () => {
    chat.stop(); // ends this page's request only...
    fetch(`${API}/${encodeURIComponent(id)}/stop`, { // ...this stops the agent
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
  });
}

main();
