// One stream: its numbers and groups (polled from GET streams/NAME) and a live tail of its
// newest items, newest first, followed over SSE (GET streams/NAME/follow?start=…): one
// event per item, id = offset, so the browser's automatic reconnection resumes after the
// last item shown — nothing skipped, nothing twice. Items are shown as JSON text.
// A stream that does not exist (yet, or any more: dropped) is waited for: the page says so,
// keeps looking, and goes live when it appears (a recreated stream's tail starts over).

import { getJSON, follow, streamPath } from "./api.js";
import { h, fill, route, fmtInt, fmtRate, fmtAge, fmtClock } from "./dom.js";
import { poll, appendRate, KeyedTable, card } from "./live.js";
import { groupUsed } from "./streams.js";

export const TAIL_ROWS = 200; // rows kept in the live tail
const BACKLOG = 50; // items shown from before the page opened

function groupsTable() {
  const n = (key) => (g) => fmtInt(g[key]);
  return new KeyedTable({
    testid: "groups-table",
    rowTestid: "group-row",
    empty: "No consumer groups yet.",
    columns: [
      { id: "group", title: "Group", header: true,
        cell: (g) => (groupUsed(g) ? g.name : [g.name, " ", h("span", { class: "muted" }, "(no consumer yet)")]) },
      { id: "start", title: "Start", num: true, cell: n("start") },
      { id: "next", title: "Next offset", num: true, cell: n("next_offset") },
      { id: "pending", title: "Pending", num: true, cell: n("pending") },
      { id: "claimed", title: "Claimed", num: true, cell: n("claimed") },
      { id: "failed", title: "Failed", num: true, cell: n("failed") },
      { id: "dead", title: "Dead letters", num: true, cell: n("dead") },
      { id: "windows", title: "Windows", num: true, cell: n("windows") },
    ],
  });
}

/** Item records as the follow route sends them: {offset, timestamp, data}. */
function record(event, id) {
  return { offset: Number(event.offset ?? id), time: event.timestamp ?? null, data: event.data };
}

export function streamView(main, { name }, ctx) {
  const cards = {
    length: card("Items", "length"),
    offsets: card("Offsets", "offsets"),
    rate: card("Items/s", "rate"),
    newest: card("Newest item", "newest"),
    dead: card("Dead letters", "dead"),
  };
  const groups = groupsTable();
  const models = h("ul", { dataset: { testid: "stream-models" } });
  const tailBody = h("tbody");
  const counter = h("span", { class: "hint", dataset: { testid: "tail-count" } }, "waiting for items…");
  const missing = h("p", { class: "notice", role: "status", dataset: { testid: "stream-waiting" } },
    `Waiting for stream ${name}: it does not exist yet. It is created by its first append; this page goes live then.`);
  const pause = h("button", { type: "button", "aria-pressed": "false", dataset: { testid: "pause" } }, "Pause");
  main.append(
    h("h1", { dataset: { testid: "stream-name" } }, name),
    h("p", { class: "subtitle" }, h("a", { href: "#/" }, "← all streams")),
    h("div", { class: "cards" }, Object.values(cards).map((c) => c.node)),
    h("section", { class: "panel", "aria-labelledby": "groups-h" },
      h("div", { class: "panel-head" }, h("h2", { id: "groups-h" }, "Consumer groups")), groups.table,
      h("div", { class: "panel-head subhead" }, h("h2", {}, "Models")), models),
    h("section", { class: "panel tail", "aria-labelledby": "tail-h" },
      h("div", { class: "panel-head" }, h("h2", { id: "tail-h" }, "Live tail"), counter,
        h("div", { class: "actions" }, pause)),
      h("table", { dataset: { testid: "tail" } },
        h("caption", {}, `Newest first; the last ${TAIL_ROWS} items are kept.`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Offset"), h("th", { scope: "col" }, "Time"),
          h("th", { scope: "col" }, "Item (JSON)"))),
        tailBody)));

  let last = null; // newest offset shown
  let next = null; // where following (re)starts: after the newest item shown; null: not following yet
  let created = null; // the stream's creation time: another one means it was dropped and made again
  let shown = 0;
  let closeFollow = null;
  let paused = false;
  let stopped = false;
  let retry = null;

  const add = (data, id) => {
    const item = record(data, id);
    if (last !== null && item.offset <= last) return; // already shown (never expected: the server resumes)
    last = item.offset;
    next = item.offset + 1;
    shown += 1;
    const row = h("tr", { class: "new", dataset: { testid: "tail-row", offset: item.offset } },
      h("td", { class: "offset" }, String(item.offset)),
      h("td", { class: "time" }, fmtClock(item.time)),
      h("td", {}, h("pre", {}, JSON.stringify(item.data, null, 1).replace(/\n\s*/g, " "))));
    tailBody.prepend(row);
    while (tailBody.childElementCount > TAIL_ROWS) tailBody.lastElementChild.remove();
    counter.textContent = `${fmtInt(shown)} item${shown === 1 ? "" : "s"} received, newest offset ${item.offset}`;
  };

  const start = () => {
    closeFollow = follow(`${streamPath(name, "follow")}?start=${next}`, {
      onEvent: add,
      onState: (state) => ctx.status(state === "closed" ? "error" : state),
      // The server refused the stream (the browser does not retry that by itself): say why
      // (401…); when the stream is there, follow again shortly; when it is gone (404), the
      // polling waits for it and follows it again once it is back.
      onClosed: () => getJSON(streamPath(name)).then(() => {
        if (!stopped && !paused) retry = setTimeout(start, 1500);
      }, (error) => (error.status === 404 ? lost() : ctx.fail(error))),
      onEnd: lost, // the stream was dropped
    });
  };

  // Not following any more (the stream went away): the next answer of the polling follows again.
  const lost = () => {
    if (closeFollow) closeFollow();
    closeFollow = null;
    clearTimeout(retry);
    following = false;
  };
  let following = false;

  const waitForStream = () => {
    if (!missing.isConnected) main.querySelector("h1").after(missing);
    ctx.status("live", "waiting for the stream");
    lost();
  };

  // Follow the stream once it exists: from the newest BACKLOG items on at first, after the
  // newest item shown later on; a stream created again starts over.
  const follows = (info) => {
    missing.remove();
    if (created !== null && info.created !== created) { // dropped and created again
      tailBody.replaceChildren();
      last = null;
      next = null;
      shown = 0;
      counter.textContent = "waiting for items…";
      lost();
    }
    created = info.created;
    if (following) return;
    if (next === null) next = Math.max(info.first_offset ?? 0, (info.last_offset ?? -1) - BACKLOG + 1, 0);
    following = true;
    if (!paused) start();
  };

  const stopPolling = poll(async (signal) => {
    const info = await getJSON(streamPath(name), { signal });
    cards.length.value.textContent = fmtInt(info.length);
    cards.offsets.value.textContent = info.first_offset === null || info.first_offset === undefined
      ? "–" : `${fmtInt(info.first_offset)} – ${fmtInt(info.last_offset)}`;
    cards.rate.value.textContent = fmtRate(appendRate(name, info.last_offset));
    cards.newest.value.textContent = fmtAge(info.last_time);
    cards.dead.value.textContent = fmtInt(info.dead_letters);
    groups.update(Object.entries(info.groups || {}).map(([g, s]) => ({ name: g, ...s })), (g) => g.name);
    const saved = info.models || [];
    const signature = JSON.stringify(saved.map((m) => [m.group, m.name, m.seq]));
    if (models.dataset.signature !== signature) { // rebuilt only on change: links keep focus
      models.dataset.signature = signature;
      fill(models, saved.length ? saved.map((m) => h("li", {},
        h("a", { href: route("models", name, m.group, m.name) }, m.name), ` — group ${m.group}, window ${m.seq}`))
        : h("li", { class: "muted" }, "none saved"));
    }
    follows(info);
  }, ctx, { onMissing: waitForStream });

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    clearTimeout(retry);
    if (closeFollow) closeFollow();
    closeFollow = null;
    if (!paused && following) start(); // on from the item after the newest one shown
  });

  return () => {
    stopped = true;
    clearTimeout(retry);
    stopPolling();
    if (closeFollow) closeFollow();
  };
}
