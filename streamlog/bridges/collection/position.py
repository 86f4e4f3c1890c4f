"""Where a collection bridge is in its source: :class:`Position`, and how it is found
again after a restart (:func:`read_position`).

The bridge keeps no state of its own: the position is the target stream itself. Each
item carries the source ``_id`` (and, from a change stream, the event's resume token in
:data:`RESUME_FIELD`); at start the newest items of the stream say where to continue —
from the resume token when the newest item has one and change streams are used, else
after the largest ``_id``. For ObjectIds the items of the last ``2 × overlap`` seconds of
``_id`` time are read back too, so that documents appended late from the overlap window
are not appended again. Only the newest :data:`POSITION_SCAN` items are searched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator, Mapping

from bson import ObjectId
from bson.decimal128 import Decimal128

from ...errors import StreamlogError

#: seconds of ObjectId time looked back for documents that became visible late
DEFAULT_OVERLAP = 2.0
#: items of the target stream searched for the position at start
POSITION_SCAN = 10_000
#: the item field holding a change-stream resume token
RESUME_FIELD = "_resume"
_PAGE = 500  # items of the target stream read at a time, newest first
UNFOLLOWABLE = "cannot be followed (polling needs ObjectId, number, string or date _ids)"


def id_kind(value: Any) -> str | None:
    """The kind of an ``_id`` polling can follow (``$gt`` only matches values of its own
    type): ``"objectid"``, ``"number"``, ``"string"``, ``"date"``; None for any other."""
    if isinstance(value, ObjectId):
        return "objectid"
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal128)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "date"
    return None


def is_hex_id(value: Any) -> bool:
    """Whether an item's ``_id`` may stand for an ObjectId (24 hex digits)."""
    return isinstance(value, str) and ObjectId.is_valid(value)


def oid_seconds(oid: ObjectId) -> float:
    """An ObjectId's time (one-second resolution), as a POSIX timestamp."""
    return oid.generation_time.timestamp()


def oid_floor(oid: ObjectId, seconds: float) -> ObjectId:
    """The smallest ObjectId of the time ``seconds`` before ``oid``'s."""
    return ObjectId.from_datetime(oid.generation_time - timedelta(seconds=seconds))


@dataclass
class Position:
    """The in-memory position: ``last``, the largest source ``_id`` appended (its BSON
    value) and its ``kind``; ``seen``, the ObjectIds appended within the overlap window;
    ``token``, the resume token of the last change event handled."""

    last: Any = None
    kind: str | None = None
    seen: set = field(default_factory=set)
    token: dict | None = None

    def advance(self, docs: list[Mapping], *, forward: bool, overlap: float, where: str) -> float | None:
        """Move past ``docs`` (appended or skipped; ``forward``: read in ``_id`` order
        after ``last``). Returns the lag (seconds since the newest ObjectId's time) or
        None. Raises :class:`StreamlogError` for an ``_id`` polling cannot follow."""
        if not docs:
            return None
        if forward:
            self.last = docs[-1]["_id"]
            if self.kind is None:
                self.kind = id_kind(self.last)
                if self.kind is None:
                    raise StreamlogError(f"{where}: _id {self.last!r} {UNFOLLOWABLE}")
        if self.kind != "objectid":
            return None
        if overlap:
            self.seen.update(d["_id"] for d in docs if isinstance(d["_id"], ObjectId))
        newest = docs[-1]["_id"]
        return max(0.0, time.time() - oid_seconds(newest)) if isinstance(newest, ObjectId) else None

    def note_changes(self, docs: list[Mapping]) -> None:
        """After change events: keep ``last`` the largest ``_id`` of the followed kind, for
        a fallback to polling (resume token lost)."""
        for doc in docs:
            value = doc.get("_id")
            if self.kind is None:
                self.kind = id_kind(value)
            if id_kind(value) == self.kind and (self.last is None or value > self.last):
                self.last = value

    def late_window(self, overlap: float) -> ObjectId | None:
        """The first ObjectId of the overlap window behind ``last`` (forgetting older
        ``seen`` ids), or None when there is no window to look back in."""
        if self.kind != "objectid" or not overlap or not isinstance(self.last, ObjectId):
            return None
        floor = oid_floor(self.last, overlap)
        self.seen = {oid for oid in self.seen if oid >= floor}
        return floor


def newest_first(stream) -> Iterator[dict]:
    """The target stream's items, newest first, read a page at a time."""
    hi = stream.store.last_offset(stream.name)
    while hi is not None and hi >= 0:
        page = stream.read(max(0, hi - _PAGE + 1), limit=_PAGE, end=hi)
        if not page:
            return
        yield from reversed(page)
        hi = page[0]["offset"] - 1


def read_position(stream, overlap: float, bson_id: Callable[[Any], Any]) -> tuple[Position, Any] | None:
    """The position recorded in ``stream`` (module docstring) and the newest item's
    ``_id`` as stored, or None when no item comes from a collection bridge yet.
    ``bson_id(value)`` turns an item's ``_id`` back into the source's BSON value (the
    source is asked whether a hex string is an ObjectId there)."""
    records = newest_first(stream)
    newest = None
    for n, record in enumerate(records):
        if n >= POSITION_SCAN:
            raise StreamlogError(
                f"stream {stream.name!r}: none of its newest {POSITION_SCAN} items comes from a "
                "collection bridge (no '_id' field); give the bridge a stream of its own")
        if "_id" in record["data"]:
            newest = record["data"]
            break
    if newest is None:
        return None
    position = Position()
    token = newest.get(RESUME_FIELD)
    if isinstance(token, str):
        position.token = {"_data": token}
    position.last = bson_id(newest["_id"])
    position.kind = id_kind(position.last)
    if position.kind == "objectid" and overlap:
        # Late documents from the overlap window were appended after newer ones: read
        # back until an item is older than the largest _id by 2 × overlap.
        seen = {position.last}
        for record in records:
            value = record["data"].get("_id")
            if not is_hex_id(value):
                continue
            oid = ObjectId(value)
            seen.add(oid)
            position.last = max(position.last, oid)
            if oid_seconds(oid) < oid_seconds(position.last) - 2 * overlap:
                break
        floor = oid_seconds(position.last) - overlap - 1
        position.seen = {oid for oid in seen if oid_seconds(oid) >= floor}
    return position, newest["_id"]
