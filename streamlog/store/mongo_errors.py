"""MongoDB driver errors, classified and described (the MongoDB backend, its bridges and the
command line share them):

* :func:`is_transient` — whether an error means "try again" (a lost connection, no
  server selectable, a server interrupted or shutting down, a retryable write); a
  duplicate key never is;
* :func:`describe_error` — any driver error as one short line, credentials masked;
* :func:`describe_cause` — its cause in a few words (``connection refused``), for
  messages that name the server themselves;
* :func:`servers_of` — the servers of a URL as messages name them (password masked).
"""

from __future__ import annotations

import re

from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, OperationFailure

from ..config import mask_url

# Server errors that mean "try again": interrupted or shutting down, not primary.
_TRANSIENT_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}

# A driver error's text → its cause in a few words (first match wins).
_REASONS = (("connection refused", "connection refused"), ("name or service not known", "unknown host"),
            ("nodename nor servname", "unknown host"), ("name resolution", "host name not resolved"),
            ("no route to host", "no route to host"), ("network is unreachable", "network unreachable"),
            ("timed out", "timed out"), ("certificate verify failed", "TLS certificate rejected"),
            ("ssl", "TLS handshake failed"), ("authentication failed", "authentication failed"))


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a driver error that retrying may cure (see the module docstring)."""
    if isinstance(exc, ConnectionFailure):  # AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
        return True
    if isinstance(exc, OperationFailure) and not isinstance(exc, (DuplicateKeyError, BulkWriteError)):
        return (exc.code in _TRANSIENT_CODES or exc.has_error_label("RetryableWriteError")
                or _interrupted_by_the_server(exc))
    return False


def _interrupted_by_the_server(exc: OperationFailure) -> bool:
    """FerretDB v1 (SQLite handler) now and then cuts a query short with an internal error
    ending in SQLite's ``interrupted (9)`` while a tailable ``getMore`` with ``maxTimeMS``
    (a consumer's wake-up watch) runs beside it: the query did nothing and may be sent again."""
    return exc.code == 1 and "interrupted (9)" in str(exc)


def describe_error(exc: BaseException) -> str:
    """A driver error as one short masked line: its type and the first part of its text,
    without pymongo's timeouts and topology description (``streamlog -v`` prints all of it)."""
    first = re.split(r" \(configured timeouts|, Timeout: |, full error: |\n", str(exc), maxsplit=1)[0].strip()
    if len(first) > 120:
        first = first[:119] + "…"
    return mask_url(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def describe_cause(exc: BaseException) -> str:
    """The cause of a driver error in a few words (``connection refused``), for messages
    that name the server themselves, else :func:`describe_error`."""
    lowered = str(exc).lower()
    for needle, words in _REASONS:
        if needle in lowered:
            return words
    return describe_error(exc)


def servers_of(url: str) -> str:
    """The servers of a (masked) MongoDB URL, for messages: ``alice:***@h1:27017,h2``
    (the user kept, the password masked; no scheme, database or options)."""
    rest = mask_url(url).split("://", 1)[-1]
    user, at, hosts = rest.rpartition("@")
    hosts = re.split(r"[/?]", hosts, maxsplit=1)[0]
    where = f"{user}@{hosts}" if at else hosts
    return where if len(where) <= 80 else where[:79] + "…"
