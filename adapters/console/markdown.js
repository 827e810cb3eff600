// Markdown in answers: parsed by marked, sanitized by DOMPurify, code highlighted by highlight.js — all
// vendored, pinned, under vendor/ (tools/console-vendor re-vendors them). Nothing the model writes can run:
//
//   * every render goes through DOMPurify (HTML profile only: no SVG or MathML), which drops <script>,
//     event-handler attributes (onerror=…) and javascript:/data: URLs;
//   * forms, frames, embeds, media and inline styles are removed as well (no fake buttons over the page);
//   * images are never loaded: a markdown image becomes a link to it, and a raw <img> is dropped — a
//     prompt-injected answer cannot send data anywhere by making the page fetch a URL;
//   * links open in a new tab without an opener or referrer.
//
// Text streams in delta by delta; a block is re-rendered at most once per animation frame, and its source
// is kept on the element (`el.markdownSource`) — the text exactly as the model wrote it.

import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";
import hljs from "./vendor/highlight.min.js";
import { h } from "./util.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    // An image is shown as a link to it: the page never fetches a URL an answer chose.
    image({ href, text }) {
      const label = text ? `image: ${text}` : "image";
      return `<a href="${escapeHtml(href || "")}" class="md-image-link">${escapeHtml(label)}</a>`;
    },
  },
});

const FORBID_TAGS = [
  "img", "picture", "source", "video", "audio", "track", "iframe", "frame", "frameset", "object", "embed",
  "form", "input", "button", "textarea", "select", "option", "style", "link", "meta", "base", "dialog",
];

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName !== "A") return;
  if (node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  } else {
    node.setAttribute("title", "link removed: its address was not a web address");
  }
});

const MAX_HIGHLIGHT = 40_000; // characters: longer code is shown plain (highlighting is per frame)

/** The sanitized DOM of `source` (markdown), code blocks highlighted and given a copy button. */
export function renderMarkdown(source) {
  const html = marked.parse(source, { async: false });
  const fragment = DOMPurify.sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS,
    FORBID_ATTR: ["style", "srcset", "formaction"],
    RETURN_DOM_FRAGMENT: true,
  });
  for (const code of fragment.querySelectorAll("pre > code")) decorateCode(code);
  return fragment;
}

function decorateCode(code) {
  const pre = code.parentElement;
  const lang = [...code.classList].find((c) => c.startsWith("language-"))?.slice(9) || "";
  const text = code.textContent.replace(/\n$/, ""); // marked ends a code block with a newline
  if (text.length <= MAX_HIGHLIGHT) {
    // highlight.js escapes the code itself: the result is spans around escaped text.
    const known = lang && hljs.getLanguage(lang);
    const result = known ? hljs.highlight(text, { language: lang, ignoreIllegals: true }) : hljs.highlightAuto(text);
    code.innerHTML = result.value;
    code.classList.add("hljs");
    if (!lang && result.language) code.dataset.detected = result.language;
  }
  const copy = h("button", { type: "button", class: "copy", "data-testid": "copy-code", title: "Copy to the clipboard" }, "Copy");
  copy.addEventListener("click", () => copyText(text, copy));
  const head = h("div", { class: "code-head" }, h("span", { class: "code-lang" }, lang || code.dataset.detected || "text"), copy);
  const wrap = h("div", { class: "code-block", "data-testid": "code-block" }, head);
  pre.replaceWith(wrap);
  wrap.append(pre);
}

async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    // No clipboard API (an insecure origin) or no permission: the old way.
    const area = h("textarea", { class: "offscreen", readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
  }
  button.textContent = ok ? "Copied" : "Copy failed";
  button.dataset.copied = String(ok);
  setTimeout(() => {
    button.textContent = "Copy";
    delete button.dataset.copied;
  }, 1500);
}

/** A text block that renders its markdown as it streams in (at most once per animation frame). */
export class MarkdownBlock {
  constructor(attrs = {}) {
    this.el = h("div", { class: "text-block markdown", "data-testid": "text-block", ...attrs });
    this.el.markdownSource = "";
    this.pending = false;
  }

  get source() {
    return this.el.markdownSource;
  }

  append(text) {
    if (!text) return;
    this.el.markdownSource += text;
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => this.flush());
    }
  }

  /** Render now (a block that ended, or a page drawing history). */
  flush() {
    this.pending = false;
    this.el.replaceChildren(renderMarkdown(this.el.markdownSource));
  }
}
