// Building the page from data. Every string goes in as a text node or an attribute value,
// never as markup: nothing here (or anywhere in the dashboard) uses innerHTML, so an item
// holding "<script>" or "<img onerror=…>" is shown as those characters.

/**
 * Create an element: h("td", {class: "num", dataset: {testid: "length"}}, "12", child, …).
 * Attributes: class, dataset (→ data-*), text, any other attribute via setAttribute;
 * on* keys are event listeners (functions only: an inline handler string is refused). Children: nodes, strings (→ text nodes),
 * null/undefined/false (skipped) or arrays of those.
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`${key} must be a function`);
      node.addEventListener(key.slice(2), value);
    }
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace all children of `node` with `children`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** A hash link to a dashboard view, with each path segment URL-encoded. */
export function route(...segments) {
  return "#/" + segments.map((s) => encodeURIComponent(s)).join("/");
}

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function fmtInt(value) {
  return value === null || value === undefined ? "–" : integer.format(value);
}

/** A number with 4 significant digits, or "–". */
export function fmtNum(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (value !== 0 && (Math.abs(value) >= 1e6 || Math.abs(value) < 1e-3)) return value.toExponential(3);
  return Number(value.toPrecision(4)).toString();
}

export function fmtRate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? integer.format(value) : value.toFixed(1);
}

/** An ISO time (or epoch milliseconds) as "12 s ago" / "3 min ago" / a date. */
export function fmtAge(time, now = Date.now()) {
  if (time === null || time === undefined) return "–";
  const ms = typeof time === "number" ? time : Date.parse(time);
  if (Number.isNaN(ms)) return String(time);
  const s = Math.max(0, (now - ms) / 1000);
  if (s < 1) return "just now";
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}

/** An ISO time (or epoch milliseconds) as a local wall-clock time with milliseconds. */
export function fmtClock(time) {
  if (time === null || time === undefined) return "–";
  const ms = typeof time === "number" ? time : Date.parse(time);
  if (Number.isNaN(ms)) return String(time);
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
