"""Source documents as items: :func:`convert_document`.

A document becomes an item by :func:`convert_document`, which keeps the
source ``_id`` (as the item field ``_id``) so items can be joined back:

=====================================  ============================================
source (BSON)                          item
=====================================  ============================================
ObjectId                               its 24-digit hex string (``_id`` too)
string, bool, null, double, int32/64   itself (int64 as a plain ``int``)
date                                   aware UTC ``datetime``; one outside years
                                       1..9999: its string form
Decimal128                             ``float`` (NaN / ±Infinity: ``None``)
binary (any subtype but UUID), bytes   base64 string
UUID (binary subtype 4)                its canonical string ``"xxxxxxxx-xxxx-…"``
embedded document, array               dict, list (converted recursively)
anything else (regex, timestamp,       ``str(value)``
code, min/max key, DBRef, …)
=====================================  ============================================

Keys: streamlog refuses keys that start with ``$`` or contain ``.`` (real MongoDB
allows both since 5.0), so a leading ``$`` becomes ``_`` and every ``.`` becomes
``_`` (``"$price.usd"`` → ``"_price_usd"``); an empty key becomes ``"_"``. A document
in which a renamed key collides with another key of the same object is **skipped**,
as is one that streamlog cannot store after conversion (over 1 MiB encoded, nesting
over 64 levels, a list directly in a list when the target is FerretDB): each skip
is one error in ``counters.errors`` and a warning naming the document's ``_id``.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any, Mapping

from bson import Binary, ObjectId
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128

from ...errors import BadItemError


def _rename(key: str) -> str:
    if key.startswith("$"):
        key = "_" + key[1:]
    if "." in key:
        key = key.replace(".", "_")
    return key or "_"


def _convert(value: Any, path: str) -> Any:
    kind = type(value)
    if kind is str or kind is bool or kind is float or value is None:
        return value
    if isinstance(value, int):  # int64 → plain int
        return int(value)
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        return value
    if isinstance(value, Mapping):
        return _convert_mapping(value, path)
    if isinstance(value, (list, tuple)):
        return [_convert(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Decimal128):
        try:
            return float(value.to_decimal())  # NaN, ±inf → None when stored
        except (ValueError, ArithmeticError):  # signalling NaN
            return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Binary) and value.subtype == 4 and len(value) == 16:
        return str(uuid.UUID(bytes=bytes(value)))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, DatetimeMS):  # a date outside datetime's range
        return str(value)
    return str(value)


def _convert_mapping(doc: Mapping, path: str) -> dict:
    out: dict = {}
    for key, value in doc.items():
        key = str(key)
        name = _rename(key)
        where = f"{path}.{key}" if path else key
        if name in out:
            raise BadItemError(f"key {key!r} at {path or 'top level'} becomes {name!r}, "
                               "which the document already has")
        out[name] = _convert(value, where)
    return out


def convert_document(doc: Mapping) -> dict:
    """The item for one source document (see the module docstring for the rules).

    Raises :class:`BadItemError` when a renamed key collides with another key."""
    return _convert_mapping(doc, "")


def convert_id(value: Any) -> Any:
    """The item form of a source ``_id`` (for messages naming a document)."""
    return _convert(value, "_id")
