"""Idempotency keys in the MongoDB backend: ``append_once`` (:class:`MongoKeys`, part of
:class:`~streamlog.store.mongo.MongoStore`) on the ``idempotency`` collection.

One document per attempt at a keyed batch, ``_id`` ``"<stream>/<attempt>/<key>"``, with
``s``, ``k``, ``a`` (stream, key, attempt), ``digest`` (the batch's), ``owner``, ``token``
(the batch token its items carry), ``last`` (the newest offset before the append),
``lease``, ``state`` (``pending``, then ``done``), ``offsets`` (once done) and ``created``.
The unique insert of attempt 1 decides which request appends. Another request with the
key waits for ``done``; if the attempt's lease lapses first (its process died), the next
attempt is inserted (unique again) and its owner finds the items the dead attempts stored —
documents after their recorded offset that carry their token, a prefix of the batch — and
appends only the rest, so each item of the batch is stored once. Every update is to a
document that only its owner writes. The lease is short and renewed by the owner's process
while it appends, and an owner that cannot renew stops before its lease lapses
(:mod:`streamlog.store.keylease`: the lease, the renewals, the fence).
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
from .base import KEY_WINDOW_MS, Once, offset_ranges, range_offsets
from .keylease import KEY_LEASE, KeyLeaseLost, KeyLeases
from .mongo_retry import Outage, retried

log = logging.getLogger("streamlog")


class MongoKeys:
    """``append_once`` and ``forget_keys`` of :class:`~streamlog.store.mongo.MongoStore`, on ``idempotency``."""

    if TYPE_CHECKING:  # provided by MongoStore
        _keys: Collection
        _keys_indexed: bool
        _key_leases: KeyLeases

        def _outage(self) -> Outage: ...

        def _items(self, name: str) -> Collection: ...

        def last_offset(self, name: str) -> int | None: ...

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

    def _reserve_key(self, name: str, key: str, digest: str, attempt: int, created: int) -> dict | None:
        """Insert attempt ``attempt`` of the key; None when another request holds it. The
        monotonic time its lease was computed at is ``doc["sent"]`` (not stored)."""
        last = self.last_offset(name)
        sent = _time.monotonic()
        doc = {"_id": f"{name}/{attempt}/{key}", "s": name, "k": key, "a": attempt, "digest": digest,
               "owner": uuid.uuid4().hex, "token": random.getrandbits(62), "last": last,
               "lease": now_ms() + int(KEY_LEASE * 1000), "state": "pending",
               "offsets": None, "created": created}
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
        """Offsets of the items a (lapsed) attempt stored: after its recorded offset, its token."""
        after = attempt.get("last")
        query = {"_id": {"$gt": -1 if after is None else after}, "b": attempt["token"]}
        return [d["_id"] for d in self._items(name).find(query, {"_id": 1}).sort("_id", 1).limit(limit)]

    def _renew_key(self, id: str, owner: str, lease: int) -> bool:
        """The owner's renewal of its attempt (no retries: the next one comes in a second);
        False when it is no longer a pending attempt of ours with a live lease."""
        found = self._keys.update_one({"_id": id, "owner": owner, "state": "pending", "lease": {"$gt": now_ms()}},
                                      {"$set": {"lease": lease}})
        return found.matched_count == 1

    @retried
    def _finish_key(self, doc: dict, offsets: list[int]) -> None:
        self._keys.update_one({"_id": doc["_id"]},
                              {"$set": {"state": "done", "offsets": offset_ranges(offsets), "lease": 0}})

    def append_once(self, name: str, key: str, digest: str, items: list[dict], time: int,
                    encoded: list[bytes] | None = None, *, window_ms: int = KEY_WINDOW_MS,
                    wait: float = 30.0) -> Once:
        self._index_keys()
        deadline = _time.monotonic() + wait
        delay = 0.005
        while True:
            attempts = self._key_attempts(name, key, time - window_ms)
            if attempts and attempts[0]["digest"] != digest:
                return Once([], False, attempts[0]["digest"])  # the key was used for another batch
            done = next((a for a in attempts if a["state"] == "done"), None)
            if done is not None:
                return Once(range_offsets(done["offsets"]), False, done["digest"])
            if attempts and attempts[-1]["lease"] > now_ms():  # the first request is appending
                if _time.monotonic() >= deadline:
                    return Once([], False, digest, busy=True)
                _time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            mine = self._reserve_key(name, key, digest, attempts[-1]["a"] + 1 if attempts else 1,
                                     attempts[0]["created"] if attempts else time)
            if mine is None:
                continue  # another request took it: wait for that one
            held = self._key_leases.hold(mine["_id"], mine["owner"], mine["sent"])
            try:
                offsets: list[int] = []
                for lapsed in attempts:  # their items are a prefix of the batch, in order
                    offsets += self._stored_by(name, lapsed, len(items) - len(offsets))
                if len(offsets) < len(items):
                    rest = len(offsets)
                    offsets += self._append(name, items[rest:], time, None if encoded is None else encoded[rest:],
                                            mine["token"], held.check)
                held.check()  # a taker may hold the key now: it finishes it
                self._finish_key(mine, offsets)
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
