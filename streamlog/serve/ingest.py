"""``POST /streams/{name}/items``: append a JSON array (or one object) or NDJSON.

All-or-nothing, with the validation of :meth:`Stream.extend` (types, 64 levels of
nesting, 1 MiB per encoded item, the server's nested-array rule): a bad body appends
nothing and answers 400 naming the item (``item 3: …``, the array index) or the line
(``line 7: …``, NDJSON) and the reason. A body over the limit (``--max-body``) is 413, an
unknown ``Content-Type`` 415. The answer is ``{"offsets": [...], "count": n}``.

The stream is created on first use, as ``streamlog.stream(name)`` does. The body is
parsed with orjson straight from the bytes (no request model: pydantic would cost more
than the append).
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..errors import BadItemError, IdempotencyError, UnknownStreamError
from ..items import MAX_ITEM_BYTES, encode_many, normalize_many
from ..lines import json_lines, json_value
from ..names import DEAD_SUFFIX, check_name
from . import idempotency
from .context import Service, service
from .responses import APIError, json_response

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines", "application/jsonlines", "application/json-lines"})
EMPTY = "empty batch: the body holds no items (nothing was appended, no stream was created)"

router = APIRouter(tags=["ingest"])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [{"type": "array", "items": {"type": "object"}},
                                                      {"type": "object"}]}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one JSON object per line"}},
        },
    },
    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "a retried request with the same key appends nothing and gets the same offsets"}],
    "responses": {"400": {"description": "a bad item (the index or line and the reason), or no item at all"},
                  "403": {"description": "a dead-letter stream (<name>.dead): not writable over HTTP"},
                  "409": {"description": "the Idempotency-Key was used with another body, or is in progress"},
                  "413": {"description": "the body is over the server's --max-body"},
                  "415": {"description": "not application/json nor NDJSON"}},
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    too_large = APIError(413, f"the request body is over the limit of {limit} bytes (--max-body)")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def body_kind(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES:
        return "json"
    if media in NDJSON_TYPES:
        return "ndjson"
    raise APIError(415, f"unsupported Content-Type {media or '(none)'!r}: send application/json (an array of "
                        "objects) or application/x-ndjson (one object per line)")


def parse_json(body: bytes) -> list:
    """The items of a JSON body: an array of objects, or one object."""
    try:
        value = json_value(body)  # the one number rule: big integers stay exact, refused as Stream.extend does
    except orjson.JSONDecodeError as exc:
        # streamlog's words; the parser's own (its wording changes between versions) stays the cause
        raise APIError(400, f"not valid JSON (at line {exc.lineno})") from exc
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise APIError(400, f"the body must be a JSON array of objects (or one object), not {type(value).__name__}")
    return value


def parse_ndjson(body: bytes, nested_arrays: bool) -> list[dict]:
    """The items of an NDJSON body (blank lines skipped); the first bad line is a 400."""
    items = []
    for line in json_lines(body.splitlines(), nested_arrays):
        if line.why is not None:
            raise APIError(400, str(line.error()))
        items.append(line.item)
    return items


def store_items(svc: Service, name: str, items: list, key: str | None) -> tuple[list[int], bool]:
    """Append as :meth:`Stream.extend` does — or :meth:`Stream.extend_once` with a key —
    and answer ``(offsets, replayed)``. A refused request never creates the stream: the
    first request for a stream this server has no handle on is validated before."""
    if not svc.known(name):
        encode_many(normalize_many(items, svc.store.nested_arrays), MAX_ITEM_BYTES)
    for fresh in (False, True):
        stream = svc.producer(name, fresh)
        try:
            if key is None:
                return stream.extend(items), False
            offsets, replayed = stream.extend_once(key, items, wait=idempotency.WAIT)
            return offsets, replayed
        except UnknownStreamError:
            if fresh:
                raise
            # dropped since this server cached it: a new request creates it again
    raise AssertionError("unreachable")  # pragma: no cover


def refuse_dead_letters(name: str) -> None:
    """403 for a dead-letter stream (``<name>.dead``): only consumers write dead letters,
    and ``streamlog redrive`` moves them back into the stream — a forged one would be
    replayed as if a consumer had given up on it."""
    if name.endswith(DEAD_SUFFIX):
        raise APIError(403, f"{name!r} is a dead-letter stream: only streamlog's consumers write to it "
                            f"(append to the stream itself; `streamlog redrive` moves dead letters back)")


@router.post("/streams/{name}/items", summary="Append items (JSON array or NDJSON)", openapi_extra=_BODY_DOC)
async def append_items(request: Request, name: str):
    """Append all the items of the body or none; answers their offsets."""
    svc = service(request)
    check_name(name)
    refuse_dead_letters(name)
    kind = body_kind(request.headers.get("content-type"))
    key = idempotency.check_key(request.headers.get(idempotency.HEADER))
    body = await read_body(request, svc.max_body)

    def work() -> tuple[list[int], bool]:
        # NDJSON lines are checked one by one as they are parsed (the error names the line);
        # a JSON array's items by normalize_many (the error names the index)
        items = parse_json(body) if kind == "json" else parse_ndjson(body, svc.store.nested_arrays)
        if not items:
            raise APIError(400, EMPTY)
        try:
            return store_items(svc, name, items, key)
        except BadItemError as exc:
            raise APIError(400, str(exc)) from None
        except IdempotencyError as exc:
            raise idempotency.conflict(exc) from None

    offsets, replayed = await run_in_threadpool(work)
    headers = {idempotency.REPLAYED: "true"} if replayed else None
    return json_response({"offsets": offsets, "count": len(offsets)}, headers=headers)

