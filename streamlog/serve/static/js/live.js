// What the live views share: polling without overlap, the append rate, and tables whose
// rows are updated in place (keyed by name, so links keep keyboard focus across refreshes).

import { Unauthorized } from "./api.js";
import { h, fill } from "./dom.js";

export const REFRESH_MS = 1500;
const RATE_WINDOW_MS = 10000; // items/s is measured over the last ~10 s of samples

// name → [[time ms, last offset], …]: kept across views, so the rate is known on return.
const samples = new Map();

/** Items appended per second, from the growth of the last offset between refreshes (trimming
 * does not make it negative; a dropped and recreated stream restarts it). */
export function appendRate(name, lastOffset, now = Date.now()) {
  if (lastOffset === null || lastOffset === undefined) return lastOffset === null ? 0 : null;
  const list = samples.get(name) || [];
  if (list.length && lastOffset < list[list.length - 1][1]) list.length = 0; // recreated
  list.push([now, lastOffset]);
  while (list.length > 2 && now - list[1][0] >= RATE_WINDOW_MS) list.shift();
  samples.set(name, list);
  if (list.length < 2) return null;
  const [t0, o0] = list[0];
  return now > t0 ? ((lastOffset - o0) * 1000) / (now - t0) : null;
}

/** Poll `load` every REFRESH_MS (never overlapping) until the returned stop() is called.
 * A 404 stops the polling (no such stream or model) unless `onMissing(error)` is given:
 * then it is called and the polling goes on (e.g. a stream that does not exist yet). */
export function poll(load, ctx, { onMissing = null } = {}) {
  let timer = null;
  let stopped = false;
  const controller = new AbortController();
  const tick = async () => {
    try {
      await load(controller.signal);
      if (!stopped) ctx.status("live");
    } catch (error) {
      if (stopped || error.name === "AbortError") return;
      if (error instanceof Unauthorized) {
        ctx.unauthorized();
        return;
      }
      if (error.status === 404 && onMissing) {
        onMissing(error); // not there yet: look again
      } else if (error.status === 404) {
        ctx.fail(error); // no such stream or model: retrying will not help
        return;
      } else {
        ctx.status("error", "offline — retrying");
      }
      if (!stopped) timer = setTimeout(tick, REFRESH_MS);
      return;
    }
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  return () => {
    stopped = true;
    controller.abort();
    clearTimeout(timer);
  };
}

/** A table whose rows are kept in place by key. `columns`: [{title, num, cell(record) → content}]. */
export class KeyedTable {
  constructor({ caption, columns, empty, testid, rowTestid }) {
    this.columns = columns;
    this.rowTestid = rowTestid;
    this.rows = new Map();
    this.body = h("tbody");
    this.emptyRow = h("tr", {}, h("td", { class: "empty", colspan: columns.length }, empty));
    this.table = h("table", { dataset: { testid } },
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.title)))),
      this.body);
  }

  update(records, keyOf) {
    const seen = new Set();
    const ordered = [];
    for (const record of records) {
      const key = keyOf(record);
      seen.add(key);
      let row = this.rows.get(key);
      if (!row) {
        row = h("tr", { dataset: { testid: this.rowTestid, key } },
          this.columns.map((c) => h(c.header ? "th" : "td", {
            class: c.num ? "num" : null, scope: c.header ? "row" : null, dataset: { col: c.id } })));
        this.rows.set(key, row);
      }
      row.querySelectorAll(":scope > [data-col]").forEach((cell, i) => {
        const content = this.columns[i].cell(record);
        if (typeof content === "string" || typeof content === "number") {
          if (cell.childElementCount || cell.textContent !== String(content)) cell.textContent = String(content);
        } else {
          fill(cell, content);
        }
      });
      ordered.push(row);
    }
    for (const [key, row] of this.rows) if (!seen.has(key)) this.rows.delete(key);
    if (ordered.length === 0) this.body.replaceChildren(this.emptyRow);
    else if (ordered.some((row, i) => this.body.children[i] !== row) || this.body.children.length !== ordered.length) {
      this.body.replaceChildren(...ordered);
    }
  }
}

/** A number card: {node, value} (set value.textContent to update it). */
export function card(label, testid) {
  const value = h("div", { class: "value", dataset: { testid } }, "–");
  return { node: h("div", { class: "card" }, h("div", { class: "label" }, label), value), value };
}
