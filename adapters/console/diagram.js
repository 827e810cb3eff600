// State diagrams drawn in SVG from GET /v1/machines — the specs/ that docs/machines.md is generated from,
// and the same drawing (engine/diagram.py `drawing`): a group of states is one box with its states inside,
// arrows between a group and the outside attach to the group, arrows inside a group stay inside it.
//
// Layout, top to bottom (a small Sugiyama): back edges are found by a depth-first walk from the initial
// state and turned around; every box gets the row of its longest path from the start; an arrow that skips
// rows runs through a lane (lanes of one source are shared, so its arrows leave as one bundle); rows are
// ordered by the barycentre of their neighbours, then boxes are pulled towards their neighbours' centres.
//
// `show({state, previous, transition})` highlights the current state, the one before, and the arrow of
// the transition just taken (with its trigger written on it).

import { svg } from "./util.js";

const FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', sans-serif";
const STATE_H = 28;
const PAD_X = 12;
const MIN_W = 62;
const GAP = 22; // between boxes of a row
const LANE_W = 8;
const LANE_GAP = 8;
const ROW_GAP = 42;
const MEMBER_GAP = 26; // between the states of a group
const GROUP_PAD = 10;
const GROUP_LABEL = 18; // the group's name above its states
const ARC = 15; // room above and below a group's states for its own arrows
const MARGIN = 14;
const START_ROOM = 26; // left of the diagram: the start dot

let measurer = null;
function textWidth(text) {
  measurer = measurer || document.createElement("canvas").getContext("2d");
  measurer.font = FONT;
  return measurer.measureText(text).width;
}

/** A machine's diagram. `spec` is GET /v1/machines[kind]. */
export class StateDiagram {
  constructor(spec, { testid = "diagram", title = spec.title } = {}) {
    this.spec = spec;
    this.d = spec.diagram;
    this.groupOf = {};
    for (const [group, members] of Object.entries(this.d.groups)) for (const m of members) this.groupOf[m] = group;
    this.svgEl = svg("svg", { class: "state-diagram", role: "img", "aria-label": `${title} state diagram` });
    this.states = new Map(); // state -> <g>
    this.groups = new Map(); // group -> <g>
    this.edges = new Map(); // "source->dest" (drawn ends) -> {g, path, label, mid}
    this.layout();
    this.el = this.svgEl;
    this.el.dataset.testid = testid;
    this.el.setAttribute("data-testid", testid);
  }

  node(state) {
    return this.groupOf[state] || state;
  }

  // --- layout ------------------------------------------------------------------------------------------

  layout() {
    const names = Object.keys(this.spec.states);
    const nodes = [];
    for (const s of names) if (!nodes.includes(this.node(s))) nodes.push(this.node(s));
    const size = new Map();
    const memberW = (s) => Math.max(MIN_W, textWidth(s) + 2 * PAD_X);
    for (const n of nodes) {
      const members = this.d.groups[n];
      if (members) {
        const inner = members.reduce((sum, m) => sum + memberW(m), 0) + MEMBER_GAP * (members.length - 1);
        const w = Math.max(inner, textWidth(n) + 8) + 2 * GROUP_PAD;
        size.set(n, { w, h: GROUP_LABEL + ARC + STATE_H + ARC + 4 });
      } else {
        size.set(n, { w: memberW(n), h: STATE_H });
      }
    }
    const edges = this.d.outer.map((a) => ({ u: a.source, v: a.dest, label: a.label }));

    // 1. back edges: a depth-first walk from the start
    const out = new Map(nodes.map((n) => [n, []]));
    for (const e of edges) out.get(e.u).push(e);
    const seen = new Set();
    const stack = new Set();
    const visit = (n) => {
      seen.add(n);
      stack.add(n);
      for (const e of out.get(n)) {
        if (stack.has(e.v)) e.back = true;
        else if (!seen.has(e.v)) visit(e.v);
      }
      stack.delete(n);
    };
    visit(this.node(this.d.initial));
    for (const n of nodes) if (!seen.has(n)) visit(n);

    // 2. rows: longest path from the start over the edges, back edges turned around
    for (const e of edges) [e.top, e.bottom] = e.back ? [e.v, e.u] : [e.u, e.v];
    const rank = new Map(nodes.map((n) => [n, 0]));
    const indeg = new Map(nodes.map((n) => [n, 0]));
    for (const e of edges) indeg.set(e.bottom, indeg.get(e.bottom) + 1);
    const queue = nodes.filter((n) => indeg.get(n) === 0);
    while (queue.length) {
      const n = queue.shift();
      for (const e of edges) {
        if (e.top !== n) continue;
        rank.set(e.bottom, Math.max(rank.get(e.bottom), rank.get(n) + 1));
        indeg.set(e.bottom, indeg.get(e.bottom) - 1);
        if (indeg.get(e.bottom) === 0) queue.push(e.bottom);
      }
    }
    const last = Math.max(...rank.values());
    for (const t of this.d.terminal) if (!this.groupOf[t]) rank.set(t, last); // the ends, at the bottom

    // 3. lanes for arrows that skip rows (one per source and row; back edges: per target and row)
    const items = new Map(); // id -> {id, rank, w, h, lane}
    for (const n of nodes) items.set(n, { id: n, rank: rank.get(n), ...size.get(n), lane: false });
    for (const e of edges) {
      const route = [e.top];
      for (let r = rank.get(e.top) + 1; r < rank.get(e.bottom); r++) {
        const id = e.back ? `lane:in:${e.u}:${r}` : `lane:out:${e.u}:${r}`;
        if (!items.has(id)) items.set(id, { id, rank: r, w: LANE_W, h: 0, lane: true });
        route.push(id);
      }
      route.push(e.bottom);
      e.route = route;
    }
    const rows = [];
    for (const item of items.values()) (rows[item.rank] = rows[item.rank] || []).push(item);
    const up = new Map([...items.keys()].map((id) => [id, new Set()]));
    const down = new Map([...items.keys()].map((id) => [id, new Set()]));
    for (const e of edges) {
      for (let i = 0; i + 1 < e.route.length; i++) {
        down.get(e.route[i]).add(e.route[i + 1]);
        up.get(e.route[i + 1]).add(e.route[i]);
      }
    }

    // 4. order within rows: barycentres, a few sweeps down and up
    const pos = new Map();
    const index = () => rows.forEach((row) => row.forEach((item, i) => pos.set(item.id, i)));
    index();
    const mean = (ids) => (ids.size ? [...ids].reduce((s, id) => s + pos.get(id), 0) / ids.size : null);
    for (let sweep = 0; sweep < 6; sweep++) {
      const order = sweep % 2 === 0 ? rows.map((_, r) => r) : rows.map((_, r) => rows.length - 1 - r);
      for (const r of order) {
        const neighbours = sweep % 2 === 0 ? up : down;
        const keyed = rows[r].map((item, i) => ({ item, key: mean(neighbours.get(item.id)) ?? i }));
        keyed.sort((a, b) => a.key - b.key);
        rows[r] = keyed.map((k) => k.item);
        index();
      }
    }

    // 5. x: packed rows, then pulled towards the neighbours' centres (order and spacing kept)
    const cx = new Map();
    const gapBetween = (a, b) => (a.lane || b.lane ? LANE_GAP : GAP);
    for (const row of rows) {
      let x = 0;
      row.forEach((item, i) => {
        if (i) x += gapBetween(row[i - 1], item);
        cx.set(item.id, x + item.w / 2);
        x += item.w;
      });
    }
    const centre = () => {
      const width = (row) => row.reduce((s, it, i) => s + it.w + (i ? gapBetween(row[i - 1], it) : 0), 0);
      const widest = Math.max(...rows.map(width));
      for (const row of rows) {
        const shift = (widest - width(row)) / 2 - (cx.get(row[0].id) - row[0].w / 2);
        for (const it of row) cx.set(it.id, cx.get(it.id) + shift);
      }
    };
    centre();
    for (let round = 0; round < 12; round++) {
      for (const row of rows) {
        const want = row.map((it) => {
          const ns = [...up.get(it.id), ...down.get(it.id)];
          const pull = ns.length ? ns.reduce((s, id) => s + cx.get(id), 0) / ns.length : cx.get(it.id);
          return (cx.get(it.id) + (it.lane ? 2 : 1) * pull) / (it.lane ? 3 : 2);
        });
        for (let i = 0; i < row.length; i++) {
          const min = i ? want[i - 1] + (row[i - 1].w + row[i].w) / 2 + gapBetween(row[i - 1], row[i]) : -Infinity;
          want[i] = Math.max(want[i], min);
        }
        for (let i = row.length - 2; i >= 0; i--) {
          const max = want[i + 1] - (row[i].w + row[i + 1].w) / 2 - gapBetween(row[i], row[i + 1]);
          want[i] = Math.min(want[i], max);
        }
        row.forEach((it, i) => cx.set(it.id, want[i]));
      }
    }
    let minX = Infinity;
    let maxX = -Infinity;
    for (const it of items.values()) {
      minX = Math.min(minX, cx.get(it.id) - it.w / 2);
      maxX = Math.max(maxX, cx.get(it.id) + it.w / 2);
    }
    const left = MARGIN + START_ROOM;
    for (const it of items.values()) cx.set(it.id, cx.get(it.id) - minX + left);

    // 6. y: rows one under the other, boxes centred in their row
    const rowTop = [];
    const rowH = rows.map((row) => Math.max(STATE_H, ...row.map((it) => it.h)));
    let y = MARGIN;
    rows.forEach((row, r) => {
      rowTop[r] = y;
      y += rowH[r] + ROW_GAP;
    });
    const box = (id) => {
      const it = items.get(id);
      const top = rowTop[it.rank] + (rowH[it.rank] - it.h) / 2;
      return { x: cx.get(id) - it.w / 2, y: top, w: it.w, h: it.h, cx: cx.get(id), rowTop: rowTop[it.rank], rowBottom: rowTop[it.rank] + rowH[it.rank] };
    };
    const width = maxX - minX + left + MARGIN;
    const height = y - ROW_GAP + MARGIN;
    this.svgEl.setAttribute("viewBox", `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`);
    this.svgEl.setAttribute("width", String(Math.ceil(width)));
    this.svgEl.setAttribute("height", String(Math.ceil(height)));
    this.svgEl.style.maxWidth = "100%";
    this.svgEl.style.height = "auto";

    const defs = svg("defs", {},
      this.marker("arrow", "#8a93a6"),
      this.marker("arrow-taken", "#3b5bdb"),
    );
    this.svgEl.append(defs);
    const edgeLayer = svg("g", { class: "edges" });
    const nodeLayer = svg("g", { class: "nodes" });
    const labelLayer = svg("g", { class: "edge-labels" });
    this.svgEl.append(edgeLayer, nodeLayer, labelLayer);
    this.labelLayer = labelLayer;

    // 7. boxes
    const stateBox = new Map();
    for (const n of nodes) {
      const b = box(n);
      const members = this.d.groups[n];
      if (members) {
        const g = svg("g", { class: "group", "data-group": n },
          svg("rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 10 }),
          svg("text", { x: b.x + 10, y: b.y + 13, class: "group-label" }, n),
        );
        nodeLayer.append(g);
        this.groups.set(n, g);
        const inner = members.reduce((sum, m) => sum + memberW(m), 0) + MEMBER_GAP * (members.length - 1);
        let x = b.x + (b.w - inner) / 2;
        for (const m of members) {
          const w = memberW(m);
          stateBox.set(m, { x, y: b.y + GROUP_LABEL + ARC, w, h: STATE_H });
          x += w + MEMBER_GAP;
        }
      } else {
        stateBox.set(n, { x: b.x, y: b.y, w: b.w, h: b.h });
      }
    }
    for (const s of names) {
      const b = stateBox.get(s);
      const terminal = this.spec.states[s].terminal;
      const g = svg("g", { class: terminal ? "state terminal" : "state", "data-state": s, "data-testid": "diagram-state" },
        svg("title", {}, `${s}: ${this.spec.states[s].doc}`),
        svg("rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 7 }),
        terminal ? svg("rect", { x: b.x + 3, y: b.y + 3, width: b.w - 6, height: b.h - 6, rx: 5, class: "inner" }) : null,
        svg("text", { x: b.x + b.w / 2, y: b.y + b.h / 2 + 4, "text-anchor": "middle" }, s),
      );
      nodeLayer.append(g);
      this.states.set(s, g);
    }

    // 8. the start: a dot left of the initial state
    const ib = stateBox.get(this.d.initial);
    const sy = ib.y + ib.h / 2;
    const sx = ib.x - (this.d.groups[this.node(this.d.initial)] ? GROUP_PAD + 16 : 24);
    nodeLayer.append(svg("circle", { cx: sx, cy: sy, r: 4.5, class: "start" }));
    const startPath = svg("path", { d: `M ${sx + 5} ${sy} L ${ib.x - 1} ${sy}`, class: "edge", "marker-end": "url(#arrow)" });
    const startEdge = svg("g", { class: "edge-group", "data-edge": "->" + this.d.initial }, startPath);
    edgeLayer.append(startEdge);
    this.edges.set("->" + this.d.initial, { g: startEdge, path: startPath, mid: { x: (sx + ib.x) / 2, y: sy - 8 } });

    // 9. arrows between rows (through their lanes), ports spread along the faces they leave and enter
    const ports = new Map(); // "id:bottom" / "id:top" -> [edges]
    const portOf = (id, face, e) => {
      const key = `${id}:${face}`;
      if (!ports.has(key)) ports.set(key, []);
      ports.get(key).push(e);
    };
    for (const e of edges) {
      portOf(e.route[0], "bottom", e);
      portOf(e.route[e.route.length - 1], "top", e);
    }
    // Arrows that go on through the same lane (or to the same box) leave from one port: a bundle.
    const portX = (id, face, e) => {
      const b = box(id);
      const nextId = face === "bottom" ? (x) => x.route[1] : (x) => x.route[x.route.length - 2];
      const hops = [...new Set(ports.get(`${id}:${face}`).map(nextId))].sort((a, c) => cx.get(a) - cx.get(c));
      const k = hops.indexOf(nextId(e));
      const span = Math.min(b.w * 0.7, 18 * (hops.length - 1));
      return hops.length === 1 ? b.cx : b.cx - span / 2 + (span * k) / (hops.length - 1);
    };
    for (const e of edges) {
      const pts = [];
      e.route.forEach((id, i) => {
        const b = box(id);
        if (items.get(id).lane) {
          pts.push({ x: b.cx, y: b.rowTop }, { x: b.cx, y: b.rowBottom });
        } else if (i === 0) {
          pts.push({ x: portX(id, "bottom", e), y: b.y + b.h });
        } else {
          pts.push({ x: portX(id, "top", e), y: b.y });
        }
      });
      if (e.back) pts.reverse();
      const first = pts[0];
      let d = `M ${first.x} ${first.y}`;
      for (let i = 1; i < pts.length; i++) {
        const a = pts[i - 1];
        const b = pts[i];
        if (a.x === b.x) d += ` L ${b.x} ${b.y}`;
        else {
          const my = (a.y + b.y) / 2;
          d += ` C ${a.x} ${my} ${b.x} ${my} ${b.x} ${b.y}`;
        }
      }
      const midIdx = Math.floor((pts.length - 1) / 2);
      const mid = { x: (pts[midIdx].x + pts[midIdx + 1].x) / 2, y: (pts[midIdx].y + pts[midIdx + 1].y) / 2 };
      this.addEdge(edgeLayer, `${e.u}->${e.v}`, d, e.label, mid, e.back);
    }

    // 10. arrows inside a group: neighbours side by side, others as arcs (forward above, back below)
    for (const [group, arrows] of Object.entries(this.d.inner)) {
      const members = this.d.groups[group];
      const pairs = new Set(arrows.map((a) => `${a.source}->${a.dest}`));
      for (const a of arrows) {
        const i = members.indexOf(a.source);
        const j = members.indexOf(a.dest);
        const sa = stateBox.get(a.source);
        const sb = stateBox.get(a.dest);
        const forward = i < j;
        let d;
        let mid;
        if (Math.abs(i - j) === 1) {
          const both = pairs.has(`${a.dest}->${a.source}`);
          const yy = sa.y + sa.h / 2 + (both ? (forward ? -6 : 6) : 0);
          const x1 = forward ? sa.x + sa.w : sa.x;
          const x2 = forward ? sb.x : sb.x + sb.w;
          d = `M ${x1} ${yy} L ${x2 + (forward ? -1 : 1)} ${yy}`;
          mid = { x: (x1 + x2) / 2, y: yy + (forward ? -8 : 14) };
        } else {
          const x1 = sa.x + sa.w / 2 + (forward ? 8 : -8);
          const x2 = sb.x + sb.w / 2 + (forward ? -8 : 8);
          const y0 = forward ? sa.y : sa.y + sa.h;
          const bend = forward ? y0 - ARC + 2 : y0 + ARC - 2;
          d = `M ${x1} ${y0} C ${x1} ${bend} ${x2} ${bend} ${x2} ${y0 + (forward ? -1 : 1)}`;
          mid = { x: (x1 + x2) / 2, y: forward ? bend - 2 : bend + 11 };
        }
        this.addEdge(edgeLayer, `${a.source}->${a.dest}`, d, a.label, mid, false);
      }
    }
  }

  marker(id, colour) {
    return svg("marker", { id: `${id}-${this.spec.initial}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M 0 1 L 9 5 L 0 9 z", fill: colour }),
    );
  }

  addEdge(layer, key, d, label, mid, back) {
    const path = svg("path", { d, class: back ? "edge back" : "edge", "marker-end": `url(#arrow-${this.spec.initial})` });
    const g = svg("g", { class: "edge-group", "data-edge": key }, svg("title", {}, label), path);
    layer.append(g);
    this.edges.set(key, { g, path, label, mid });
  }

  // --- the state at the cursor ---------------------------------------------------------------------------

  /**
   * Highlight `state` (current), `previous`, and the arrow of `transition` ({source, dest, trigger}; source
   * "" when a model joined its machine). Any may be null.
   */
  show({ state = null, previous = null, transition = null } = {}) {
    for (const [name, g] of this.states) {
      g.classList.toggle("current", name === state);
      g.classList.toggle("previous", name === previous && name !== state);
      if (name === state) g.setAttribute("data-current", "true");
      else g.removeAttribute("data-current");
      g.dataset.outcome = name === state && this.spec.states[name].terminal ? name : "";
    }
    const currentGroup = state ? this.groupOf[state] : null;
    for (const [name, g] of this.groups) g.classList.toggle("current", name === currentGroup);
    this.labelLayer.replaceChildren();
    let taken = null;
    if (transition) {
      const { source, dest } = transition;
      if (!source) taken = "->" + dest;
      else if (this.groupOf[source] && this.groupOf[source] === this.groupOf[dest]) taken = `${source}->${dest}`;
      else taken = `${this.node(source)}->${this.node(dest)}`;
    }
    for (const [key, edge] of this.edges) {
      const on = key === taken;
      edge.g.classList.toggle("taken", on);
      edge.path.setAttribute("marker-end", `url(#${on ? "arrow-taken" : "arrow"}-${this.spec.initial})`);
      if (on) {
        edge.g.parentNode.append(edge.g); // on top of the others
        const text = transition.trigger === "new" ? "new" : transition.trigger;
        const t = svg("text", { x: edge.mid.x, y: edge.mid.y, "text-anchor": "middle", class: "taken-label", "data-testid": "taken-label" }, text);
        this.labelLayer.append(t);
        const w = textWidth(text) + 8;
        this.labelLayer.insertBefore(svg("rect", { x: edge.mid.x - w / 2, y: edge.mid.y - 11, width: w, height: 15, rx: 3, class: "taken-bg" }), t);
      }
    }
  }
}
