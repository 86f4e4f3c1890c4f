"""The ASGI application of ``streamlog serve``: :func:`create_app`.

FastAPI (on Starlette) because it is the field's convention for Python HTTP APIs and
gives ``/openapi.json`` for free, from which other languages generate clients. The hot
paths (ingest, reads, SSE) take the raw request and answer orjson bytes: no pydantic
model per item.

Every blocking database call runs in Starlette's thread pool, never on the event loop;
one :class:`streamlog.Client` serves the whole app; SSE followers wait on one
:class:`~streamlog.serve.hub.Hub` (one watcher thread per app, no polling per follower)
and their reads share a few worker threads (:func:`streamlog.serve.follow.reads`).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from ..client import Client
from ..config import mask_url
from . import auth, follow, ingest, metrics, models, read, responses
from .context import DEFAULT_MAX_BODY, Service
from .hub import Hub

DESCRIPTION = """A durable stream log over HTTP: append items (JSON or NDJSON, idempotent
retries with `Idempotency-Key`), read them, follow streams and models live (Server-Sent
Events), ask learners for their coefficients or centres and for predictions, and scrape
Prometheus metrics. See docs/serve.md."""


def create_app(url: str | None = None, *, token: str | None = None, cors: str | list[str] | None = None,
               max_body: int = DEFAULT_MAX_BODY, client: Client | None = None) -> FastAPI:
    """The ASGI app serving the database at ``url`` (default: ``STREAMLOG_URL``, then the
    embedded file).

    ``token``: every request but ``/healthz``, ``/login`` and the dashboard's static page
    needs ``Authorization: Bearer <token>`` or the session cookie of ``POST /login``.
    ``cors``: origin(s) allowed to call the API from a browser (none by default: no CORS
    headers at all). ``max_body``: the largest request body in bytes (413 above it).
    ``client``: an open :class:`streamlog.Client` to use instead of opening ``url``.
    Opens the database now: a bad URL or an unreachable server raises here.
    """
    token = auth.check_token(token)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise ValueError(f"max_body must be a positive number of bytes, not {max_body!r}")
    client = client if client is not None else Client(url)
    hub = Hub(client.store)
    svc = Service(client=client, hub=hub, models=models.ModelCache(client), token=token, max_body=max_body,
                  sessions=auth.Sessions() if token is not None else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        hub.close()

    app = FastAPI(title="streamlog", version=_version(), description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # the docs pages load scripts from a CDN: not on an air gap
    app.state.service = svc
    app.state.registry = metrics.registry_for(svc)
    app.state.url = mask_url(client.url)
    responses.install(app)
    for module in (ingest, read, follow, models, metrics, auth):
        app.include_router(module.router)
    from .dashboard import install

    install(app)
    if token is not None:
        app.add_middleware(auth.TokenGate, token=token, sessions=svc.sessions)
    if cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(  # added last: outermost, so preflight requests need no token
            CORSMiddleware, allow_origins=[cors] if isinstance(cors, str) else list(cors),
            allow_methods=["GET", "POST"], allow_credentials=True,
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["Idempotent-Replayed", "Retry-After"])
    return app


def _version() -> str:
    from .. import __version__

    return __version__
