"""Offsets and counts that a user types — a query parameter, an SSE ``Last-Event-ID``
header, a command-line argument — parsed strictly, in one place.

``int()`` is too lenient for that: it takes ``1_000``, `` 7 ``, ``+7``, ``٣`` (any
Unicode digit) and numbers of any size. Here an offset is plain ASCII decimal digits
and lies in ``0 <= offset < 2**63`` (what both backends store); anything else raises
:class:`BadOffsetError` (a :class:`StreamlogError`, so the HTTP API answers 400 and the
CLI exits 2) naming what was given and what is accepted.
"""

from __future__ import annotations

import re

from .errors import StreamlogError

#: offsets are 0 <= offset < MAX_OFFSET (int64, as both backends store them)
MAX_OFFSET = 2**63
_DIGITS = re.compile(r"[0-9]+")  # ASCII only ("\d" would take any Unicode digit)
_SHOWN = 40  # characters of a bad value quoted back


class BadOffsetError(StreamlogError, ValueError):
    """A typed offset or count that is not plain decimal digits, or out of range."""


def _describe(words: tuple[str, ...], noun: str) -> str:
    quoted = [f"'{w}'" for w in words]
    if not quoted:
        return noun
    return ", ".join([noun, *quoted[:-1]]) + f" or {quoted[-1]}"


def parse_offset(text: object, what: str = "offset", *, words: tuple[str, ...] = (),
                 limit: int = MAX_OFFSET) -> int | str:
    """``text`` as an offset: ASCII decimal digits with ``0 <= value < limit`` (default
    ``2**63``), or one of ``words`` (such as ``"earliest"``, ``"latest"``), returned as is.

    ``what`` names the value in the error (``"start"``, ``"Last-Event-ID"``,
    ``"--from"``). No sign, spaces, underscores, exponent or non-ASCII digit is taken.

    >>> parse_offset("42", "start")
    42
    >>> parse_offset("latest", "start", words=("earliest", "latest"))
    'latest'
    """
    expected = _describe(words, "an offset (decimal digits)")
    if not isinstance(text, str):
        raise BadOffsetError(f"{what} must be {expected}, not {type(text).__name__}")
    if text in words:
        return text
    if not _DIGITS.fullmatch(text):
        raise BadOffsetError(f"{what} must be {expected}, not {text[:_SHOWN]!r}")
    stripped = text.lstrip("0") or "0"
    if len(stripped) > len(str(limit)) or int(stripped) >= limit:
        raise BadOffsetError(f"{what} {text[:_SHOWN]} is out of range: it must be below {limit}")
    return int(stripped)


def parse_count(text: object, what: str = "limit", *, maximum: int | None = None) -> int:
    """``text`` as a count: ASCII decimal digits, ``0 <= value <= maximum`` (default: below
    ``2**63``); else :class:`BadOffsetError`."""
    expected = "a count (decimal digits)"
    if not isinstance(text, str):
        raise BadOffsetError(f"{what} must be {expected}, not {type(text).__name__}")
    if not _DIGITS.fullmatch(text):
        raise BadOffsetError(f"{what} must be {expected}, not {text[:_SHOWN]!r}")
    top = MAX_OFFSET - 1 if maximum is None else maximum
    stripped = text.lstrip("0") or "0"
    if len(stripped) > len(str(top)) or int(stripped) > top:
        raise BadOffsetError(f"{what} {text[:_SHOWN]} is out of range: at most {top}")
    return int(stripped)
