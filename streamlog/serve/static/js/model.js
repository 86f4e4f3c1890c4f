// One model: its newest checkpoint's summary, charted live against window number as
// windows are committed — coefficients and prequential error (regression), centres, counts
// and inertia (k-means), whatever a PartialFit estimator exposes (coefficients, centres,
// error or accuracy). The charts start from the model's history (GET …/history: the
// metrics saved with each checkpoint, the last 1,000 windows), so a page opened late shows
// the whole curve; then the model follow route (SSE: one event per newer checkpoint) adds
// each new window. The history is read once the follow stream has sent its first event
// (and again after each reconnection), so no window between the two is missed.

import { getJSON, follow, modelPath, HttpError, Unauthorized } from "./api.js";
import { h, fill, route, fmtInt, fmtNum, fmtAge } from "./dom.js";
import { LiveChart, groupedStyle } from "./charts.js";
import { card } from "./live.js";

const POLL_MS = 1500; // between attempts to reconnect
const WAIT_MS = 500; // between looks for the first checkpoint (one cheap read each)
const MAX_SERIES = 24; // per chart: more lines than this are unreadable

// The panels, in page order: what each charts, from which summary keys.
const PANELS = [
  { id: "coef", title: "Coefficients", yLabel: "coefficient",
    hint: "one line per feature (and the intercept), after each window" },
  { id: "error", title: "Prequential error", yLabel: "error",
    hint: "each window scored before it is learned" },
  { id: "accuracy", title: "Prequential accuracy", yLabel: "accuracy",
    hint: "each window scored before it is learned" },
  { id: "centres", title: "Centres", yLabel: "coordinate",
    hint: "colour: centre; dash: feature", grouped: true },
  { id: "counts", title: "Counts", yLabel: "items (weighted)", hint: "items assigned to each centre" },
  { id: "inertia", title: "Prequential inertia", yLabel: "mean squared distance",
    hint: "new items' mean squared distance to the nearest centre" },
];

const LABELS = {
  rmse: ["error", "RMSE (all)"], window_rmse: ["error", "RMSE (window)"], mae: ["error", "MAE (all)"],
  accuracy: ["accuracy", "accuracy (all)"], window_accuracy: ["accuracy", "accuracy (window)"],
  inertia: ["inertia", "inertia (all)"], window_inertia: ["inertia", "inertia (window)"],
};

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);

/** A summary (learner.summary() plus n_seen, seq…) as {panel id → {series name → number}}. */
export function quantities(summary) {
  const out = Object.fromEntries(PANELS.map((p) => [p.id, {}]));
  const coef = summary.coef;
  if (Array.isArray(coef)) {
    coef.forEach((row, i) => {
      if (isNumber(row)) out.coef[`coef[${i}]`] = row;
      else if (row && typeof row === "object") {
        for (const [f, v] of Object.entries(row)) if (isNumber(v)) out.coef[`class ${i}: ${f}`] = v;
      }
    });
  } else if (coef && typeof coef === "object") {
    for (const [f, v] of Object.entries(coef)) if (isNumber(v)) out.coef[f] = v;
  }
  if (isNumber(summary.intercept)) out.coef.intercept = summary.intercept;
  else if (Array.isArray(summary.intercept)) {
    summary.intercept.forEach((v, i) => { if (isNumber(v)) out.coef[`intercept[${i}]`] = v; });
  }
  if (Array.isArray(summary.centers)) {
    summary.centers.forEach((centre, i) => {
      if (centre && typeof centre === "object") {
        for (const [f, v] of Object.entries(centre)) if (isNumber(v)) out.centres[`c${i} ${f}`] = v;
      }
    });
  }
  if (Array.isArray(summary.counts)) summary.counts.forEach((v, i) => { if (isNumber(v)) out.counts[`c${i}`] = v; });
  for (const [key, [panel, label]] of Object.entries(LABELS)) {
    if (isNumber(summary[key])) out[panel][label] = summary[key];
  }
  return out;
}

/** The model route's answer → {seq, n_seen, saved, kind, summary}. */
function normalise(body) {
  const summary = body.summary && typeof body.summary === "object" ? body.summary : body;
  return {
    seq: body.seq ?? summary.seq,
    n_seen: body.n_seen ?? summary.n_seen,
    saved: body.saved ?? body.time ?? null,
    kind: body.kind ?? summary.kind ?? summary.estimator ?? null,
    summary,
  };
}

export function modelView(main, { stream, group, name }, ctx) {
  const kind = h("span", { dataset: { testid: "model-kind" } });
  const cards = {
    seq: card("Window", "model-seq"),
    n_seen: card("Items learned", "model-n-seen"),
    saved: card("Checkpoint saved", "model-saved"),
    error: card("Error (all)", "model-error"),  // relabelled: RMSE, accuracy or inertia
  };
  const panelsNode = h("div", { class: "grid-2", dataset: { testid: "charts" } });
  const current = h("div", { dataset: { testid: "model-current" } });
  const waiting = h("p", { class: "notice", dataset: { testid: "model-waiting" } },
    "Waiting for the first checkpoint: a learner saves one after each window it learns.");
  main.append(
    h("h1", { dataset: { testid: "model-name" } }, name),
    h("p", { class: "subtitle" }, kind, " on stream ", h("a", { href: route("streams", stream) }, stream),
      ", group ", h("code", {}, group), " · ", h("a", { href: "#/models" }, "all models")),
    h("div", { class: "cards" }, Object.values(cards).map((c) => c.node)),
    waiting,
    panelsNode,
    h("section", { class: "panel", "aria-labelledby": "current-h" },
      h("div", { class: "panel-head" }, h("h2", { id: "current-h" }, "Newest checkpoint")), current));

  const charts = new Map(); // panel id → LiveChart
  let newest = null;
  let savedAt = null;

  const chartFor = (panel, names) => {
    let chart = charts.get(panel.id);
    if (chart) return chart;
    const box = h("div", { class: "chart", dataset: { testid: `chart-${panel.id}`, chart: panel.id } });
    const section = h("section", { class: "panel", "aria-label": panel.title },
      h("div", { class: "panel-head" }, h("h2", {}, panel.title), h("span", { class: "hint" }, panel.hint)), box);
    // keep the page order of PANELS whatever order the panels appear in
    const after = PANELS.slice(PANELS.indexOf(panel) + 1).map((p) => charts.get(p.id)).find(Boolean);
    panelsNode.insertBefore(section, after ? after.container.closest("section") : null);
    // colour per centre (or class), dash per feature: "c0 x", "class 1: x", "intercept[1]"
    const perClass = panel.id === "coef" && names.some((n) => n.startsWith("class "));
    let style;
    if (panel.grouped) style = groupedStyle((n) => n.split(" ")[0], (n) => n.split(" ").slice(1).join(" "));
    else if (perClass) {
      style = groupedStyle((n) => (n.match(/^class (\d+):|^intercept\[(\d+)\]/) || []).slice(1).join(""),
        (n) => (n.startsWith("intercept") ? "intercept" : n.split(": ").slice(1).join(": ")));
    }
    chart = new LiveChart(box, { yLabel: panel.yLabel, style });
    charts.set(panel.id, chart);
    return chart;
  };

  const show = (body) => {
    const model = normalise(body);
    if (!isNumber(model.seq)) return;
    if (newest !== null && model.seq < newest) {
      // an older window number: a stale event, or the model started over (its stream was
      // dropped and recreated, as scripts/demo.py does): then the charts start over too
      if (!(Date.parse(model.saved) > Date.parse(savedAt))) return;
      for (const chart of charts.values()) {
        chart.container.closest("section").remove();
        chart.destroy();
      }
      charts.clear();
    }
    newest = model.seq;
    waiting.remove();
    const estimator = typeof model.summary.estimator === "string" ? ` (${model.summary.estimator})` : "";
    kind.textContent = (!model.kind || model.kind === name ? "Learner" : model.kind) + estimator;
    cards.seq.value.textContent = fmtInt(model.seq);
    cards.n_seen.value.textContent = fmtInt(model.n_seen);
    savedAt = model.saved;
    cards.saved.value.textContent = fmtAge(savedAt);
    const values = quantities(model.summary);
    const [label, error] = [["RMSE (all)", values.error["RMSE (all)"]],
      ["Accuracy (all)", values.accuracy["accuracy (all)"]],
      ["Inertia (all)", values.inertia["inertia (all)"]]].find(([, v]) => v !== undefined) || ["Error (all)", null];
    cards.error.node.firstChild.textContent = label;
    cards.error.value.textContent = fmtNum(error);
    for (const panel of PANELS) {
      const series = Object.entries(values[panel.id]).slice(0, MAX_SERIES);
      if (series.length) chartFor(panel, series.map(([n]) => n)).put(model.seq, Object.fromEntries(series));
    }
    main.dataset.seq = String(model.seq);
    fill(current, currentTable(model.summary));
  };

  // Points of the history (oldest first) into the charts, one draw per chart.
  const applyHistory = (points) => {
    const perPanel = new Map(); // panel id → [[seq, values], …]
    for (const point of points) {
      if (!point || typeof point !== "object" || !isNumber(point.seq)) continue;
      const values = quantities(point);
      for (const panel of PANELS) {
        const series = Object.entries(values[panel.id]).slice(0, MAX_SERIES);
        if (!series.length) continue;
        if (!perPanel.has(panel.id)) perPanel.set(panel.id, []);
        perPanel.get(panel.id).push([point.seq, Object.fromEntries(series)]);
      }
    }
    for (const panel of PANELS) {
      const list = perPanel.get(panel.id);
      if (!list) continue;
      const names = [...new Set(list.flatMap(([, values]) => Object.keys(values)))];
      chartFor(panel, names).putMany(list);
    }
    main.dataset.history = String(points.length);
  };
  const loadHistory = () => getJSON(`${path}/history`).then((body) => {
    if (!stopped && body && Array.isArray(body.points)) applyHistory(body.points);
  }, (error) => {
    if (!stopped && error instanceof Unauthorized) ctx.unauthorized();
    // otherwise the live points still come: the history is a bonus
  });

  const ticker = setInterval(() => { if (savedAt) cards.saved.value.textContent = fmtAge(savedAt); }, 1000);
  const path = modelPath(stream, group, name);
  let closeFollow = null;
  let timer = null;
  let stopped = false;

  // GET the model, then follow it over SSE. No checkpoint yet (404): look again after
  // WAIT_MS (the follow route, too, answers 404 until the first checkpoint exists). The
  // follow stream refused or ended: start over after POLL_MS.
  const connect = async () => {
    try {
      show(await getJSON(path));
    } catch (error) {
      if (stopped) return;
      if (error instanceof Unauthorized) return ctx.unauthorized();
      const waiting = error instanceof HttpError && error.status === 404;
      if (waiting) ctx.status("live", "waiting for a checkpoint");
      else ctx.status("error", "offline — retrying");
      timer = setTimeout(connect, waiting ? WAIT_MS : POLL_MS);
      return;
    }
    if (stopped) return;
    ctx.status("live");
    const again = () => {
      if (closeFollow) closeFollow();
      closeFollow = null;
      if (!stopped) timer = setTimeout(connect, POLL_MS);
    };
    let needHistory = true; // per connection: fills whatever was missed while away
    let retried = false;
    closeFollow = follow(`${path}/follow`, {
      onEvent: (data) => {
        show(data);
        if (needHistory) {
          needHistory = false;
          loadHistory();
        }
      },
      onState: (state) => {
        if (state === "live" && retried) loadHistory(); // the browser reconnected by itself
        retried = state === "retrying";
        if (state !== "closed") ctx.status(state);
      },
      onClosed: again,
      onEnd: again,
    });
  };
  connect();

  return () => {
    stopped = true;
    clearInterval(ticker);
    clearTimeout(timer);
    if (closeFollow) closeFollow();
    for (const chart of charts.values()) chart.destroy();
  };
}

/** The newest summary as tables: coefficients (feature → value), centres (one row per centre
 * with its count), and any other scalar field. */
function currentTable(summary) {
  const parts = [];
  const scalars = [];
  const coefRows = [];
  const coef = summary.coef;
  if (coef && typeof coef === "object" && !Array.isArray(coef)) {
    for (const [f, v] of Object.entries(coef)) coefRows.push([f, v]);
  } else if (Array.isArray(coef)) {
    coef.forEach((row, i) => {
      if (row && typeof row === "object") for (const [f, v] of Object.entries(row)) coefRows.push([`class ${i}: ${f}`, v]);
      else coefRows.push([`coef[${i}]`, row]);
    });
  }
  if (summary.intercept !== undefined && summary.intercept !== null) coefRows.push(["intercept", summary.intercept]);
  if (coefRows.length) {
    parts.push(h("table", { dataset: { testid: "coef-table" } },
      h("caption", {}, "Coefficients"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Term"), h("th", { scope: "col", class: "num" }, "Value"))),
      h("tbody", {}, coefRows.map(([term, v]) => h("tr", {}, h("th", { scope: "row" }, term),
        h("td", { class: "num" }, Array.isArray(v) ? v.map(fmtNum).join(", ") : fmtNum(v)))))));
  }
  if (Array.isArray(summary.centers) && summary.centers.length) {
    const features = Object.keys(summary.centers[0] || {});
    const counts = Array.isArray(summary.counts) ? summary.counts : [];
    parts.push(h("table", { dataset: { testid: "centres-table" } },
      h("caption", {}, "Centres"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Centre"), h("th", { scope: "col", class: "num" }, "Count"),
        features.map((f) => h("th", { scope: "col", class: "num" }, f)))),
      h("tbody", {}, summary.centers.map((c, i) => h("tr", {}, h("th", { scope: "row" }, `c${i}`),
        h("td", { class: "num" }, fmtNum(counts[i])), features.map((f) => h("td", { class: "num" }, fmtNum(c[f]))))))));
  }
  for (const [key, value] of Object.entries(summary)) {
    if (["coef", "intercept", "centers", "counts"].includes(key)) continue;
    if (value === null || typeof value !== "object") scalars.push([key, value]);
  }
  if (scalars.length) {
    parts.push(h("table", { dataset: { testid: "summary-table" } },
      h("caption", {}, "Summary"),
      h("tbody", {}, scalars.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k),
        h("td", { class: "num" }, typeof v === "number" ? fmtNum(v) : v === null ? "–" : String(v)))))));
  }
  return parts.length ? h("div", { class: "grid-2" }, parts) : h("p", { class: "muted" }, "No summary.");
}
