"""MQTT messages as items, for the source: a received message waiting for its batch
(:class:`Pending`), its payload decoded (:func:`decode_payload`), items the log refuses
repaired so that nothing is dropped silently (:func:`repair_items`), and the ids of the
messages stored last (:class:`RecentIds`, for ``id_field`` de-duplication)."""

from __future__ import annotations

import base64
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from ...errors import BadItemError
from ...items import encode_many, normalize
from ...lines import json_value

log = logging.getLogger("streamlog.mqtt")


@dataclass
class Pending:
    """One received message waiting for its batch to be stored (then acknowledged)."""

    item: dict
    raw: bytes
    mid: int
    qos: int
    dup: bool
    gen: int  # connection it arrived on
    epoch: int  # broker session it belongs to
    arrived: float  # time.monotonic()


def decode_payload(raw: bytes) -> tuple[Any, str | None]:
    """(payload, encoding): a JSON value (integers exact, as :func:`~streamlog.lines.json_value`
    reads them: one outside the 64-bit range is then refused and stored as text with an
    ``"error"``, never rounded), else UTF-8 text, else base64 text."""
    try:
        return json_value(raw), None
    except orjson.JSONDecodeError:
        pass
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def id_key(value: Any) -> bytes | None:
    """A message id as a comparable key (equal ids, equal keys); None for no id."""
    if value is None:
        return None
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # e.g. an integer beyond 64 bits: exact, and never equal to a JSON key
        return b"repr:" + repr(value).encode()


def repair_items(pairs: list[tuple[Pending, dict]], nested: bool) -> tuple[list[tuple[Pending, dict]], int]:
    """Replace the items the log refuses (:class:`BadItemError`) by ones it takes: the raw
    payload as text (or base64) with an ``"error"``, or no payload (and its ``"size"``)
    when even that is too big. ``nested``: whether the store takes lists in lists.
    Returns the pairs, in order, and how many items were repaired."""
    fixed = []
    repaired = 0
    for p, item in pairs:
        try:
            encode_many([normalize(item, nested)])
            fixed.append((p, item))
            continue
        except BadItemError as exc:
            error = str(exc)
        repaired += 1
        item = dict(item)
        item.pop("encoding", None)
        try:
            item["payload"] = p.raw.decode("utf-8")
        except UnicodeDecodeError:
            item["payload"], item["encoding"] = base64.b64encode(p.raw).decode("ascii"), "base64"
        item["error"] = error
        try:
            encode_many([normalize(item, nested)])
        except BadItemError:
            item.pop("encoding", None)
            item.update(payload=None, size=len(p.raw))
        log.warning("message on %r stored with an error: %s", item["topic"], error)
        fixed.append((p, item))
    return fixed, repaired


def facts_only(p: Pending, item: dict, error: str) -> dict:
    """An item keeping only the facts of a message (no payload): for a batch the log
    refuses although each item passes on its own."""
    return {"topic": item["topic"], "payload": None, "qos": item["qos"], "retain": item["retain"],
            "received": item["received"], "error": error, "size": len(p.raw)}


class RecentIds:
    """The ids (``id_field`` of JSON-object payloads) of the last ``size`` messages stored,
    oldest forgotten first. :meth:`key` is None for a message without an id: such
    messages are always stored."""

    def __init__(self, id_field: str | None, size: int):
        self.id_field = id_field
        self.size = size
        self._ids: set[bytes] = set()
        self._order: deque[bytes] = deque()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: bytes) -> bool:
        return key in self._ids

    def key(self, item: dict) -> bytes | None:
        """The id of the message ``item`` holds, as a comparable key; None without one."""
        payload = item.get("payload")
        if self.id_field is None or not isinstance(payload, dict):
            return None
        return id_key(payload.get(self.id_field))

    def remember(self, key: bytes) -> None:
        if key in self._ids:
            return
        self._ids.add(key)
        self._order.append(key)
        while len(self._order) > self.size:
            self._ids.discard(self._order.popleft())

    def rebuild(self, stream) -> None:
        """Remember the ids of ``stream``'s newest ``size`` items (where a crash between
        append and acknowledgement leaves them)."""
        if self.id_field is None:
            return
        for record in stream.tail(self.size):
            key = self.key(record["data"])
            if key is not None:
                self.remember(key)
        log.info("%d recent ids of %s read to drop redelivered messages", len(self), stream.name)
