"""Which stream, group and model names streamlog accepts.

Names become parts of MongoDB collection names and of composite keys, so they are
restricted to a portable alphabet: letters, digits, ``_``, ``-``, ``.`` and ``:``,
starting with a letter, digit or ``_``, at most 200 characters.

Every stream has a dead-letter stream, :func:`dead_letter_stream`: ``<name>.dead``,
shortened with a hash where that would pass the length limit, so it is always a
valid name.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from typing import Iterable

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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the choice closest to ``word`` (a mistyped stream,
    group, option or key), or "" when none is close. For error paths only."""
    close = difflib.get_close_matches(word, [c for c in choices if c != word], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


DEAD_SUFFIX = ".dead"


def dead_letter_stream(name: str) -> str:
    """The stream that receives ``name``'s dead letters: ``<name>.dead``.

    For names within 5 characters of the limit the result is the name cut short plus
    ``-`` and 8 hex digits of its SHA-256 before ``.dead``: still unique in practice,
    deterministic, and always a valid name.
    """
    dead = name + DEAD_SUFFIX
    if len(dead) <= MAX_LENGTH:
        return dead
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:MAX_LENGTH - len(DEAD_SUFFIX) - 9]}-{digest}{DEAD_SUFFIX}"


MAX_KEY_LENGTH = 255
_KEY = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_KEY_LENGTH)


def check_idempotency_key(key: object) -> str:
    """An idempotency key: 1-255 printable ASCII characters without spaces (the shape an
    HTTP ``Idempotency-Key`` header can carry), else :class:`BadNameError`."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise BadNameError(f"an idempotency key must be 1-{MAX_KEY_LENGTH} printable ASCII characters "
                           f"without spaces, not {str(key)[:40]!r}")
    return key
