"""Reading: ``GET /streams`` (what ``streamlog ls`` shows), ``GET /streams/{name}`` (what
``streamlog info`` shows) and ``GET /streams/{name}/items`` (a range of items).

Read-only, as the CLI's ``ls``/``info``/``tail``: nothing is created (an unknown stream is
a 404) and no consumer group's state changes. The data comes from the same public API
(:meth:`Stream.info`, :meth:`Stream.read`), so the JSON is the CLI's ``--format json``.
"""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ..errors import UnknownStreamError
from ..names import check_name
from ..offsets import parse_count, parse_offset
from .context import service
from .responses import json_response

MAX_READ = 10_000  # items per GET …/items
DEFAULT_READ = 100

router = APIRouter(tags=["read"])


def stream_infos(svc) -> list[dict]:
    """``Stream.info()`` of every stream, by name (streams dropped meanwhile are left out)."""
    infos = []
    for name in svc.client.streams():
        try:
            infos.append(svc.client.get(name).info())
        except UnknownStreamError:
            continue
    return infos


@router.get("/streams", summary="List the streams (as `streamlog ls`)")
async def list_streams(request: Request):
    """One ``Stream.info()`` object per stream: length, offsets, newest item's time,
    groups (pending, claimed, failed, dead letters, windows), retention, saved models."""
    return json_response(await run_in_threadpool(stream_infos, service(request)))


@router.get("/streams/{name}", summary="One stream in detail (as `streamlog info`)")
async def stream_info(request: Request, name: str):
    svc = service(request)
    check_name(name)
    return json_response(await run_in_threadpool(lambda: svc.existing(name).info()))


@router.get("/streams/{name}/items", summary="Read items (never changes any state)")
async def read_items(request: Request, name: str,
                     start: str = Query("0", description="the first offset (0 <= start < 2**63)"),
                     limit: str = Query(str(DEFAULT_READ),
                                        description=f"at most this many (<= {MAX_READ})"),
                     end: Optional[str] = Query(None, description="the last offset (included)")):
    """Items with ``start <= offset`` (``<= end``), oldest first: ``{"items": [{"offset",
    "timestamp", "data"}, …], "next": the offset to read from next}``. Offsets and
    ``limit`` are plain decimal digits (no sign, space or ``_``)."""
    svc = service(request)
    check_name(name)
    # strict: ``int()`` (and the framework's int parameters) would take 1_0, " 5", +5, 5.0
    first = parse_offset(start, "start")
    count = parse_count(limit, "limit", maximum=MAX_READ)
    last = None if end is None else parse_offset(end, "end")

    def read() -> dict:
        records = svc.existing(name).read(first, count, last)
        return {"items": records, "next": records[-1]["offset"] + 1 if records else first}

    return json_response(await run_in_threadpool(read))
