// One turn's SSE connection: CONNECTING / LIVE / RECONNECTING / DONE, resumed without gap or duplicate.
//
// The connection rules (what keeps a turn from being "stuck at RECONNECTING"):
//   * `stream.ended` is the turn's terminal entry: show DONE and close the EventSource ourselves.
//   * error with readyState CONNECTING: a drop; EventSource resumes with Last-Event-ID by itself.
//   * error with readyState CLOSED: EventSource gave up for good (a non-200 answer, e.g. during a server
//     restart). Retry with backoff from the last seen seq (`?after=`: a new EventSource cannot set
//     Last-Event-ID). Before reopening, probe the URL: 204 means the turn is over, which ends retrying.

import { backoff, withParams } from "./api.js";
import { EVENT_KINDS } from "./turn-view.js";

/** Follows a turn over SSE until its terminal entry, through drops and server restarts. */
export class TurnStream {
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
    this.timer = setTimeout(() => this.retry(), backoff(this.attempt++));
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

