"""Server-Sent Events: ``GET /streams/{name}/follow`` — every item from an offset on, live.

One event per item::

    id: 17
    data: {"offset": 17, "timestamp": "2024-05-01T12:00:00.123+00:00", "data": {...}}

``id:`` is the offset, so a client that reconnects with ``Last-Event-ID: 17`` (browsers
do it by themselves) resumes at offset 18: nothing skipped, nothing repeated. While idle
the server sends a ``: keep-alive`` comment every :data:`KEEPALIVE` seconds. When the
stream is dropped the follower gets ``event: end`` and the response ends. Followers wait
on the app's :class:`~streamlog.serve.hub.Hub` (no polling of their own) and read in
batches of up to :data:`FOLLOW_BATCH` items, on at most :data:`READ_THREADS` worker
threads whatever the number of followers. Read-only: no group's state changes.

``start`` and ``Last-Event-ID`` are parsed strictly (:func:`streamlog.offsets.parse_offset`):
a bad or out-of-range one is a 400 before any event — never a 200 that ends at once,
which browsers would reconnect to forever.
"""

from __future__ import annotations

from typing import AsyncIterator, Optional

import anyio
import anyio.to_thread
from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from ..errors import StreamlogError, UnknownStreamError
from ..names import check_name
from ..offsets import MAX_OFFSET, parse_offset
from .context import service
from .responses import dumps

KEEPALIVE = 15.0  # seconds between keep-alive comments on an idle connection
FOLLOW_BATCH = 1_000  # items per read
RETRY_MS = 1_000  # what browsers wait before reconnecting
START_WORDS = ("earliest", "latest")
READ_THREADS = 4  # worker threads that followers' reads may hold at once (per process)

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"}


def event(data: str | bytes, id: int | None = None, name: str | None = None) -> bytes:
    """One SSE event (``data`` is one line of JSON)."""
    head = (f"id: {id}\n" if id is not None else "") + (f"event: {name}\n" if name else "")
    body = data if isinstance(data, bytes) else data.encode()
    return head.encode() + b"data: " + body + b"\n\n"


def last_event_id(request: Request) -> int | None:
    """The ``Last-Event-ID`` a reconnecting client sent (None: none sent): an offset that
    another offset can follow, so ``0 <= id < 2**63 - 1``; anything else is a 400 before any
    event (a 200 with ``event: end`` would make a browser reconnect forever)."""
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        return None
    # the header's surrounding whitespace is not part of its value (HTTP)
    return parse_offset(raw.strip(), "Last-Event-ID", limit=MAX_OFFSET - 1)


def start_word(start: str | None) -> int | str:
    """``start`` as given: an offset, ``earliest`` or ``latest`` (None: ``latest``); a
    400 for anything else, before the stream is looked up."""
    if start is None:
        return "latest"
    return parse_offset(start, "start", words=START_WORDS)


def start_offset(request: Request, start: str | None, last: int | None) -> int:
    """Where a follower starts: after ``Last-Event-ID`` when given, else ``start``
    (an offset, ``earliest`` or ``latest`` — the default: only new items)."""
    resume = last_event_id(request)
    if resume is not None:
        return resume + 1
    where = start_word(start)
    if where == "latest":
        return 0 if last is None else last + 1
    if where == "earliest":
        return 0
    return where


async def reads(svc, function, *args):
    """Run a follower's database read in a worker thread, at most :data:`READ_THREADS`
    followers at a time: a burst of followers (hundreds of browsers reconnecting, or all
    followers woken by one append) queues here instead of growing the shared thread pool
    to its 40 threads and leaving them alive."""
    if svc.follow_limiter is None:  # made on the app's event loop
        svc.follow_limiter = anyio.CapacityLimiter(READ_THREADS)
    return await anyio.to_thread.run_sync(function, *args, limiter=svc.follow_limiter)


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
    last_event_id(request)  # a bad offset is a 400 before anything else
    start_word(start)
    store, hub = svc.store, svc.hub

    def open_stream():
        return svc.existing(name), store.last_offset(name)

    stream, last = await reads(svc, open_stream)
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
                    records = await reads(svc, stream.read_following, position, FOLLOW_BATCH)
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
