"""JSON in and out, and every error as ``{"error": "one line"}`` with the right status.

Responses are encoded with orjson (datetimes as ISO-8601 strings, as ``streamlog tail
--json`` prints them) and carry ``X-Content-Type-Options: nosniff``: item content is
JSON, and no browser may take it for HTML. Messages go through
:func:`~streamlog.config.mask_url`, so a database password never reaches a client.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..config import mask_url
from ..errors import (
    BadItemError,
    BadNameError,
    ConsumerError,
    NoDatabaseError,
    StreamlogError,
    UnknownGroupError,
    UnknownStreamError,
    UnreachableError,
)
from ..items import to_jsonable

log = logging.getLogger("streamlog.serve")

NOSNIFF = {"X-Content-Type-Options": "nosniff"}


class APIError(Exception):
    """An error answer: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_jsonable(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(value: Any) -> bytes:
    """JSON bytes: datetimes as ISO-8601 with milliseconds (as :func:`streamlog.items.to_jsonable`
    and ``streamlog tail --json``), numpy numbers as numbers. Only datetimes cost a Python
    call: the rest is orjson's."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None,
                  raw: bytes | None = None) -> Response:
    return Response(raw if raw is not None else dumps(value), status_code=status,
                    media_type="application/json", headers={**NOSNIFF, **(headers or {})})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    one_line = mask_url(" ".join(str(message).split())) or "error"
    return json_response({"error": one_line}, status, headers)


def status_of(exc: BaseException) -> int:
    """The HTTP status of a streamlog error."""
    if isinstance(exc, (UnknownStreamError, UnknownGroupError, NoDatabaseError)):
        return 404
    if isinstance(exc, UnreachableError):
        return 503
    if type(exc).__name__ == "NotFittedError":  # a model that cannot predict yet
        return 409
    if isinstance(exc, (BadItemError, BadNameError, ConsumerError)):
        return 400
    return 400


def install(app: FastAPI) -> None:
    """Turn every failure into a JSON error of one line."""

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> Response:
        return error_response(exc.status, str(exc), exc.headers)

    @app.exception_handler(StreamlogError)
    async def _streamlog(request: Request, exc: StreamlogError) -> Response:
        return error_response(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body"))
            problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid"))
        return error_response(400, "; ".join(problems) or "invalid request")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, exc.detail or "error", getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _other(request: Request, exc: Exception) -> Response:
        module = type(exc).__module__ or ""
        if isinstance(exc, sqlite3.Error) or module.startswith(("pymongo", "bson")):
            return error_response(503, f"database error: {type(exc).__name__}: {exc}")
        log.error("internal error on %s %s: %s", request.method, request.url.path,
                  mask_url(f"{type(exc).__name__}: {exc}"), exc_info=log.isEnabledFor(logging.DEBUG))
        return error_response(500, "internal error (see the server's log)")
