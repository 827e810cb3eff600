// The replay viewer's waterfall: one row per turn, its time split into the phases its stream machine went
// through (waiting for the first event, thinking, responding, running tools), API retries marked, the
// session's own states in a lane above, and the cursor. Click a phase (or anywhere on the time axis) to
// move the cursor there.

import { formatMs, svg } from "./util.js";

const LABEL_W = 168;
const ROW_H = 24;
const BAR_H = 14;
const LANE_H = 12;
const AXIS_H = 22;
const RIGHT = 14;

/** What a stream state counts as (specs/stream.toml `phase`), for colours and the legend. */
export const PHASES = [
  ["waiting", "waiting for the first event"],
  ["thinking", "thinking"],
  ["responding", "responding"],
  ["tool", "running a tool"],
];

function niceStep(span, target) {
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

export class Waterfall {
  /** `model` from replay.js; `onSeek(index)` moves the cursor to an entry. */
  constructor(container, model, onSeek) {
    this.container = container;
    this.model = model;
    this.onSeek = onSeek;
    this.cursor = 0;
    this.resize = new ResizeObserver(() => this.render());
    this.resize.observe(container);
  }

  x(t) {
    const { tmin, tmax } = this.model;
    return LABEL_W + ((t - tmin) / Math.max(1e-9, tmax - tmin)) * this.plotW;
  }

  /** The entry index at pixel `px` of the plot (the last entry at or before that time). */
  indexAt(px) {
    const { tmin, tmax, t } = this.model;
    const time = tmin + ((px - LABEL_W) / this.plotW) * (tmax - tmin);
    let lo = 0;
    let hi = t.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (t[mid] <= time) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  render() {
    const width = Math.max(360, this.container.clientWidth);
    if (width === this.width && this.svgEl) return;
    this.width = width;
    this.plotW = width - LABEL_W - RIGHT;
    const m = this.model;
    const rows = m.streams;
    const height = AXIS_H + LANE_H + 10 + rows.length * ROW_H + 6;
    const root = svg("svg", { class: "waterfall-svg", width, height, viewBox: `0 0 ${width} ${height}` });
    const plot = svg("g", {});
    root.append(plot);

    // the time axis
    const span = m.tmax - m.tmin;
    const step = niceStep(span || 1, Math.max(2, Math.floor(this.plotW / 90)));
    for (let v = 0; v <= span + 1e-6; v += step) {
      const x = this.x(m.tmin + v);
      plot.append(
        svg("line", { x1: x, x2: x, y1: AXIS_H - 4, y2: height, class: "tick" }),
        svg("text", { x, y: AXIS_H - 8, class: "tick-label", "text-anchor": "middle" }, m.timed ? formatMs(v) : `#${Math.round(v / 100) + 1}`),
      );
    }
    plot.append(svg("text", { x: 4, y: AXIS_H - 8, class: "axis-name" }, m.timed ? "time since the first entry" : "entries (no times in this file)"));

    // the session's states
    const laneY = AXIS_H + 2;
    plot.append(svg("text", { x: 4, y: laneY + LANE_H - 2, class: "row-label session-label" }, "session"));
    for (const seg of m.sessionSegments) {
      const x1 = this.x(m.t[seg.start]);
      const x2 = this.x(m.t[seg.end]);
      plot.append(
        svg("rect", { x: x1, y: laneY, width: Math.max(1.5, x2 - x1), height: LANE_H, class: `lane state-${seg.state}`, "data-testid": "session-phase", "data-state": seg.state, onclick: () => this.onSeek(seg.start) },
          svg("title", {}, `session ${seg.state} — ${formatMs(m.t[seg.end] - m.t[seg.start])} from ${formatMs(m.t[seg.start] - m.tmin)}`),
        ),
      );
    }

    // one row per turn
    rows.forEach((s, r) => {
      const y = AXIS_H + LANE_H + 10 + r * ROW_H;
      const row = svg("g", { class: "turn-row", "data-testid": "turn-row", "data-stream": s.id });
      row.append(svg("rect", { x: 0, y, width, height: ROW_H, class: r % 2 ? "row-bg odd" : "row-bg" }));
      const outcome = s.summary ? s.summary.outcome || `open (${s.summary.state})` : "";
      const total = s.summary && s.summary.timing ? s.summary.timing.total_ms : null;
      row.append(
        svg("text", { x: 8, y: y + ROW_H / 2 + 4, class: "row-label" }, s.id),
        svg("text", { x: 40, y: y + ROW_H / 2 + 4, class: `row-outcome outcome-${outcome}` }, outcome),
        svg("text", { x: LABEL_W - 8, y: y + ROW_H / 2 + 4, class: "row-total", "text-anchor": "end" }, total !== null && total !== undefined ? formatMs(total) : ""),
      );
      const top = y + (ROW_H - BAR_H) / 2;
      // Wide phases first: a phase too short to see is drawn on top, at least 3 px wide, so it can be clicked.
      const drawn = s.segments.map((seg) => ({ seg, w: this.x(m.t[seg.end]) - this.x(m.t[seg.start]) }));
      drawn.sort((a, b) => b.w - a.w);
      for (const { seg } of drawn) {
        const x1 = this.x(m.t[seg.start]);
        const x2 = this.x(m.t[seg.end]);
        const what = seg.tool ? `${seg.state} (${seg.tool})` : seg.state;
        row.append(
          svg("rect", { x: x1, y: top, width: Math.max(3, x2 - x1), height: BAR_H, rx: 1.5, class: `phase phase-${seg.phase}`, "data-testid": "phase", "data-state": seg.state, "data-stream": s.id, "data-index": seg.start, onclick: () => this.onSeek(seg.start) },
            svg("title", {}, `${s.id} ${what} — ${formatMs(m.t[seg.end] - m.t[seg.start])}, from ${formatMs(m.t[seg.start] - m.tmin)} (seq ${m.entries[seg.start].seq})`),
          ),
        );
      }
      if (s.end !== null) {
        const x = this.x(m.t[s.end]);
        row.append(svg("path", { d: `M ${x} ${top - 1} l 5 ${BAR_H / 2 + 1} l -5 ${BAR_H / 2 + 1} l -5 ${-BAR_H / 2 - 1} z`, class: `end-mark outcome-${s.endState}`, onclick: () => this.onSeek(s.end) },
          svg("title", {}, `${s.id} ${s.endState} at ${formatMs(m.t[s.end] - m.tmin)} (seq ${m.entries[s.end].seq})`)));
      }
      for (const i of s.retries) {
        const x = this.x(m.t[i]);
        row.append(svg("path", { d: `M ${x} ${top - 3} l 4 -6 l -8 0 z`, class: "retry-mark", "data-testid": "retry-mark", onclick: () => this.onSeek(i) },
          svg("title", {}, `API retry at ${formatMs(m.t[i] - m.tmin)} (seq ${m.entries[i].seq})`)));
      }
      plot.append(row);
    });

    // the cursor, and seeking by clicking the axis or dragging
    this.cursorLine = svg("line", { y1: AXIS_H - 6, y2: height, class: "cursor", "data-testid": "waterfall-cursor" });
    this.cursorHandle = svg("path", { class: "cursor-handle" });
    root.append(this.cursorLine, this.cursorHandle);
    const seekAt = (event) => {
      const rect = root.getBoundingClientRect();
      const px = event.clientX - rect.left;
      if (px >= LABEL_W - 4) this.onSeek(this.indexAt(Math.max(LABEL_W, px)));
    };
    root.addEventListener("pointerdown", (event) => {
      if (event.target.closest && event.target.closest(".phase, .lane, .end-mark, .retry-mark")) return;
      seekAt(event);
      const move = (e) => seekAt(e);
      const up = () => {
        window.removeEventListener("pointermove", move);
        window.removeEventListener("pointerup", up);
      };
      window.addEventListener("pointermove", move);
      window.addEventListener("pointerup", up);
    });
    this.svgEl = root;
    this.container.replaceChildren(root);
    this.setCursor(this.cursor);
  }

  setCursor(index) {
    this.cursor = index;
    if (!this.cursorLine) return;
    const x = this.x(this.model.t[index]);
    this.cursorLine.setAttribute("x1", String(x));
    this.cursorLine.setAttribute("x2", String(x));
    this.cursorHandle.setAttribute("d", `M ${x - 5} ${AXIS_H - 12} l 10 0 l -5 7 z`);
  }
}
