"""``streamlog serve``: the HTTP API (ingest, read, live follow, model service, metrics)
and the live dashboard, as an ASGI application.

    import streamlog.serve
    app = streamlog.serve.app(url="sqlite:///data.db")   # any ASGI server can run it
    # or: uvicorn --factory streamlog.serve:app  (STREAMLOG_URL names the database)

Modules, one job each: :mod:`.app` (``create_app``), :mod:`.ingest` (``POST …/items``),
:mod:`.idempotency`, :mod:`.read`, :mod:`.follow` (SSE), :mod:`.hub` (the one watcher
that wakes followers), :mod:`.models` (the model service), :mod:`.metrics`
(``/metrics``, ``/healthz``), :mod:`.auth` (token, login cookie), :mod:`.responses`
(JSON and errors), :mod:`.server` (running it under uvicorn), :mod:`.dashboard`.
"""

from __future__ import annotations

from fastapi import FastAPI

# Imported first, on purpose: loading the submodule ``app`` binds the package attribute
# ``app`` to it; the function below then takes the name back for good.
from .app import create_app


def app(url: str | None = None, **options) -> "FastAPI":
    """The ASGI application serving the database at ``url`` (options as
    :func:`~streamlog.serve.app.create_app`: ``token``, ``cors``, ``max_body``)."""
    return create_app(url, **options)


__all__ = ["app", "create_app"]
