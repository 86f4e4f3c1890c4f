// Live line charts over window number, drawn with the vendored uPlot (static/vendor/uplot).
//
// A LiveChart holds one x value per window and one series per named quantity; put(x, values)
// adds a window (or replaces it: a checkpoint rewritten after a late window has the same
// number). Series may appear later (a k-means model's centres appear once it has them):
// the chart is rebuilt then. The container's data-points attribute is the number of windows
// plotted (data-first, data-last: their numbers; data-ticks: the x axis' ticks), so tests and people can tell a chart has
// moved. The x axis ticks whole window numbers only.

import { fmtNum } from "./dom.js";

const PALETTE = ["#2458d3", "#e8590c", "#2f9e44", "#c2255c", "#7048e8", "#0c8599", "#f08c00", "#5c940d",
  "#862e9c", "#d6336c", "#1971c2", "#495057"];
const DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3]];
const MAX_POINTS = 5000; // windows kept per chart; the oldest go first
// x-axis tick steps: whole windows only (1, 2, 5, 10, 20, 50 … 5·10^8)
const WINDOW_INCRS = Array.from({ length: 27 }, (_, i) => [1, 2, 5][i % 3] * 10 ** Math.floor(i / 3));

export function color(i) {
  return PALETTE[i % PALETTE.length];
}

export class LiveChart {
  /**
   * @param {HTMLElement} container  the element the chart fills (gets data-points)
   * @param {object} options  {yLabel, style(name, index) → {stroke, dash}}
   */
  constructor(container, { yLabel = "", style } = {}) {
    this.container = container;
    this.yLabel = yLabel;
    this.style = style || ((name, i) => ({ stroke: color(i) }));
    this.names = [];
    this.xs = [];
    this.columns = new Map(); // name → values, aligned with xs
    this.plot = null;
    this.expose();
    this.resize = new ResizeObserver(() => this.plot && this.plot.setSize(this.size()));
    this.resize.observe(this.container);
  }

  /** Add (or replace) the values of window `x`; `values` maps series name → number|null. */
  put(x, values) {
    this.draw(this.add(x, values));
  }

  /** Add many windows at once ([[x, values], …], e.g. the model's history), drawn once. */
  putMany(points) {
    let rebuild = false;
    for (const [x, values] of points) rebuild = this.add(x, values) || rebuild;
    if (points.length) this.draw(rebuild);
  }

  /** Store window `x`'s values; true when a new series appeared (the plot is rebuilt then). */
  add(x, values) {
    let rebuild = false;
    for (const name of Object.keys(values)) {
      if (!this.columns.has(name)) {
        this.columns.set(name, new Array(this.xs.length).fill(null));
        this.names.push(name);
        rebuild = true;
      }
    }
    let at = this.xs.length;
    while (at > 0 && this.xs[at - 1] > x) at--; // windows normally arrive in order
    const replace = at > 0 && this.xs[at - 1] === x;
    if (replace) at--;
    else this.xs.splice(at, 0, x);
    for (const [name, column] of this.columns) {
      const value = values[name];
      const number = typeof value === "number" && Number.isFinite(value) ? value : null;
      if (replace) column[at] = number;
      else column.splice(at, 0, number);
    }
    if (this.xs.length > MAX_POINTS) {
      this.xs.shift();
      for (const column of this.columns.values()) column.shift();
    }
    this.expose();
    return rebuild;
  }

  /** What is plotted, on data- attributes (for people and tests; the CSP is untouched):
   * data-points (windows), data-first and data-last (their numbers). */
  expose() {
    const { dataset } = this.container;
    dataset.points = String(this.xs.length);
    dataset.first = this.xs.length ? String(this.xs[0]) : "";
    dataset.last = this.xs.length ? String(this.xs[this.xs.length - 1]) : "";
  }

  size() {
    return { width: Math.max(280, this.container.clientWidth), height: 260 };
  }

  data() {
    return [this.xs, ...this.names.map((n) => this.columns.get(n))];
  }

  draw(rebuild) {
    if (typeof uPlot === "undefined") return; // the library failed to load: tables still work
    if (this.plot && !rebuild) {
      this.plot.setData(this.data());
      if (this.plot.cursor.left < 0) this.plot.setLegend({ idx: null }); // not hovered: show the newest
      return;
    }
    if (this.plot) this.plot.destroy();
    const few = this.xs.length < 80;
    // The legend shows the values under the cursor, and the newest ones when not hovered.
    const value = (u, v, sidx, idx) => fmtNum(idx === null || idx === undefined ? newest(u.data[sidx]) : v);
    const series = [{ label: "window", value }, ...this.names.map((name, i) => {
      const { stroke, dash } = this.style(name, i);
      return { label: name, stroke, dash, width: 2, spanGaps: true, points: { show: few, size: 5 }, value };
    })];
    this.plot = new uPlot({
      ...this.size(),
      // windows are whole numbers: integer ticks only, and a lone window gets room around it
      scales: { x: { time: false, range: (u, min, max) => (min === max ? [min - 1, max + 1] : [min, max]) } },
      axes: [
        { label: "window", stroke: "#5d6677", grid: { stroke: "#eceef2" }, ticks: { stroke: "#e1e4ea" },
          incrs: WINDOW_INCRS, values: (u, splits) => this.ticks(splits) },
        { label: this.yLabel, stroke: "#5d6677", grid: { stroke: "#eceef2" }, ticks: { stroke: "#e1e4ea" }, size: 60 },
      ],
      series,
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    }, this.data(), this.container);
  }

  /** The x axis' tick labels (window numbers); the ticks drawn are on data-ticks too. */
  ticks(splits) {
    this.container.dataset.ticks = splits.join(" ");
    return splits.map((v) => (Number.isInteger(v) ? String(v) : ""));
  }

  destroy() {
    this.resize.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

function newest(column) {
  for (let i = column.length - 1; i >= 0; i--) if (column[i] !== null && column[i] !== undefined) return column[i];
  return null;
}

/** A series style that gives each group (e.g. a k-means centre) a colour and each member
 * (a feature) a dash pattern: "c0 x", "c0 y", "c1 x" … */
export function groupedStyle(groupOf, memberOf) {
  const groups = new Map();
  const members = new Map();
  return (name) => {
    const g = groupOf(name);
    const m = memberOf(name);
    if (!groups.has(g)) groups.set(g, groups.size);
    if (!members.has(m)) members.set(m, members.size);
    return { stroke: color(groups.get(g)), dash: DASHES[members.get(m) % DASHES.length] };
  };
}
