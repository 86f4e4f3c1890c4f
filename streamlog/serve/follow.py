"""Server-Sent Events: ``GET /streams/{name}/follow`` — every item from an offset on, live.

One event per item::

    id: 17
    data: {"offset": 17, "timestamp": "2024-05-01T12:00:00.123+00:00", "data": {...}}

``id:`` is the offset, so a client that reconnects with ``Last-Event-ID: 17`` (browsers
do it by themselves) resumes at offset 18: nothing skipped, nothing repeated. While idle
the server sends a ``: keep-alive`` comment every :data:`KEEPALIVE` seconds. When the
stream is dropped the follower gets ``event: end`` and the response ends. Followers wait
on the app's :class:`~streamlog.serve.hub.Hub` (no polling of their own) and read in
batches of up to :data:`FOLLOW_BATCH` items. Read-only: no group's state changes.
"""

from __future__ import annotations

from typing import AsyncIterator, Optional

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from ..errors import StreamlogError, UnknownStreamError
from ..names import check_name
from .context import service
from .responses import APIError, dumps

KEEPALIVE = 15.0  # seconds between keep-alive comments on an idle connection
FOLLOW_BATCH = 1_000  # items per read
RETRY_MS = 1_000  # what browsers wait before reconnecting

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"}


def event(data: str | bytes, id: int | None = None, name: str | None = None) -> bytes:
    """One SSE event (``data`` is one line of JSON)."""
    head = (f"id: {id}\n" if id is not None else "") + (f"event: {name}\n" if name else "")
    body = data if isinstance(data, bytes) else data.encode()
    return head.encode() + b"data: " + body + b"\n\n"


def last_event_id(request: Request) -> int | None:
    """The ``Last-Event-ID`` a reconnecting client sent, as an integer (None: none sent)."""
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise APIError(400, f"Last-Event-ID must be an offset, not {raw[:40]!r}") from None
    if value < -1:
        raise APIError(400, f"Last-Event-ID must be an offset, not {value}")
    return value


def start_offset(request: Request, start: str | None, last: int | None) -> int:
    """Where a follower starts: after ``Last-Event-ID`` when given, else ``start``
    (an offset, ``earliest`` or ``latest`` — the default: only new items)."""
    resume = last_event_id(request)
    if resume is not None:
        return resume + 1
    if start is None or start == "latest":
        return 0 if last is None else last + 1
    if start == "earliest":
        return 0
    try:
        value = int(start)
    except ValueError:
        value = -1
    if value < 0 or value >= 2**63:
        raise APIError(400, f"start must be an offset, 'earliest' or 'latest', not {start[:40]!r}")
    return value


def sse(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/streams/{name}/follow", tags=["read"], summary="Follow a stream (Server-Sent Events)",
            response_class=StreamingResponse)
async def follow(request: Request, name: str,
                 start: Optional[str] = Query(None, description="an offset, 'earliest' or 'latest' (default)")):
    """Every item from ``start`` on, then new ones as they land, as Server-Sent Events
    (``id:`` = offset; ``Last-Event-ID`` resumes right after it)."""
    svc = service(request)
    check_name(name)
    stream = await run_in_threadpool(svc.existing, name)
    store, hub = svc.store, svc.hub
    last = await run_in_threadpool(store.last_offset, name)
    position = start_offset(request, start, last)
    key = ("items", name)

    async def events() -> AsyncIterator[bytes]:
        nonlocal position
        hub.subscribe(key, lambda: store.last_offset(name))
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            while not hub.closed:
                version = hub.version(key)
                try:
                    # its own items only: never a stream created again under the same name
                    records = await run_in_threadpool(stream.read_following, position, FOLLOW_BATCH)
                except StreamlogError as exc:
                    gone = isinstance(exc, UnknownStreamError)
                    message = f"stream {name!r} was dropped while following it" if gone else str(exc)
                    yield event(dumps({"error": message}), name="end")
                    return
                if records:
                    yield b"".join(event(dumps(r), r["offset"]) for r in records)
                    position = records[-1]["offset"] + 1
                    if len(records) == FOLLOW_BATCH:
                        continue
                if not await hub.wait(key, version, KEEPALIVE):
                    yield b": keep-alive\n\n"
        finally:
            hub.unsubscribe(key)

    return sse(events())
