"""The claims of the MongoDB backend: the collection ``claims.<stream>``, the claim
operations of the store contract and their document mapping (:class:`MongoClaims`, part of
:class:`~streamlog.store.mongo.MongoStore`).

A document is one :class:`~streamlog.store.base.Claim` attempt, ``_id``
``"<group>/<seq:012>/<attempt>"``: ``g``, ``q``, ``k`` its group, seq and attempt, ``lo``/``hi``
its offsets, ``n`` its count, ``ws``/``we`` its start/end, ``w`` its windows, ``open``
whether its state is open, ``e`` a key-discovery record's epoch (absent otherwise). Its
indexes, ``(g, q, k)`` for the chain head and ``(g, open, lease)`` for reclaiming, are
made with the stream (``MongoStore.create_stream``).

Coordination rests on ``_id`` uniqueness alone (see :mod:`streamlog.store.mongo`): a claim
is the unique insert of its attempt, and a commit inserts the *next* attempt's ``_id`` as a
closed seal, so a consumer whose lease ran out cannot commit over the attempt that took its
window over. Every update is to an attempt only its owner writes, except ``supersede``,
which is idempotent. A claim or seal applied before the connection dropped is recognised
on the retry by its owner, state and creation time.

**A commit is one round trip**: the seal. Closing the sealed attempt (``open: false``,
which keeps it out of the reclaim scan) is deferred and batched: one ``update_many`` closes
every attempt this store sealed, at the latest :data:`CLOSE_WITHIN_MS` after the first of
them or half-way through its lease, whichever comes first, and at once before this store
scans for expired or open claims and when it closes. Until then the attempt looks open to
other processes; should its lease run out first (a crash), the consumer that finds it
expired meets the seal when it tries to take it over and closes it (``supersede``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from ..items import now_ms
from .base import COMMITTED, FAILED, OPEN_STATES, Claim, Group
from .mongo_retry import Outage, retried

#: a sealed attempt is closed at most this long (ms) after its seal (see the module doc)
CLOSE_WITHIN_MS = 1_000
#: … or as soon as this many sealed attempts wait to be closed
CLOSE_BATCH = 512


class Closes:
    """Sealed attempts waiting for their close, per stream, and when the first is due."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: dict[str, list[str]] = {}
        self.count = 0
        self.due = 0  # ms; 0 when nothing waits

    def add(self, name: str, key: str, due: int) -> bool:
        """Queue ``key``; True when the batch should be written now."""
        with self.lock:
            self.ids.setdefault(name, []).append(key)
            self.count += 1
            self.due = due if not self.due else min(self.due, due)
            return self.count >= CLOSE_BATCH

    def take(self) -> dict[str, list[str]]:
        with self.lock:
            ids, self.ids, self.count, self.due = self.ids, {}, 0, 0
            return ids


def _claim_id(group: str, seq: int, attempt: int) -> str:
    return f"{group}/{seq:012d}/{attempt}"


class MongoClaims:
    """The claim operations of :class:`~streamlog.store.mongo.MongoStore`, on ``claims.<stream>``."""

    if TYPE_CHECKING:  # provided by MongoStore
        db: Database

        def _outage(self) -> Outage: ...

        def groups(self, name: str) -> list[Group]: ...

    #: sealed attempts waiting for their batched close (MongoStore makes one per store)
    _closes: "Closes"

    def _claims(self, name: str) -> Collection:
        return self.db[f"claims.{name}"]

    def flush(self, retry: bool = True) -> None:
        """Close every attempt this store sealed and has not closed yet (one write per
        stream). ``retry=False`` (a consumer or the store closing) tries once, and on an
        error leaves those attempts to their seals."""
        for name, ids in self._closes.take().items():
            if retry:
                self._close_sealed(name, ids)
                continue
            try:
                self._close_sealed_once(name, ids)
            except PyMongoError:
                pass  # whoever finds these attempts expired meets their seals and closes them

    def _close_sealed_once(self, name: str, ids: list[str]) -> None:
        self._claims(name).update_many({"_id": {"$in": ids}}, {"$set": {"state": COMMITTED, "open": False}})

    _close_sealed = retried(_close_sealed_once)

    def _flush_if_due(self, now: int) -> None:
        closes = self._closes
        if closes.due and now >= closes.due:
            self.flush()

    @staticmethod
    def _claim_document(claim: Claim) -> dict:
        """The document of a claim attempt (the module docstring maps its fields)."""
        return {
            "_id": _claim_id(claim.group, claim.seq, claim.attempt),
            "g": claim.group, "q": claim.seq, "k": claim.attempt,
            "lo": claim.lo, "hi": claim.hi, "n": claim.count,
            "ws": claim.start, "we": claim.end, "w": claim.windows,
            "owner": claim.owner, "lease": claim.lease, "state": claim.state,
            "open": claim.state in OPEN_STATES, "error": claim.error, "created": claim.created or now_ms(),
            **({} if claim.epoch is None else {"e": claim.epoch}),
        }

    @staticmethod
    def _claim_from(name: str, d: dict) -> Claim:
        """The :class:`Claim` a document of stream ``name`` records."""
        return Claim(stream=name, group=d["g"], seq=d["q"], attempt=d["k"], lo=d["lo"], hi=d["hi"], count=d["n"],
                     start=d.get("ws"), end=d.get("we"), windows=d.get("w", 1), owner=d.get("owner", ""),
                     lease=d.get("lease", 0), state=d.get("state", ""), error=d.get("error"),
                     created=d.get("created", 0), epoch=d.get("e"))

    def _insert_owned(self, name: str, doc: dict, suspect: bool = False) -> bool:
        """Insert ``doc``; False on a duplicate ``_id`` — unless an earlier attempt of this
        very insert was applied before the connection dropped (same owner, state, time;
        ``suspect``: an earlier attempt may have been)."""
        outage = None
        while True:
            try:
                self._claims(name).insert_one(doc)
                return True
            except DuplicateKeyError:
                return suspect and self._ours(name, doc)
            except PyMongoError as exc:
                outage = outage or self._outage()
                outage.wait(exc)
                suspect = True

    @retried
    def _stored_ownership(self, name: str, key: str) -> dict | None:
        return self._claims(name).find_one({"_id": key}, {"owner": 1, "state": 1, "created": 1})

    def _ours(self, name: str, doc: dict) -> bool:
        """Whether the stored document under ``doc``'s ``_id`` is ``doc`` itself, written by
        an earlier try of this insert (same owner, state and creation time)."""
        found = self._stored_ownership(name, doc["_id"])
        return found is not None and all(found.get(k) == doc[k] for k in ("owner", "state", "created"))

    def claim(self, claim: Claim) -> bool:
        self._flush_if_due(claim.created or now_ms())
        return self._insert_owned(claim.stream, self._claim_document(claim))

    @retried
    def last_claim(self, name: str, group: str) -> Claim | None:
        doc = self._claims(name).find_one({"g": group}, sort=[("q", -1), ("k", -1)])
        return None if doc is None else self._claim_from(name, doc)

    @retried
    def _update_attempt(self, claim: Claim, fields: dict) -> None:
        self._claims(claim.stream).update_one(
            {"_id": _claim_id(claim.group, claim.seq, claim.attempt)}, {"$set": fields})

    def renew(self, claim: Claim, lease: int) -> None:
        self._update_attempt(claim, {"lease": lease})

    def _seal_document(self, claim: Claim, state: str, error: str | None) -> dict:
        """The seal of ``claim``: the next attempt's key, closed."""
        seal = self._claim_document(claim)
        seal.update(_id=_claim_id(claim.group, claim.seq, claim.attempt + 1), k=claim.attempt + 1,
                    state=state, open=False, lease=0, error=error, created=now_ms())
        return seal

    def commit(self, claim: Claim, state: str = COMMITTED, error: str | None = None) -> bool:
        seal = self._seal_document(claim, state, error)
        if not self._insert_owned(claim.stream, seal):
            return False  # a newer attempt took the window over
        if state != COMMITTED or error is not None:  # dead letters: rare, closed at once
            self._update_attempt(claim, {"state": state, "open": False, "error": error})
            return True
        self._close_later(claim, seal["created"])
        return True

    def commit_and_claim(self, claim: Claim, next_claim: Claim) -> tuple[bool, bool]:
        """The seal and the next claim in one ordered insert: one round trip where a commit
        and a claim take two. Ordered, so a duplicate seal (fenced off) inserts nothing."""
        name = claim.stream
        seal, nxt = self._seal_document(claim, COMMITTED, None), self._claim_document(next_claim)
        outage = None
        suspect = False
        while True:
            try:
                self._claims(name).insert_many([seal, nxt], ordered=True)
                committed = won = True
                break
            except BulkWriteError as exc:
                failed = (exc.details.get("writeErrors") or [{}])[0]
                if failed.get("code") != 11000:
                    raise
                if failed.get("index") == 0:  # the seal's key exists
                    if not (suspect and self._ours(name, seal)):
                        return False, False  # a newer attempt took the window over
                    # our own seal, from an attempt cut short: the next claim may be in too
                    committed, won = True, self._insert_owned(name, nxt, suspect=True)
                else:  # the seal went in now (so no earlier try's did, nor its next claim):
                    committed, won = True, False  # another consumer claimed the next window first
                break
            except PyMongoError as exc:
                outage = outage or self._outage()
                outage.wait(exc)
                suspect = True
        self._close_later(claim, seal["created"])
        return committed, won

    def _close_later(self, claim: Claim, now: int) -> None:
        """Queue the close of ``claim``'s sealed attempt (see :meth:`flush`)."""
        due = min(now + CLOSE_WITHIN_MS, (claim.created + claim.lease) // 2 if claim.lease else now)
        if self._closes.add(claim.stream, _claim_id(claim.group, claim.seq, claim.attempt), due):
            self.flush()
        else:
            self._flush_if_due(now)

    def release(self, claim: Claim, error: str, retry_at: int = 0) -> None:
        self._update_attempt(claim, {"state": FAILED, "lease": retry_at, "error": error})

    def supersede(self, claim: Claim) -> None:
        self._update_attempt(claim, {"open": False})

    def expired(self, name: str, group: str, now: int, limit: int = 10) -> list[Claim]:
        self.flush()
        return self._expired(name, group, now, limit)

    @retried
    def _expired(self, name: str, group: str, now: int, limit: int) -> list[Claim]:
        docs = (self._claims(name).find({"g": group, "open": True, "lease": {"$lt": now}})
                .sort([("q", 1), ("k", 1)]).limit(limit))
        return [self._claim_from(name, d) for d in docs]

    def open_claims(self, name: str, group: str | None = None) -> list[Claim]:
        self.flush()
        return self._open_claims(name, group)

    @retried
    def _open_claims(self, name: str, group: str | None) -> list[Claim]:
        query: dict = {"open": True}
        if group is not None:
            query["g"] = group
        docs = self._claims(name).find(query).sort([("g", 1), ("q", 1), ("k", 1)])
        return [self._claim_from(name, d) for d in docs]

    @retried
    def forget_claims(self, name: str, below: int, older_than: int) -> int:
        claims = self._claims(name)
        deleted = 0
        for group in self.groups(name):
            head = self.last_claim(name, group.name)
            if head is None:
                continue
            deleted += claims.delete_many({
                "g": group.name, "open": False, "hi": {"$lt": below},
                "created": {"$lt": older_than}, "q": {"$lt": head.seq},
            }).deleted_count
        return deleted
