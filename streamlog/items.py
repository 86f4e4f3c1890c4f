"""What an item may contain, and how it is stored.

An item is a JSON-like ``dict``. :func:`normalize` checks one and converts it to
the canonical form both backends store, so that what ``read()`` returns is the
same whichever backend holds the stream:

============================  ===============================================
given                         stored and returned as
============================  ===============================================
``str``, ``bool``, ``None``   itself (numpy ``str_`` / ``bool_``: ``str`` /
                              ``bool``); a lone surrogate (``"\\ud800"``,
                              not valid UTF-8) in a value or a key: error
``int`` (and numpy ints)      ``int``, always a plain ``int`` (never a
                              ``float``); outside the signed 64-bit range:
                              error
``float`` (and numpy floats,  ``float`` (64-bit); NaN and ±inf become
``longdouble`` included)      ``None``; ``-0.0`` becomes ``0.0`` (the sign of
                              zero is not kept); a finite numpy float beyond
                              the 64-bit range: error
``datetime`` (pandas too)     timezone-aware UTC ``datetime``, millisecond
                              precision; a naive datetime is taken as UTC;
                              one outside years 1..9999 once in UTC: error
``numpy.datetime64``          as ``datetime``
``dict``                      ``dict`` (keys: ``str``, not starting with
                              ``$``, without ``.`` or NUL)
``list``, ``tuple``,          ``list``
``numpy.ndarray``
pandas ``NA`` / ``NaT``       ``None``
============================  ===============================================

Limits, the same on every backend:

* **nesting**: at most :data:`MAX_DEPTH` (64) levels of containers, the item itself
  being level 1 (``{"a": [1]}`` has two);
* **size**: at most :data:`MAX_ITEM_BYTES` (1 MiB, 1,048,576 bytes) of the item's
  canonical JSON encoding (:func:`encode`; checked by :func:`encode_many`).

Anything else (bytes, sets, Decimals, complex numbers, other numpy scalars, arbitrary
objects) raises :class:`~streamlog.errors.BadItemError`, one line naming the item
(``item 3: ...`` in a batch) and the offending key path. ``Stream.append`` and
``extend`` run :func:`normalize_many` then :func:`encode_many` before writing anything.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

import orjson

from .errors import BadItemError

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SCALARS = (str, bool, type(None))
_SURROGATE = re.compile("[\ud800-\udfff]")

MAX_DEPTH = 64
"""Levels of containers (dicts and lists) an item may have; the item itself is level 1."""

MAX_ITEM_BYTES = 1_048_576
"""The largest item, in bytes of its canonical JSON encoding (:func:`encode`): 1 MiB."""


def now_ms() -> int:
    """The current UTC time as integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int) -> datetime:
    """Exact inverse of :func:`datetime_to_ms` (aware UTC)."""
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(value: datetime) -> int:
    """Milliseconds since the epoch, exact (integer arithmetic), naive taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MS


def _where(path: str) -> str:
    return path or "top level"


def _datetime(value: datetime, path: str) -> datetime:
    try:
        if type(value) is not datetime:  # pandas.Timestamp and other subclasses: store a plain datetime
            value = datetime(value.year, value.month, value.day, value.hour, value.minute,
                             value.second, value.microsecond, value.tzinfo)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. 0001-01-01 at UTC+5 is in year 0 in UTC
        raise BadItemError(f"item value at {_where(path)} is a datetime out of range (it must fall in "
                           "years 1..9999 once converted to UTC)") from None
    # Millisecond precision on every backend (BSON dates hold milliseconds).
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def _key(key: Any, path: str) -> str:
    if not isinstance(key, str):
        raise BadItemError(f"item key {key!r} at {_where(path)} is not a string")
    if not key or key[0] == "$" or "." in key or "\x00" in key:
        raise BadItemError(
            f"item key {key!r} at {_where(path)} is not allowed (keys must be non-empty "
            "and must not start with '$' or contain '.' or NUL)"
        )
    if not key.isascii() and _SURROGATE.search(key):
        raise BadItemError(f"item key {key!r} at {_where(path)} has a lone surrogate (not valid UTF-8)")
    return str(key)


_good_keys: set[str] = set()  # keys already validated (items repeat their keys); bounded
_GOOD_KEYS_MAX = 10_000


def _too_deep(path: str) -> BadItemError:
    return BadItemError(f"item value at {_where(path)} is nested more than {MAX_DEPTH} levels deep "
                        "(dicts and lists)")


def _mapping(value: Mapping, path: str, level: int) -> dict:
    # The hot path of every append: plain keys and scalar values are checked inline
    # (no call per value); anything else goes through _value. ``level`` is this dict's
    # nesting level (the item itself: 1).
    if level > MAX_DEPTH:
        raise _too_deep(path)
    out = {}
    for key, item in value.items():
        if key not in _good_keys:
            key = _key(key, path)
            if type(key) is str and len(_good_keys) < _GOOD_KEYS_MAX:
                _good_keys.add(key)
        kind = type(item)
        if kind is float:
            # NaN and ±inf give NaN (-> None); -0.0 is falsy (-> 0.0)
            out[key] = (item or 0.0) if item - item == 0.0 else None
        elif kind is str or kind is bool or item is None:
            out[key] = item
        elif kind is int and _INT64_MIN <= item <= _INT64_MAX:
            out[key] = item
        else:
            out[key] = _value(item, f"{path}.{key}" if path else key, level)
    return out


def _list(value: Any, path: str, level: int) -> list:
    if level > MAX_DEPTH:
        raise _too_deep(path)
    return [_value(v, f"{path}[{i}]", level) for i, v in enumerate(value)]


def _value(value: Any, path: str, level: int) -> Any:
    """``value`` found at ``path`` inside a container at nesting ``level``."""
    kind = type(value)  # exact-type fast path for the common cases
    if kind is float:
        return (value or 0.0) if value - value == 0.0 else None
    if kind in _SCALARS:
        return value
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        raise BadItemError(f"item value at {_where(path)} is an integer outside the 64-bit range")
    if kind is dict:
        return _mapping(value, path, level + 1)
    if kind is list:
        return _list(value, path, level + 1)
    return _other(value, path, level)


def _other(value: Any, path: str, level: int) -> Any:
    where = _where(path)
    if isinstance(value, Mapping):
        return _mapping(value, path, level + 1)
    if isinstance(value, (list, tuple)):
        return _list(value, path, level + 1)
    if isinstance(value, datetime):
        if value != value:  # pandas NaT is a datetime subclass that is unequal to itself
            return None
        return _datetime(value, path)
    # numpy values can only exist if numpy is imported: no need to import it ourselves.
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic):
        return _numpy_scalar(np, value, path, level)
    if np is not None and isinstance(value, np.ndarray):
        kind = value.dtype.kind
        if kind not in "biufUMO":  # no bytes, void, complex or timedelta arrays
            raise BadItemError(f"item value at {where} is a numpy array of unsupported dtype {value.dtype}")
        if kind == "M":  # tolist() would give ints (ns) or dates (D): convert element by element
            return _value(value[()], path, level) if value.ndim == 0 else _list(list(value), path, level + 1)
        return _value(value.tolist(), path, level)
    # Subclasses of the plain types (IntEnum, str enums, ...): store the plain value.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _value(int(value), path, level)
    if isinstance(value, float):
        return _value(float(value), path, level)
    if isinstance(value, str):
        return str(value)
    if _is_pandas_na(value):
        return None
    if isinstance(value, date):
        raise BadItemError(f"item value at {where} is a date; pass a datetime or an ISO string")
    raise BadItemError(f"item value at {where} has unsupported type {type(value).__name__}")


_COARSER_THAN_US = frozenset(("Y", "M", "W", "D", "h", "m", "s", "ms"))


def _numpy_scalar(np: Any, value: Any, path: str, level: int) -> Any:
    """A numpy scalar, converted explicitly by kind (never through ``.item()``, which
    returns numpy objects for ``longdouble`` and the like)."""
    if isinstance(value, np.floating):
        number = float(value)
        if number - number != 0.0 and np.isfinite(value):
            raise BadItemError(f"item value at {_where(path)} is a {type(value).__name__} beyond the "
                               "64-bit float range")
        return _value(number, path, level)
    if isinstance(value, np.bool_):  # before np.integer: not a subclass of it, but be explicit
        return bool(value)
    if isinstance(value, np.integer) and not isinstance(value, np.timedelta64):  # (a subclass)
        return _value(int(value), path, level)
    if isinstance(value, np.str_):
        return _value(str(value), path, level)
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return None
        micros = value.astype("datetime64[us]")
        if np.datetime_data(value.dtype)[0] in _COARSER_THAN_US and micros.astype(value.dtype) != value:
            micros = None  # the conversion to microseconds overflowed
        try:
            if micros is None:
                raise OverflowError
            return _datetime(_EPOCH + timedelta(microseconds=int(micros.astype(np.int64))), path)
        except OverflowError:
            raise BadItemError(f"item value at {_where(path)} is a datetime64 out of range (years "
                               "1..9999)") from None
    raise BadItemError(f"item value at {_where(path)} has unsupported type numpy.{type(value).__name__}")


def _is_pandas_na(value: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and (value is pd.NA or value is pd.NaT)


def _nested_array(value: Any, path: str, in_list: bool) -> str | None:
    if type(value) is list:
        if in_list:
            return path
        for i, v in enumerate(value):
            found = _nested_array(v, f"{path}[{i}]", True)
            if found:
                return found
    elif type(value) is dict:
        for k, v in value.items():
            found = _nested_array(v, f"{path}.{k}" if path else k, False)
            if found:
                return found
    return None


def nested_array_path(value: Any) -> str | None:
    """The key path of the first list directly inside a list in ``value``, or None."""
    return _nested_array(value, "", False)


def normalize(item: Any, nested_arrays: bool = True) -> dict:
    """Check one item and return its canonical stored form (a new dict).

    ``nested_arrays=False`` also rejects a list directly inside a list, for servers that
    cannot store one (FerretDB v1). Raises :class:`BadItemError` with the key path of
    the first problem. The size limit and the UTF-8 validity of string values are
    checked by :func:`encode_many` (one encoding per item, which the store needs anyway).
    """
    if type(item) is not dict and not isinstance(item, Mapping):
        raise BadItemError(f"an item must be a dict, not {type(item).__name__}")
    out = _mapping(item, "", 1)
    if not nested_arrays:
        found = nested_array_path(out)
        if found:
            raise BadItemError(f"item value at {found} is a list inside a list, which this server "
                               "(FerretDB) cannot store")
    return out


def normalize_many(items: Iterable[Any], nested_arrays: bool = True) -> list[dict]:
    """Normalize a batch; a pandas DataFrame is taken row by row.

    All-or-nothing: the first bad item raises (naming its position) before any is returned.
    """
    if type(items) is list:
        pass  # the common case: no DataFrame or Mapping checks
    elif hasattr(items, "to_dict") and hasattr(items, "columns"):
        items = items.to_dict("records")
    elif isinstance(items, Mapping):
        raise BadItemError("extend() takes a list of items; use append() for a single dict")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(normalize(item, nested_arrays))
        except BadItemError as exc:
            raise BadItemError(f"item {i}: {exc}") from None
    return out


# ---------------------------------------------------------------------------
# JSON encoding (the embedded backend, the size limit, the CLI, dead letters)

_DATE_TAG = b'"$date"'
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$date": datetime_to_ms(value)}
    raise TypeError(f"unsupported type {type(value).__name__}")


def encode(item: dict) -> bytes:
    """Encode a normalized item as JSON bytes; datetimes become ``{"$date": ms}``.

    ``$``-prefixed keys are never valid in items, so the tag cannot be confused with data.
    Raises ``TypeError`` for what cannot be encoded (:func:`encode_many` says why and where).
    """
    return orjson.dumps(item, default=_json_default, option=_OPTIONS)


def encode_many(items: list[dict], limit: int = MAX_ITEM_BYTES) -> list[bytes]:
    """Encode normalized items with :func:`encode`, checking what only encoding can tell.

    Raises :class:`BadItemError` naming the item (``item 3: ...``) when one is over
    ``limit`` bytes encoded (:data:`MAX_ITEM_BYTES`, 1 MiB, unless given), or cannot be
    encoded at all (a string with a lone surrogate, which is not valid UTF-8), with the
    key path of the problem. Costs one ``orjson.dumps`` per item, whose output the
    embedded store keeps.
    """
    dumps, default = orjson.dumps, _json_default
    try:
        out = [dumps(item, default=default, option=_OPTIONS) for item in items]
    except TypeError:  # orjson.JSONEncodeError; slow path: find the item and the place
        for i, item in enumerate(items):
            try:
                dumps(item, default=default, option=_OPTIONS)
            except TypeError as exc:
                raise BadItemError(f"item {i}: {_unencodable(item, str(exc))}") from None
        raise  # pragma: no cover  (the batch failed, so one item does)
    if out and max(map(len, out)) > limit:
        what = "the 1 MiB limit" if limit == MAX_ITEM_BYTES else "the limit"
        for i, raw in enumerate(out):
            if len(raw) > limit:
                raise BadItemError(f"item {i}: the item is {len(raw)} bytes encoded, over {what} "
                                   f"of {limit} bytes")
    return out


def _unencodable(item: Any, reason: str) -> str:
    """Why ``item`` cannot be encoded, naming the key path (the error case only)."""
    found = _find_unencodable(item, "", 1)
    return found or f"the item cannot be encoded as JSON ({reason})"


def _find_unencodable(value: Any, path: str, level: int) -> str | None:
    if type(value) is str:
        if _SURROGATE.search(value):
            return f"item value at {_where(path)} is a string with a lone surrogate (not valid UTF-8)"
        return None
    if isinstance(value, Mapping) or isinstance(value, list):
        if level > MAX_DEPTH:
            return f"item value at {_where(path)} is nested more than {MAX_DEPTH} levels deep (dicts and lists)"
        if isinstance(value, list):
            children = ((f"{path}[{i}]", v) for i, v in enumerate(value))
        else:
            for key in value:
                if not isinstance(key, str):
                    return f"item key {key!r} at {_where(path)} is not a string"
                if _SURROGATE.search(key):
                    return f"item key {key!r} at {_where(path)} has a lone surrogate (not valid UTF-8)"
            children = ((f"{path}.{k}" if path else k, v) for k, v in value.items())
        for child_path, child in children:
            found = _find_unencodable(child, child_path, level + 1)
            if found:
                return found
        return None
    if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
        return f"item value at {_where(path)} is an integer outside the 64-bit range"
    if value is None or type(value) in (bool, int, float, datetime):
        return None
    return f"item value at {_where(path)} has unsupported type {type(value).__name__} (not normalized)"


def _untag(value: Any) -> Any:
    if type(value) is dict:
        if len(value) == 1 and "$date" in value:
            return ms_to_datetime(value["$date"])
        return {k: _untag(v) for k, v in value.items()}
    if type(value) is list:
        return [_untag(v) for v in value]
    return value


def decode(raw: bytes | str) -> dict:
    """Inverse of :func:`encode` (round trip: ``decode(encode(normalize(x)))`` equals ``normalize(x)``)."""
    value = orjson.loads(raw)
    if (_DATE_TAG in raw) if isinstance(raw, bytes) else ('"$date"' in raw):
        return _untag(value)
    return value


def decode_many(raws: list) -> list[dict]:
    """:func:`decode` of every stored form in ``raws``, parsed as one JSON array: one
    parser call for a whole read instead of one per item."""
    try:
        joined = b",".join(raws)
    except TypeError:  # text rows (databases written by early versions): one at a time
        return [decode(raw) for raw in raws]
    values = orjson.loads(b"[" + joined + b"]")
    if _DATE_TAG in joined:
        return [_untag(v) if _DATE_TAG in raw else v for raw, v in zip(raws, values, strict=True)]
    return values


def to_jsonable(value: Any) -> Any:
    """Make a returned item printable as plain JSON: datetimes become ISO-8601 strings."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    return value


def fingerprint(items: list[dict]) -> str:
    """The SHA-256 (hex) of normalized items' JSON with sorted keys: equal for the same
    items however they were serialised or their keys ordered (idempotency keys store it)."""
    import hashlib

    text = orjson.dumps(items, default=_json_default, option=_OPTIONS | orjson.OPT_SORT_KEYS)
    return hashlib.sha256(text).hexdigest()
