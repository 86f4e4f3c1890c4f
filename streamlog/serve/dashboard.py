"""The live dashboard of ``streamlog serve``: one HTML page (``GET /``) and its assets
(``GET /static/…``), all shipped inside the package — no CDN, so it works on an
air-gapped network.

The page holds no data of its own: its JavaScript (``static/js/``) reads everything from
the server's JSON and Server-Sent-Events API (``/streams``, ``/streams/{name}/follow``,
``/models``, ``/streams/{s}/models/{g}/{m}/history`` and ``…/follow``, ``/login``), with
the same authentication as any other client. So the dashboard can never show something
the API would not.

Guarantees:

* **Item content is text, never markup.** The scripts build the page with
  ``textContent`` and ``createElement`` only (no ``innerHTML``), and the page is served
  with a strict Content-Security-Policy — scripts and styles only from this server, no
  inline script, no ``eval``, no plugins, no framing — so even markup that slipped into
  the page could not run.
* **Same origin only.** ``connect-src 'self'``: the page talks to no other server.
* **Fresh after an upgrade.** Assets are served with ``Cache-Control: no-cache`` (the
  browser revalidates with the ETag, a 304 costs nothing), so a new streamlog version
  never runs against stale scripts.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(__file__).resolve().with_name("static")

#: Sent with the page and every asset.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    """The package's ``static/`` directory, with :data:`SECURITY_HEADERS` on every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def install(app: FastAPI) -> None:
    """Add the dashboard to ``app``: ``GET /`` (the single-page dashboard; its views are
    hash routes: ``#/``, ``#/streams/NAME``, ``#/models/STREAM/GROUP/NAME``) and
    ``GET /static/…`` (its scripts, styles and the vendored chart library).

    Neither route is in the OpenAPI schema: they are a page, not an API."""
    index = STATIC / "index.html"

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    app.mount("/static", _Assets(directory=STATIC), name="static")
