// The HTTP API as the console uses it (docs/api.md): JSON calls, and EventSource feeds that survive drops
// and restarts. With `turnstile serve --token` the page was opened once as /?token=…: the server answered
// with an HttpOnly, SameSite=Strict cookie and a redirect without the token, so every request carries the
// cookie and the token is never in page script.

/** `path` with `params` as its query string. */
export function withParams(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
  }
  return url.pathname + url.search;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A JSON API call. Throws ApiError (with the server's code and message) on a non-2xx answer. */
export async function api(method, path, body) {
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

export const BACKOFF_MS = [250, 500, 1000, 2000, 4000];

export function backoff(attempt) {
  const base = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
  return base + Math.random() * base * 0.3;
}

/**
 * An EventSource that never gives up: a drop is resumed by the browser (readyState CONNECTING); when the
 * browser gives up for good (a non-200 answer, e.g. a proxy's 502 while the server restarts) it is
 * reopened with backoff. For feeds with nothing to resume (each connection starts with a snapshot).
 * `handlers` maps event names to functions of the parsed data; `onState` sees "connecting" / "live" /
 * "reconnecting".
 */
export class LiveFeed {
  constructor(url, handlers, onState = () => {}) {
    this.url = url;
    this.handlers = handlers;
    this.onState = onState;
    this.source = null;
    this.attempt = 0;
    this.timer = null;
    this.closed = false;
  }

  start() {
    this.open();
    return this;
  }

  open() {
    if (this.closed) return;
    const source = new EventSource(withParams(this.url));
    this.source = source;
    this.onState(this.attempt ? "reconnecting" : "connecting");
    source.onopen = () => {
      this.attempt = 0;
      this.onState("live");
    };
    for (const [name, fn] of Object.entries(this.handlers)) {
      source.addEventListener(name, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        fn(data);
      });
    }
    source.onerror = () => {
      if (this.closed || source !== this.source) return;
      this.onState("reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        this.timer = setTimeout(() => this.open(), backoff(this.attempt++));
      }
    };
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
  }
}
