// The dashboard's only way to the data: the server's JSON and SSE API, by relative URLs
// (so a proxy may serve everything under a path prefix). With a token, the HttpOnly
// cookie set by POST login authenticates fetch() and EventSource alike.

/** The API answered 401: the page shows the token form. */
export class Unauthorized extends Error {}

/** Any other error answer; `status` is the HTTP status (404: no such stream or model). */
export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GET a JSON document; throws Unauthorized on 401, an Error with the server's reason otherwise. */
export async function getJSON(path, { signal } = {}) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin", signal });
  if (response.status === 401) throw new Unauthorized("a token is needed");
  if (!response.ok) throw new HttpError(response.status, await reason(response));
  return response.json();
}

async function reason(response) {
  try {
    const body = await response.json();
    const detail = body.detail ?? body.error ?? body.message;
    if (typeof detail === "string") return detail;
    if (detail !== undefined) return JSON.stringify(detail);
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

/** POST the token to `login`; the server answers with an HttpOnly cookie. Resolves to true
 * when the token was accepted. */
export async function login(token) {
  const response = await fetch("login", {
    method: "POST",
    body: new URLSearchParams({ token }),
    credentials: "same-origin",
    redirect: "manual",
  });
  // A redirect (opaque here) after a form login counts as success as well.
  return response.ok || response.type === "opaqueredirect";
}

/**
 * Follow an SSE route: `onEvent(data, id)` for each message (data parsed as JSON);
 * `onEnd(reason)` when the server sends its final "end" event.
 * The browser reconnects by itself after a network error, sending Last-Event-ID so the
 * server resumes after the last event delivered. `onState("live" | "retrying" | "closed")`
 * reports the connection; "closed" means the browser gave up (the route answered an error,
 * e.g. 401 or 404) and `onClosed()` is called once. Returns a function that closes it.
 */
export function follow(path, { onEvent, onState = () => {}, onClosed = () => {}, onEnd = null }) {
  const source = new EventSource(path);
  let closed = false;
  const handler = (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (_) {
      return; // not ours (a keep-alive comment never reaches here; a malformed event is skipped)
    }
    onEvent(data, event.lastEventId);
  };
  source.addEventListener("message", handler);
  // "end": the server finished the stream for good (e.g. the stream was dropped): no reconnecting.
  source.addEventListener("end", (event) => {
    closed = true;
    source.close();
    onState("closed");
    let reason = "the server ended the stream";
    try {
      reason = JSON.parse(event.data).error || reason;
    } catch (_) { /* keep the default */ }
    if (onEnd) onEnd(reason);
  });
  source.onopen = () => onState("live");
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      if (!closed) {
        closed = true;
        onState("closed");
        onClosed();
      }
    } else {
      onState("retrying");
    }
  };
  return () => {
    closed = true;
    source.close();
  };
}

/** The path of a stream route, each name URL-encoded. */
export function streamPath(name, ...rest) {
  return ["streams", name, ...rest].map(encodeURIComponent).join("/");
}

/** The path of a model route. */
export function modelPath(stream, group, name, ...rest) {
  return ["streams", stream, "models", group, name, ...rest].map(encodeURIComponent).join("/");
}
