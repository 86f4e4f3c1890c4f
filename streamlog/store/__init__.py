"""Store backends behind one contract (:class:`~streamlog.store.base.Store`)."""

from __future__ import annotations

from ..config import connect_timeout, parse_url
from .base import ACTIVE, COMMITTED, DEAD, FAILED, Batch, Claim, Group, Store, StreamRecord

__all__ = ["open_store", "Store", "Batch", "Claim", "Group", "StreamRecord",
           "ACTIVE", "COMMITTED", "DEAD", "FAILED"]


def open_store(url: str, timeout: float | None = None, create: bool = True) -> Store:
    """Open the backend a (resolved) URL names. Raises BadURLError or UnreachableError.

    ``create=False`` (read-only use) never creates anything: an embedded database file
    that does not exist raises :class:`~streamlog.errors.NoDatabaseError`.
    """
    location = parse_url(url)
    if location.kind == "mongodb":
        from .mongo import MongoStore

        return MongoStore(location.url, location.database, timeout=timeout or connect_timeout())
    from .sqlite import SQLiteStore

    return SQLiteStore(location.url, location.path, create=create)
