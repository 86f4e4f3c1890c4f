"""The fast path for the common item: a flat ``dict`` of plain values (``str``, ``int``,
``float``, ``bool``, ``None``) under keys :mod:`streamlog.items` already validated —
checked and encoded at about the cost of the encoding alone, stored in exactly the form
:func:`~streamlog.items.normalize` + :func:`~streamlog.items.encode_many` would give it.
Anything else returns None here and takes that general path, which says what is wrong.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import orjson

from .items import MAX_ITEM_BYTES, _good_keys, encode_many, normalize_many

_PLAIN = frozenset((str, int, float, bool, type(None)))
_PLAIN_OPTIONS = orjson.OPT_STRICT_INTEGER  # ints beyond ±2**53 take the general path (range check)


def encode_plain(items: Any) -> list[bytes] | None:
    """The stored encoding of a batch in which every item is a flat ``dict`` of plain
    values (``str``, ``int``, ``float``, ``bool``, ``None``) under keys already validated:
    the common case, checked and encoded at about the cost of the encoding alone. Returns
    None for anything else (the caller takes :func:`~streamlog.items.normalize_many` then
    :func:`~streamlog.items.encode_many`, which say what is wrong). For such items the encoding *is* the
    canonical form's: NaN and ±inf encode as ``null``, as :func:`~streamlog.items.normalize` stores them; an
    int beyond ±2**53 or a ``-0.0`` (stored as ``0.0``) sends the batch the general way.
    """
    if type(items) is not list or not items:
        return None
    if len(items) == 1:  # append(): no batch machinery
        one = encode_plain_one(items[0])
        return None if one is None else [one]
    if (set(map(type, items)) != {dict} or not all(map(_good_keys.issuperset, items))
          or not _PLAIN.issuperset(map(type, chain.from_iterable(map(dict.values, items))))):
        return None
    dumps = orjson.dumps
    try:
        out = [dumps(item, option=_PLAIN_OPTIONS) for item in items]
    except TypeError:  # an int beyond 53 bits, a lone surrogate: the general path says
        return None
    joined = b"".join(out)
    if (b"-0.0" in joined and (b"-0.0," in joined or b"-0.0}" in joined)) or max(map(len, out)) > MAX_ITEM_BYTES:
        return None  # one scan in the common case; a -0.0 value (or such text in a string) is looked at closer
    return out


def plain_documents(items: list[dict], encoded: list[bytes]) -> list[dict]:
    """The canonical form of flat plain items that :func:`encode_plain` encoded: the items
    themselves, except one whose encoding holds a ``null`` (a ``None`` — or a NaN or ±inf,
    stored as ``None``), which is decoded from its encoding (floats round-trip exactly)."""
    loads = orjson.loads
    return [loads(row) if b"null" in row else item for item, row in zip(items, encoded, strict=True)]


def prepare(items: Any, nested_arrays: bool, documents: bool) -> tuple[list[dict], list[bytes]]:
    """Checked items in their canonical form, and their stored encodings: flat plain items
    by :func:`encode_plain` (``documents``: the caller stores the documents too, so they
    get their canonical form, :func:`plain_documents`), anything else by
    :func:`normalize_many` and :func:`encode_many` (which say what is wrong)."""
    encoded = encode_plain(items)
    if encoded is not None:
        return (plain_documents(items, encoded) if documents else items), encoded
    normalized = normalize_many(items, nested_arrays)
    return normalized, encode_many(normalized, MAX_ITEM_BYTES)


def encode_plain_one(item: Any) -> bytes | None:
    """:func:`encode_plain` of one item (``Stream.append``): its encoding, or None."""
    if type(item) is not dict or not _good_keys.issuperset(item):
        return None
    values = item.values()
    if not _PLAIN.issuperset(map(type, values)):
        return None
    try:
        out = orjson.dumps(item, option=_PLAIN_OPTIONS)
    except TypeError:  # an int beyond 53 bits, a lone surrogate: the general path says
        return None
    # -0.0 == 0.0: only an item with a zero value can hold a -0.0 (stored as 0.0)
    if (0.0 in values and (b"-0.0," in out or b"-0.0}" in out)) or len(out) > MAX_ITEM_BYTES:
        return None
    return out
