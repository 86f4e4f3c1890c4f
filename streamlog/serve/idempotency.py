"""``Idempotency-Key``: a request that is retried (the client timed out and sent it again)
appends nothing new and gets the first request's offsets.

The key is arbitrated by the store (:meth:`~streamlog.store.base.Store.append_once`):
on the embedded backend the key's row and the items are one transaction; on MongoDB a
unique insert of the key's first attempt decides which request appends, across any
number of server processes, and a request whose process died is taken over without
storing its items twice — at most 5 s after its death: the key's lease is short and the
appending process renews it every second (:mod:`streamlog.store.keylease`). Keys are
remembered per stream for 24 hours (:data:`~streamlog.store.base.KEY_WINDOW_MS`) from
their first use; expired keys are pruned as requests come.

A key sent again with *other items* is refused (409): the SHA-256 of the items' JSON with
sorted keys is stored with the key (so a retry that re-serialises the same items, with
other spacing or key order, is still recognised). Built on :meth:`Stream.extend_once`. A
retry that arrives while the first request is still appending waits for it (up to
:data:`WAIT` seconds; then 409 with ``Retry-After``).
"""

from __future__ import annotations

from ..errors import BadNameError, IdempotencyError, KeyBusyError
from ..names import check_idempotency_key
from .responses import APIError

HEADER = "idempotency-key"
WAIT = 30.0  # seconds a retry waits for a concurrent first request before 409
REPLAYED = "Idempotent-Replayed"  # response header on an answer from the key's record


def check_key(raw: str | None) -> str | None:
    """The key of a request (None: none sent); 400 unless 1-255 printable ASCII characters."""
    if raw is None:
        return None
    try:
        return check_idempotency_key(raw)
    except BadNameError as exc:
        raise APIError(400, f"Idempotency-Key: {exc}") from None


def conflict(exc: IdempotencyError) -> APIError:
    """409 for a key reused with other items, or still being appended (with Retry-After)."""
    return APIError(409, str(exc), {"Retry-After": "1"} if isinstance(exc, KeyBusyError) else None)
