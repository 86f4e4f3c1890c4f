"""The Kafka source's fast path into a store that keeps only the items' encoding (the
embedded SQLite backend): :func:`encode_batch` encodes a batch of messages straight into
the stored form of their items, :func:`append_encoded` appends it.

It takes the common case only: every message without headers and with a value that is a
flat JSON object of plain values (``str``, ``int``, ``float``, ``bool``, ``null``) under
keys the log has already checked once — the values are checked and encoded by
:func:`streamlog.plain.encode_plain` (the check ``Stream.extend`` itself uses for flat
items), the envelope around them is fixed. The bytes are those ``Stream.extend`` would
store for :func:`~.messages.to_item`'s items (``tests/test_bridge_kafka.py`` compares
them), at a fraction of the cost: no item dicts built and then walked again. Any other
batch (a value that is text, binary, nested, an integer beyond 2**53, a header, a key
that is not UTF-8, an item over 1 MiB): None, and the source takes ``Stream.extend``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...items import MAX_ITEM_BYTES, now_ms
from ...lines import _DIGITS, _LONG_RUN  # json_value's rule for integers beyond 64 bits
from ...plain import encode_plain
from .messages import ORIGIN


def fast_path(stream) -> bool:
    """Whether ``stream``'s store keeps the items' encoding only (then the fast path applies)."""
    return stream.store.encoded_only


def encode_batch(messages: list[Any], value_only: bool) -> list[bytes] | None:
    """The stored encoding of each message's item (module docstring), or None when the
    batch is not the common case."""
    raws = [m.value() for m in messages]
    if None in raws or any(m.headers() is not None for m in messages):
        return None
    # json_value's rule, once per batch: a run of 19+ digits may be an integer orjson
    # would read as a float; the general path reads it exactly (and refuses it)
    if b" ".join(raws).translate(_DIGITS).find(_LONG_RUN) >= 0:
        return None
    try:
        values = list(map(orjson.loads, raws))
    except orjson.JSONDecodeError:  # not JSON: text or base64, the general path
        return None
    if value_only and any(type(v) is dict and ORIGIN in v for v in values):
        return None
    encoded = encode_plain(values)  # None unless every value is a flat dict of plain values
    if encoded is None:
        return None
    topics: dict[str, bytes] = {}
    out = []
    for m, value in zip(messages, encoded, strict=True):
        name = m.topic()
        topic = topics.get(name)
        if topic is None:
            topic = topics[name] = orjson.dumps(name)
        if value_only:
            origin = b'"%s":{"topic":%s,"partition":%d,"offset":%d}}' % (ORIGIN.encode(), topic, m.partition(),
                                                                         m.offset())
            out.append(value[:-1] + (b"," + origin if len(value) > 2 else origin))
            continue
        raw_key = m.key()
        if raw_key is None:
            key = b"null"
        else:
            try:
                key = orjson.dumps(raw_key.decode("utf-8"))
            except UnicodeDecodeError:  # base64, with "key_encoding": the general path
                return None
        kind, ms = m.timestamp()
        stamp = b'{"$date":%d}' % ms if kind and ms >= 0 else b"null"
        out.append(b'{"topic":%s,"partition":%d,"offset":%d,"key":%s,"value":%s,"headers":{},"timestamp":%s}'
                   % (topic, m.partition(), m.offset(), key, value, stamp))
    if max(map(len, out)) > MAX_ITEM_BYTES:
        return None
    return out


def append_encoded(stream, encoded: list[bytes]) -> list[int]:
    """Append items given as their stored encoding (from :func:`encode_batch`) to
    ``stream``, as ``Stream.extend`` does after its checks: one store call, then the
    stream's retention."""
    offsets = stream.store.append(stream.name, encoded, now_ms(), encoded)
    stream._retain_maybe()
    return offsets
