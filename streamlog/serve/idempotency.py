"""``Idempotency-Key``: a request that is retried (the client timed out and sent it again)
appends nothing new and gets the first request's offsets.

The key is arbitrated by the store (:meth:`~streamlog.store.base.Store.append_once`):
on the embedded backend the key's row and the items are one transaction; on MongoDB a
unique insert of the key's first attempt decides which request appends, across any
number of server processes, and a request whose process died is taken over without
storing its items twice. Keys are remembered per stream for 24 hours
(:data:`~streamlog.store.base.KEY_WINDOW_MS`) from their first use; expired keys are
pruned as requests come.

A key sent again with a *different* body is refused (409): the body's SHA-256 is stored
with the key. A retry that arrives while the first request is still appending waits for
it (up to :data:`WAIT` seconds; then 409 with ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import re

from ..store.base import Once
from .responses import APIError

HEADER = "idempotency-key"
MAX_KEY = 255
WAIT = 30.0  # seconds a retry waits for a concurrent first request before 409
REPLAYED = "Idempotent-Replayed"  # response header on an answer from the key's record
_KEY = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_KEY)


def check_key(raw: str | None) -> str | None:
    """The key of a request (None: none sent); 400 unless 1-255 printable ASCII characters."""
    if raw is None:
        return None
    if not _KEY.fullmatch(raw):
        raise APIError(400, f"Idempotency-Key must be 1-{MAX_KEY} printable ASCII characters without spaces")
    return raw


def digest(body: bytes) -> str:
    """The fingerprint stored with a key: the request body's SHA-256."""
    return hashlib.sha256(body).hexdigest()


def outcome(once: Once, key: str, body_digest: str) -> tuple[list[int], bool]:
    """``(offsets, replayed)`` of an :meth:`append_once`, or the 409 it means."""
    if once.busy:
        raise APIError(409, f"a request with Idempotency-Key {key!r} is still being appended; retry",
                       {"Retry-After": "1"})
    if not once.appended and once.digest != body_digest:
        raise APIError(409, f"Idempotency-Key {key!r} was already used with a different body")
    return once.offsets, not once.appended
