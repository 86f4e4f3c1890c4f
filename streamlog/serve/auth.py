"""The token: with ``--token`` every request needs ``Authorization: Bearer <token>`` or the
session cookie that ``POST /login`` sets — except ``/healthz`` (probes), ``/login`` and the
dashboard's page and static files (they hold no data: the page asks the API, gets 401 and
shows the token form).

* Comparisons are constant-time (:func:`hmac.compare_digest`).
* The cookie ``streamlog_session`` holds a random session id (256 bits), not the token;
  the server keeps its sessions in memory (:class:`Sessions`): ``POST /logout`` revokes
  the session it is sent with, every session ends :data:`SESSION_LIFETIME` seconds after
  its login (checked by the server, not only the browser), and a restarted server has
  none (everyone logs in again). The cookie is ``HttpOnly`` (no script can read it) and
  ``SameSite=Strict`` (no other site's page can send it). Browsers' ``EventSource``
  cannot send headers: with the cookie, live follow works in the dashboard.
* Without a token nothing is checked (the server then binds loopback only, unless
  ``--insecure``: see :mod:`streamlog.serve.server`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..errors import StreamlogError
from .responses import dumps

COOKIE = "streamlog_session"
OPEN_PATHS = frozenset({"/healthz", "/login", "/logout", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)
MAX_LOGIN_BODY = 4096
SESSION_LIFETIME = 12 * 3600.0  # seconds a login lasts, whatever the browser does
MAX_SESSIONS = 10_000  # live sessions per server; a login past it ends the oldest

router = APIRouter(tags=["security"])


def check_token(token: str | None) -> str | None:
    """A token as given (None: none), or :class:`StreamlogError` for an unusable one."""
    if token is None:
        return None
    if not isinstance(token, str) or not token.strip() or token != token.strip() or any(
            ord(ch) < 0x21 or ord(ch) > 0x7E for ch in token):
        raise StreamlogError("the token must be printable ASCII without spaces (e.g. from `openssl rand -hex 32`)")
    return token


class Sessions:
    """The live login sessions of one server: session id (by its SHA-256) → expiry.

    A cookie is good while its session is here and unexpired: ``POST /logout`` removes
    it (revocation), expiry is :data:`SESSION_LIFETIME` after the login (monotonic clock),
    and a restart forgets them all — it fails closed. Sessions are per server process:
    behind a load balancer over several servers, use sticky sessions or the Bearer token.
    """

    def __init__(self, lifetime: float = SESSION_LIFETIME, clock=time.monotonic):
        self.lifetime = lifetime
        self.clock = clock
        self._expiry: dict[bytes, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(session: bytes) -> bytes:
        # looked up by a hash: the dict's timing tells nothing about a valid id
        return hashlib.sha256(session).digest()

    def create(self) -> str:
        session = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            for key in [k for k, until in self._expiry.items() if until <= now]:
                del self._expiry[key]
            while len(self._expiry) >= MAX_SESSIONS:  # the oldest first (insertion order)
                del self._expiry[next(iter(self._expiry))]
            self._expiry[self._key(session.encode())] = now + self.lifetime
        return session

    def valid(self, session: bytes) -> bool:
        until = self._expiry.get(self._key(session))
        return until is not None and self.clock() < until

    def revoke(self, session: bytes) -> None:
        with self._lock:
            self._expiry.pop(self._key(session), None)

    def __len__(self) -> int:
        return len(self._expiry)


def cookie_sessions(headers) -> list[bytes]:
    """The values of every ``streamlog_session`` cookie among raw ASGI ``headers``."""
    found = []
    for name, value in headers:
        if name == b"cookie":
            for part in value.split(b";"):
                key, _, given = part.strip().partition(b"=")
                if key == COOKIE.encode() and given:
                    found.append(given)
    return found


class TokenGate:
    """Pure ASGI middleware (no per-request task or body buffering, SSE streams untouched)."""

    def __init__(self, app, token: str, sessions: Sessions):
        self.app = app
        self.bearer = f"Bearer {token}".encode()
        self.sessions = sessions

    def allowed(self, headers) -> bool:
        ok = False
        for name, value in headers:
            if name == b"authorization":
                ok |= hmac.compare_digest(value, self.bearer)
        return ok or any(self.sessions.valid(given) for given in cookie_sessions(headers))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or self.allowed(scope.get("headers", ())):
            return await self.app(scope, receive, send)
        body = dumps({"error": "this server needs a token: send 'Authorization: Bearer <token>' "
                               "(or log in at /login)"})
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="streamlog"'), (b"x-content-type-options", b"nosniff")]})
        await send({"type": "http.response.body", "body": body})


_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streamlog: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 28rem; margin: 4rem auto">
<h1>streamlog</h1>
{message}
<form method="post" action="/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form>
</body></html>
"""


@router.get("/login", summary="The token form", response_class=HTMLResponse)
async def login_form() -> HTMLResponse:
    return HTMLResponse(_FORM.format(message=""))


@router.post("/login", summary="Log in with the token (sets the session cookie)")
async def login(request: Request) -> Response:
    """Form field ``token``. Right: 303 to ``/`` with the ``HttpOnly`` session cookie.
    Wrong: 401 with the form again."""
    svc = request.app.state.service
    token = svc.token
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            break
    given = (parse_qs(body[:MAX_LOGIN_BODY].decode("utf-8", "replace")).get("token") or [""])[0]
    if token is not None and not hmac.compare_digest(given.encode(), token.encode()):
        return HTMLResponse(_FORM.format(message='<p role="alert">That token is not right.</p>'), 401)
    response = RedirectResponse("/", status_code=303)
    if token is not None:
        response.set_cookie(COOKIE, svc.sessions.create(), httponly=True, samesite="strict", path="/")
    return response


@router.post("/logout", summary="End the session (its cookie stops working)")
async def logout(request: Request) -> Response:
    """Revokes the session of the cookie sent (server-side) and clears the cookie."""
    sessions = request.app.state.service.sessions
    if sessions is not None:
        for given in cookie_sessions(request.scope.get("headers", ())):
            sessions.revoke(given)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
