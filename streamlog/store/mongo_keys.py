"""Idempotency keys in the MongoDB backend: ``append_once`` (:class:`MongoKeys`, part of
:class:`~streamlog.store.mongo.MongoStore`) on the ``idempotency`` collection.

One document per attempt at a keyed batch, ``_id`` ``"<stream>/<attempt>/<key>"``, with
``s``, ``k``, ``a`` (stream, key, attempt), ``digest`` (the batch's), ``owner``, ``token``
(the batch token its items carry), ``last`` (an offset below the batch: the newest offset
before the append, or the producer's cached one, verified as :meth:`MongoStore._append`
trusts it), ``lease`` and ``created``.

**The common case is one extra round trip**: the request inserts attempt 1 of the key
straight away (a unique ``_id``: this insert decides which request appends) and appends
the batch under the attempt's token; the offset bound ``last`` comes from the producer's
cached offset, which the append needs anyway. Nothing is written when it is done: a batch
is complete when its attempts' items — documents after each attempt's ``last`` that carry
its token, a prefix of the batch per attempt, in order — number as many as the batch.

Only a request whose insert meets the key looks its attempts up: another batch under the
key is refused (digest), a complete batch is replayed (its items' offsets), a batch still
being appended is waited for while its attempt's lease is live; once the lease lapses (its
process died) the next attempt is inserted (unique again) and its owner appends only what
the dead attempts did not store, so each item of the batch is stored once. Every update is
to a document that only its owner writes. The lease is short and renewed by the owner's
process while it appends, and an owner that cannot renew stops before its lease lapses
(:mod:`streamlog.store.keylease`: the lease, the renewals, the fence). Documents of earlier
versions may carry ``state: "done"`` and ``offsets``; they are still honoured.
"""

from __future__ import annotations

import logging
import random
import time as _time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from ..items import now_ms
from .base import KEY_WINDOW_MS, Once, range_offsets
from .keylease import KEY_LEASE, KeyLeaseLost, KeyLeases
from .mongo_retry import Outage, retried

log = logging.getLogger("streamlog")

#: seconds a cached next offset is trusted as a key's offset bound: the store's own trust
#: (``mongo.OFFSET_CACHE_TTL``; tests/test_idempotency_lease.py checks that they agree)
OFFSET_TRUST = 0.5


class MongoKeys:
    """``append_once`` and ``forget_keys`` of :class:`~streamlog.store.mongo.MongoStore`, on ``idempotency``."""

    if TYPE_CHECKING:  # provided by MongoStore
        _keys: Collection
        _keys_indexed: bool
        _key_leases: KeyLeases

        def _outage(self) -> Outage: ...

        def _items(self, name: str) -> Collection: ...

        _next: dict[str, tuple[int, float]]

        def _read_next(self, name: str) -> int: ...

        def _append(self, name: str, items: list[dict], time: int, encoded: list[bytes] | None, token: int,
                    fence: Callable[[], None] | None = None) -> list[int]: ...

        def _prune_keys_maybe(self, now: int, window_ms: int) -> None: ...

    def _index_keys(self) -> None:
        if not self._keys_indexed:
            self._keys.create_index([("s", 1), ("k", 1)])
            self._keys.create_index([("created", 1)])
            self._keys_indexed = True

    @retried
    def _key_attempts(self, name: str, key: str, cutoff: int) -> list[dict]:
        docs = list(self._keys.find({"s": name, "k": key}).sort("a", 1))
        if docs and docs[0]["created"] < cutoff:  # expired: the key is new again
            self._keys.delete_many({"s": name, "k": key, "created": {"$lt": cutoff}})
            return []
        return docs

    @retried
    def _floor(self, name: str) -> int | None:
        """An offset below every offset an append started now can get (None: below 0): the
        producer's cached next offset while :meth:`_append` trusts it, else the verified last
        offset, cached for the append that follows (no extra round trip either way)."""
        offset, verified = self._next.get(name, (None, 0.0))
        if offset is None or _time.monotonic() - verified > OFFSET_TRUST:
            verified = _time.monotonic()
            offset = self._read_next(name)
            self._next[name] = (offset, verified)
        return offset - 1 if offset else None

    def _reserve_key(self, name: str, key: str, digest: str, attempt: int, created: int) -> dict | None:
        """Insert attempt ``attempt`` of the key; None when another request holds it. The
        monotonic time its lease was computed at is ``doc["sent"]`` (not stored)."""
        last = self._floor(name)
        sent = _time.monotonic()
        doc = {"_id": f"{name}/{attempt}/{key}", "s": name, "k": key, "a": attempt, "digest": digest,
               "owner": uuid.uuid4().hex, "token": random.getrandbits(62), "last": last,
               "lease": now_ms() + int(KEY_LEASE * 1000), "created": created}
        outage = None
        suspect = False  # an earlier try may have been applied before the connection dropped
        while True:
            try:
                self._keys.insert_one(doc)
                return {**doc, "sent": sent}
            except DuplicateKeyError:
                if suspect:
                    found = self._keys.find_one({"_id": doc["_id"]}, {"owner": 1})
                    if found is not None and found.get("owner") == doc["owner"]:
                        return {**doc, "sent": sent}
                return None
            except PyMongoError as exc:
                outage = outage or self._outage()
                outage.wait(exc)
                suspect = True

    @retried
    def _stored_by(self, name: str, attempt: dict, limit: int) -> list[int]:
        """Offsets of the items an attempt stored: after its recorded offset, its token."""
        if limit <= 0:
            return []
        after = attempt.get("last")
        query = {"_id": {"$gt": -1 if after is None else after}, "b": attempt["token"]}
        return [d["_id"] for d in self._items(name).find(query, {"_id": 1}).sort("_id", 1).limit(limit)]

    def _stored(self, name: str, attempts: list[dict], n: int) -> list[int]:
        """The offsets of what the attempts stored of an ``n``-item batch, in batch order."""
        offsets: list[int] = []
        for attempt in attempts:  # each stored a prefix of what the ones before left
            offsets += self._stored_by(name, attempt, n - len(offsets))
        return offsets

    def _renew_key(self, id: str, owner: str, lease: int) -> bool:
        """The owner's renewal of its attempt (no retries: the next one comes in a second);
        False when it is no longer an attempt of ours with a live lease."""
        found = self._keys.update_one({"_id": id, "owner": owner, "lease": {"$gt": now_ms()}},
                                      {"$set": {"lease": lease}})
        return found.matched_count == 1

    def append_once(self, name: str, key: str, digest: str, items: list[dict], time: int,
                    encoded: list[bytes] | None = None, *, window_ms: int = KEY_WINDOW_MS,
                    wait: float = 30.0) -> Once:
        self._index_keys()
        mine = self._reserve_key(name, key, digest, 1, time)  # the common case: a new key
        stored: list[int] = []
        deadline = _time.monotonic() + wait
        delay = 0.005
        while mine is None:  # the key is known: look at its attempts
            seen = now_ms()  # before the read: a lease that had run out by then stays out
            attempts = self._key_attempts(name, key, time - window_ms)
            if not attempts:  # expired (deleted): the key is new again
                stored = []
                mine = self._reserve_key(name, key, digest, 1, time)
                continue
            if attempts[0]["digest"] != digest:
                return Once([], False, attempts[0]["digest"])  # the key was used for another batch
            done = next((a for a in attempts if a.get("state") == "done"), None)  # an earlier version's
            if done is not None:
                return Once(range_offsets(done["offsets"]), False, done["digest"])
            live = attempts[-1]["lease"] > seen
            # read after the lease was seen lapsed, this is final: a lapsed owner stores nothing more
            stored = self._stored(name, attempts, len(items))
            if len(stored) == len(items):
                return Once(stored, False, digest)  # complete: replay it
            if live:  # the first request is appending
                if _time.monotonic() >= deadline:
                    return Once([], False, digest, busy=True)
                _time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            mine = self._reserve_key(name, key, digest, attempts[-1]["a"] + 1, attempts[0]["created"])
            # None: another request took it over, wait for that one
        held = self._key_leases.hold(mine["_id"], mine["owner"], mine["sent"])
        try:
            offsets = stored
            if len(offsets) < len(items):
                rest = len(offsets)
                offsets = offsets + self._append(name, items[rest:], time,
                                                 None if encoded is None else encoded[rest:], mine["token"],
                                                 held.check)
        except KeyLeaseLost as exc:
            log.warning("%s; the next retry with the key stores what is missing", exc)
            return Once([], False, digest, busy=True, lost=True)
        finally:
            self._key_leases.release(held)
        self._prune_keys_maybe(time, window_ms)
        return Once(offsets, True, digest)

    @retried
    def forget_keys(self, older_than: int) -> int:
        return self._keys.delete_many({"created": {"$lt": older_than}}).deleted_count
