"""Turning what a learner is given into numpy arrays, with clear errors.

A learner accepts a window's ``data`` (a list of dicts), one dict, a pandas
DataFrame, or a 2-D array whose columns are the features in order. Lists of dicts
are converted with :func:`operator.itemgetter` straight into numpy: about 40 µs
for 60 items, where building a DataFrame first costs over a millisecond.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import ConsumerError, MissingFieldError


def check_columns(value: Any, what: str) -> list[str]:
    """Validate ``features=`` (a non-empty list of distinct strings; one string is one column)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) and c for c in value):
        raise ConsumerError(f"{what} must be a non-empty list of field names, not {value!r}")
    if len(set(value)) != len(value):
        raise ConsumerError(f"{what} has duplicate field names: {list(value)!r}")
    return list(value)


def _missing_error(owner: str, columns: Sequence[str], available: Iterable[str], where: str) -> MissingFieldError:
    available = [str(a) for a in available]
    missing = [c for c in columns if c not in available]
    names = ", ".join(repr(m) for m in missing)
    s = "s" if len(missing) > 1 else ""
    shown = ", ".join(available) if available else "(none)"
    return MissingFieldError(f"{owner}: no field{s} {names} in {where}; available fields: {shown}")


def _bad_value_error(owner: str, columns: Sequence[str], rows: list, where: str) -> ConsumerError:
    for i, row in enumerate(rows):
        values = row if isinstance(row, tuple) else (row,)
        for column, value in zip(columns, values, strict=False):
            if value is None or isinstance(value, (bool, int, float, np.number)):
                continue
            return ConsumerError(f"{owner}: field {column!r} of {where.replace('the items', f'item {i}')} "
                                 f"is not a number: {value!r}")
    return ConsumerError(f"{owner}: the fields {list(columns)!r} of {where} are not all numbers")


def rows_of(data: Any) -> tuple[list[dict] | None, Any]:
    """Classify learner input: ``(list_of_dicts, None)`` or ``(None, frame_or_array)``."""
    if isinstance(data, dict):
        return [data], None
    if isinstance(data, list) and (not data or isinstance(data[0], dict)):
        return data, None
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):
        return None, data
    if isinstance(data, np.ndarray):
        return None, data
    if isinstance(data, (list, tuple)):  # a list of rows
        return None, np.asarray(data)
    if hasattr(data, "data") and isinstance(data.data, list):  # a Window
        return data.data, None
    raise ConsumerError(f"cannot learn from {type(data).__name__}: give a DataFrame, a list of dicts, "
                        "a dict or a 2-D array")


def matrix(owner: str, data: Any, columns: Sequence[str], where: str = "the items",
           numeric: bool = True) -> np.ndarray:
    """The given columns of ``data`` as a 2-D float array (one row per item).

    Missing fields raise :class:`MissingFieldError` naming them and the available ones;
    non-numbers raise :class:`ConsumerError`. ``None`` becomes NaN. With
    ``numeric=False`` the single column is returned as it is (class labels).
    """
    rows, other = rows_of(data)
    if rows is not None:
        if not rows:
            return np.empty((0, len(columns)))
        getter = itemgetter(*columns)
        if numeric:  # the common case in one pass; anything unusual takes the checked path below
            picked = map(getter, rows)
            try:
                flat = np.fromiter(picked if len(columns) == 1 else chain.from_iterable(picked), float,
                                   len(rows) * len(columns))
                return flat.reshape(len(rows), len(columns))
            except (KeyError, TypeError, ValueError):
                pass
        try:
            values = list(map(getter, rows))
        except KeyError:
            bad = next(r for r in rows if any(c not in r for c in columns))
            raise _missing_error(owner, columns, bad.keys(), where) from None
        except TypeError:
            raise ConsumerError(f"{owner}: every item must be a dict") from None
        if not numeric:
            return np.asarray(values)
        try:
            out = np.array(values, dtype=float)
        except (TypeError, ValueError):
            raise _bad_value_error(owner, columns, values, where) from None
        return out.reshape(len(rows), len(columns))
    if hasattr(other, "columns"):
        missing = [c for c in columns if c not in other.columns]
        if missing:
            raise _missing_error(owner, columns, other.columns, "the frame")
        picked = other[list(columns)]
        if not numeric:
            return picked.iloc[:, 0].to_numpy()
        try:
            return picked.to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            raise ConsumerError(f"{owner}: the columns {list(columns)!r} are not all numeric") from None
    array = np.asarray(other)
    if array.ndim == 1 and len(columns) == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[1] != len(columns):
        raise ConsumerError(f"{owner}: an array must have shape (n, {len(columns)}) for the fields "
                            f"{list(columns)!r}, not {array.shape}")
    if not numeric:
        return array[:, 0]
    try:
        return np.asarray(array, dtype=float)
    except (TypeError, ValueError):
        raise ConsumerError(f"{owner}: the array is not numeric") from None


def single(data: Any) -> bool:
    """Whether ``data`` is one item (a dict), so predictions come back as a scalar."""
    return isinstance(data, dict)
