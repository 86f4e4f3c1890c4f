"""Which stream, group and model names streamlog accepts.

Names become parts of MongoDB collection names and of composite keys, so they are
restricted to a portable alphabet: letters, digits, ``_``, ``-``, ``.`` and ``:``,
starting with a letter, digit or ``_``, at most 200 characters. (``<name>.dead``,
the dead-letter stream, is therefore always a valid name too.)
"""

from __future__ import annotations

import re

from .errors import BadNameError

MAX_LENGTH = 200
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]*")


def check_name(name: object, what: str = "stream") -> str:
    """Return ``name`` if it is a valid name, else raise :class:`BadNameError`."""
    if not isinstance(name, str):
        raise BadNameError(f"a {what} name must be a string, not {type(name).__name__}")
    if not name or len(name) > MAX_LENGTH or not _NAME.fullmatch(name) or name.endswith("."):
        raise BadNameError(
            f"invalid {what} name {name!r}: use 1-{MAX_LENGTH} letters, digits, '_', '-', '.', ':' "
            "(starting with a letter, digit or '_', not ending with '.')"
        )
    return name
