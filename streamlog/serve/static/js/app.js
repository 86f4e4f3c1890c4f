// The dashboard's entry point: hash routes → views, the connection status, the token form.
//
//   #/                           streams table + models list (live)
//   #/models                     the models list alone
//   #/streams/NAME               one stream: groups, models, live tail
//   #/models/STREAM/GROUP/NAME   one model: live charts of its coefficients / centres / error
//
// A view is a function (main, params, ctx) → unmount. ctx.status(state, text) reports the
// connection; ctx.unauthorized() swaps the view for the token form.

import { Unauthorized, login } from "./api.js";
import { h, fill } from "./dom.js";
import { streamsView, modelsView } from "./streams.js";
import { streamView } from "./stream.js";
import { modelView } from "./model.js";

const main = document.getElementById("view");
const statusNode = document.getElementById("status");
let unmount = null;

function status(state, text) {
  statusNode.dataset.state = state;
  statusNode.textContent = text ?? { live: "live", retrying: "reconnecting…", error: "offline" }[state] ?? state;
}

function parse(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { view: streamsView, params: {}, nav: "streams" };
  if (parts[0] === "models" && parts.length === 1) return { view: modelsView, params: {}, nav: "models" };
  if (parts[0] === "streams" && parts.length === 2) return { view: streamView, params: { name: parts[1] }, nav: "streams" };
  if (parts[0] === "models" && parts.length === 4) {
    return { view: modelView, params: { stream: parts[1], group: parts[2], name: parts[3] }, nav: "models" };
  }
  return null;
}

function show() {
  if (unmount) unmount();
  unmount = null;
  let target;
  try {
    target = parse(location.hash);
  } catch (_) {
    target = null; // a malformed %-escape
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (target && link.dataset.nav === target.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!target) {
    fill(main, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/" }, "Back to the streams.")));
    return;
  }
  main.replaceChildren();
  unmount = target.view(main, target.params, { status, unauthorized, fail }) || null;
}

/** Show an error that stops the view (unknown stream, server down…). */
function fail(error) {
  if (error instanceof Unauthorized) return unauthorized();
  status("error", "offline");
  const text = error && error.message ? error.message : String(error);
  main.querySelectorAll('[data-testid="error"]').forEach((node) => node.remove()); // one at a time
  main.prepend(h("p", { class: "notice bad", role: "alert", dataset: { testid: "error" } }, text));
}

/** The API needs a token: replace the view with the form; after login, show the route again. */
function unauthorized() {
  if (unmount) unmount();
  unmount = null;
  status("error", "token needed");
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password",
    required: true, dataset: { testid: "token" } });
  const error = h("p", { class: "error", role: "alert", dataset: { testid: "login-error" } });
  const form = h("form", { class: "panel login", dataset: { testid: "login" } },
    h("h1", {}, "Sign in"),
    h("p", { class: "subtitle" }, "This server needs its access token (streamlog serve --token). "
      + "It is kept in an HttpOnly cookie for this browser session."),
    h("label", { for: "token" }, "Access token"),
    input,
    error,
    h("button", { class: "primary", type: "submit" }, "Open the dashboard"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      if (await login(input.value)) show();
      else error.textContent = "That token was not accepted.";
    } catch (e) {
      error.textContent = `Could not reach the server: ${e.message}`;
    }
  });
  fill(main, form);
  input.focus();
}

window.addEventListener("hashchange", () => {
  show();
  main.focus({ preventScroll: true });
});
show();
