"""Kafka messages as items, for the source: :func:`to_item` (the envelope
``{topic, partition, offset, key, value, headers, timestamp}``, or the value alone),
:func:`where_from` (the position an item records) and :func:`repair` (an item the log
refuses, replaced by one it takes: nothing is dropped silently)."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

import orjson

from ...errors import BadItemError
from ...items import encode_many, normalize
from ..mqtt.messages import decode_payload

#: the field of a ``value_only`` item that records where it came from
ORIGIN = "_kafka"


def _text(raw: bytes | None) -> tuple[str | None, bool]:
    """(text, is_base64): UTF-8 text, else base64."""
    if raw is None:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), True


def _headers(pairs: list[tuple[str, bytes | None]] | None) -> dict[str, Any]:
    """Headers as a dict (a repeated name: the list of its values, in order)."""
    out: dict[str, Any] = {}
    for name, raw in pairs or ():
        value = _text(raw)[0]
        if name in out:
            out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [value]
        else:
            out[name] = value
    return out


def envelope(message) -> dict:
    """The item of a message: ``{topic, partition, offset, key, value, headers, timestamp}``;
    ``value`` is JSON when it parses, else text, else base64 (``"encoding": "base64"``);
    a key that is not UTF-8 is base64 too (``"key_encoding": "base64"``); ``timestamp``
    is the message's time (UTC) or None."""
    raw = message.value()
    value, encoding = (None, None) if raw is None else decode_payload(raw)
    key, key_b64 = _text(message.key())
    kind, ms = message.timestamp()
    item = {"topic": message.topic(), "partition": message.partition(), "offset": message.offset(), "key": key,
            "value": value, "headers": _headers(message.headers()),
            "timestamp": datetime.fromtimestamp(ms / 1000, timezone.utc) if kind and ms >= 0 else None}
    if encoding:
        item["encoding"] = encoding
    if key_b64:
        item["key_encoding"] = "base64"
    return item


def to_item(message, value_only: bool) -> tuple[dict, bool]:
    """(item, bad): the message's item. ``value_only``: the decoded JSON object alone plus
    :data:`ORIGIN` (``{topic, partition, offset}``, the bridge's position); a value that is
    not a JSON object (or has its own ``_kafka``) is stored as the envelope with an
    ``"error"`` instead, and ``bad`` is True."""
    item = envelope(message)
    if not value_only:
        return item, False
    value = item["value"]
    if isinstance(value, dict) and ORIGIN not in value and "encoding" not in item:
        return {**value, ORIGIN: {"topic": item["topic"], "partition": item["partition"],
                                  "offset": item["offset"]}}, False
    item["error"] = "value-only: the value is not a JSON object (stored as the whole message)"
    return item, True


def where_from(data: dict) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of an item a Kafka source stored; None for any other."""
    origin = data.get(ORIGIN)
    if isinstance(origin, dict):
        data = origin
    topic, partition, offset = data.get("topic"), data.get("partition"), data.get("offset")
    if isinstance(topic, str) and type(partition) is int and type(offset) is int:
        return topic, partition, offset
    return None


def refusal(item: dict, nested: bool) -> str | None:
    """Why the log refuses ``item`` (``nested``: whether the store takes lists in lists);
    None when it takes it."""
    try:
        encode_many([normalize(item, nested)])
    except BadItemError as exc:
        return str(exc)
    return None


def repair(message, item: dict, error: str, nested: bool) -> dict:
    """An item the log takes in place of ``item`` (refused with ``error``): the envelope with
    the raw value as text (or base64) and the headers as JSON text, plus the ``error``;
    without the value (and with its ``size``) when even that is too big."""
    raw = message.value()
    text, b64 = _text(raw)
    fixed = envelope(message)
    fixed.pop("encoding", None)
    fixed.update(value=text, error=error,
                 headers=orjson.dumps([[n, _text(v)[0]] for n, v in message.headers() or ()]).decode())
    if b64:
        fixed["encoding"] = "base64"
    if refusal(fixed, nested) is not None:
        fixed.pop("encoding", None)
        fixed.update(value=None, size=len(raw or b""))
    return fixed
