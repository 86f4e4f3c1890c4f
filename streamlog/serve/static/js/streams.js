// The front page: every stream (length, append rate, newest item, pending per group — for
// the groups a consumer has used — dead letters) and every saved model, polled from
// GET streams and GET models.

import { getJSON } from "./api.js";
import { h, route, fmtInt, fmtRate, fmtAge } from "./dom.js";
import { REFRESH_MS, poll, appendRate, KeyedTable } from "./live.js";

function list(body, key) {
  return Array.isArray(body) ? body : (body && body[key]) || [];
}

/** Whether a consumer ever took a window of group `state` (an entry of info.groups): a group
 * nobody ever claimed from has no claim records, so its chain head is window 0 — e.g. the
 * `default` group of a stream only a sink writes to. Its "pending" is not a lag. */
export function groupUsed(state) {
  if (!state || typeof state !== "object") return true; // no details: assume it is
  return Boolean(state.windows || state.claimed || state.failed || state.dead);
}

function pendingPills(info) {
  const groups = info.groups || {};
  const pending = info.pending || {};
  const all = Object.keys(pending).length ? Object.keys(pending) : Object.keys(groups);
  if (!all.length) return h("span", { class: "muted" }, "no groups");
  const names = all.filter((g) => groupUsed(groups[g]));
  if (!names.length) return h("span", { class: "muted", title: `groups: ${all.join(", ")}` }, "no consumers yet");
  return names.map((g) => {
    const count = pending[g] ?? (groups[g] && groups[g].pending) ?? 0;
    return h("span", { class: count ? "pill busy" : "pill", dataset: { group: g } }, `${g} ${fmtInt(count)}`);
  });
}

function streamsTable() {
  return new KeyedTable({
    caption: null,
    testid: "streams-table",
    rowTestid: "stream-row",
    empty: "No streams yet. Append to one: curl -X POST …/streams/NAME/items -d '[{\"x\": 1}]'",
    columns: [
      { id: "name", title: "Stream", header: true, cell: (s) => h("a", { href: route("streams", s.name) }, s.name) },
      { id: "length", title: "Items", num: true, cell: (s) => fmtInt(s.length) },
      { id: "rate", title: "Items/s", num: true, cell: (s) => fmtRate(s._rate) },
      { id: "newest", title: "Newest", num: true, cell: (s) => fmtAge(s.last_time) },
      { id: "pending", title: "Pending per group", cell: pendingPills },
      { id: "dead", title: "Dead letters", num: true,
        cell: (s) => (s.dead_letters ? h("span", { class: "pill bad" }, fmtInt(s.dead_letters)) : "0") },
    ],
  });
}

function modelsTable() {
  return new KeyedTable({
    testid: "models-table",
    rowTestid: "model-row",
    empty: "No saved models yet. A learner consumer (streamlog.consumers) saves one after its first window.",
    columns: [
      { id: "name", title: "Model", header: true,
        cell: (m) => h("a", { href: route("models", m.stream, m.group, m.name) }, m.name) },
      { id: "stream", title: "Stream", cell: (m) => h("a", { href: route("streams", m.stream) }, m.stream) },
      { id: "group", title: "Group", cell: (m) => m.group },
      { id: "seq", title: "Window", num: true, cell: (m) => fmtInt(m.seq) },
      { id: "saved", title: "Saved", num: true, cell: (m) => fmtAge(m.saved) },
    ],
  });
}

const modelKey = (m) => `${m.stream}/${m.group}/${m.name}`;

export function streamsView(main, params, ctx) {
  const streams = streamsTable();
  const models = modelsTable();
  const total = h("span", { class: "hint", dataset: { testid: "streams-count" } });
  main.append(
    h("h1", {}, "Streams"),
    h("p", { class: "subtitle" }, "Every stream on this server, refreshed every ", String(REFRESH_MS / 1000), " s."),
    h("section", { class: "panel", "aria-labelledby": "streams-h" },
      h("div", { class: "panel-head" }, h("h2", { id: "streams-h" }, "Streams"), total),
      streams.table),
    h("section", { class: "panel", "aria-labelledby": "models-h" },
      h("div", { class: "panel-head" }, h("h2", { id: "models-h" }, "Models"),
        h("span", { class: "hint" }, "learners' newest checkpoints — open one to watch it learn")),
      models.table));
  return poll(async (signal) => {
    const [s, m] = await Promise.all([getJSON("streams", { signal }), getJSON("models", { signal })]);
    const now = Date.now();
    const rows = list(s, "streams").map((info) => ({ ...info, _rate: appendRate(info.name, info.last_offset, now) }));
    streams.update(rows, (info) => info.name);
    total.textContent = `${rows.length} stream${rows.length === 1 ? "" : "s"}`;
    models.update(list(m, "models"), modelKey);
  }, ctx);
}

export function modelsView(main, params, ctx) {
  const models = modelsTable();
  main.append(
    h("h1", {}, "Models"),
    h("p", { class: "subtitle" }, "The newest checkpoint of every learner, refreshed every ", String(REFRESH_MS / 1000), " s."),
    h("section", { class: "panel" }, models.table));
  return poll(async (signal) => models.update(list(await getJSON("models", { signal }), "models"), modelKey), ctx);
}
