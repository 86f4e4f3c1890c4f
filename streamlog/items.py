"""What an item may contain, and how it is stored.

An item is a JSON-like ``dict``. :func:`normalize` checks one and converts it to
the canonical form both backends store, so that what ``read()`` returns is the
same whichever backend holds the stream:

============================  ===============================================
given                         stored and returned as
============================  ===============================================
``str``, ``bool``, ``None``   itself
``int`` (and numpy ints)      ``int``; outside the signed 64-bit range: error
``float`` (and numpy floats)  ``float``; NaN and ±inf become ``None``
``datetime`` (pandas too)     timezone-aware UTC ``datetime``, millisecond
                              precision; a naive datetime is taken as UTC
``numpy.datetime64``          as ``datetime``
``dict``                      ``dict`` (keys: ``str``, not starting with
                              ``$``, without ``.`` or NUL)
``list``, ``tuple``,          ``list``
``numpy.ndarray``
pandas ``NA`` / ``NaT``       ``None``
============================  ===============================================

Anything else (bytes, sets, Decimals, arbitrary objects) raises
:class:`~streamlog.errors.BadItemError` naming the offending key path.
"""

from __future__ import annotations

import math
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


def _datetime(value: datetime) -> datetime:
    if type(value) is not datetime:  # pandas.Timestamp and other subclasses: store a plain datetime
        value = datetime(value.year, value.month, value.day, value.hour, value.minute,
                         value.second, value.microsecond, value.tzinfo)
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    # Millisecond precision on every backend (BSON dates hold milliseconds).
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def _key(key: Any, path: str) -> str:
    if not isinstance(key, str):
        raise BadItemError(f"item key {key!r} at {path or 'top level'} is not a string")
    if not key or key[0] == "$" or "." in key or "\x00" in key:
        raise BadItemError(
            f"item key {key!r} at {path or 'top level'} is not allowed (keys must be non-empty "
            "and must not start with '$' or contain '.' or NUL)"
        )
    return str(key)


_good_keys: set[str] = set()  # keys already validated (items repeat their keys); bounded
_GOOD_KEYS_MAX = 10_000


def _mapping(value: Mapping, path: str) -> dict:
    # The hot path of every append: plain keys and scalar values are checked inline
    # (no call per value); anything else goes through _value.
    out = {}
    for key, item in value.items():
        if key not in _good_keys:
            key = _key(key, path)
            if type(key) is str and len(_good_keys) < _GOOD_KEYS_MAX:
                _good_keys.add(key)
        kind = type(item)
        if kind is float:
            out[key] = item if item - item == 0.0 else None  # NaN and ±inf give NaN
        elif kind is str or kind is bool or item is None:
            out[key] = item
        elif kind is int and _INT64_MIN <= item <= _INT64_MAX:
            out[key] = item
        else:
            out[key] = _value(item, f"{path}.{key}" if path else key)
    return out


def _value(value: Any, path: str) -> Any:
    kind = type(value)  # exact-type fast path for the common cases
    if kind is float:
        return value if math.isfinite(value) else None
    if kind in _SCALARS:
        return value
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        raise BadItemError(f"item value at {path or 'top level'} is an integer outside the 64-bit range")
    if kind is dict:
        return _mapping(value, path)
    return _other(value, path)


def _other(value: Any, path: str) -> Any:
    where = path or "top level"
    if isinstance(value, Mapping):
        return _mapping(value, path)
    if isinstance(value, (list, tuple)):
        return [_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, datetime):
        if value != value:  # pandas NaT is a datetime subclass that is unequal to itself
            return None
        return _datetime(value)
    # numpy values can only exist if numpy is imported: no need to import it ourselves.
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic):
        if isinstance(value, np.datetime64):
            if np.isnat(value):
                return None
            micros = int(value.astype("datetime64[us]").astype(np.int64))
            return _datetime(_EPOCH + timedelta(microseconds=micros))
        return _value(value.item(), path)
    if np is not None and isinstance(value, np.ndarray):
        return _value(value.tolist(), path)
    # Subclasses of the plain types (IntEnum, str enums, ...): store the plain value.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _value(int(value), path)
    if isinstance(value, float):
        return _value(float(value), path)
    if isinstance(value, str):
        return str(value)
    if _is_pandas_na(value):
        return None
    if isinstance(value, date):
        raise BadItemError(f"item value at {where} is a date; pass a datetime or an ISO string")
    raise BadItemError(f"item value at {where} has unsupported type {type(value).__name__}")


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
    the first problem.
    """
    if type(item) is not dict and not isinstance(item, Mapping):
        raise BadItemError(f"an item must be a dict, not {type(item).__name__}")
    out = _mapping(item, "")
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
    if hasattr(items, "to_dict") and hasattr(items, "columns"):
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
# JSON encoding (the embedded backend, the CLI, dead letters)

_DATE_TAG = b'"$date"'


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$date": datetime_to_ms(value)}
    raise TypeError(f"unsupported type {type(value).__name__}")


def encode(item: dict) -> bytes:
    """Encode a normalized item as JSON bytes; datetimes become ``{"$date": ms}``.

    ``$``-prefixed keys are never valid in items, so the tag cannot be confused with data.
    """
    return orjson.dumps(item, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


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


def to_jsonable(value: Any) -> Any:
    """Make a returned item printable as plain JSON: datetimes become ISO-8601 strings."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    return value
