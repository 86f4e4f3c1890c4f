"""The MongoDB backend (pymongo), correct on any MongoDB-wire server.

Collections in the URL's database (see docs/architecture.md):

* ``streams``          ``{_id: name, created, options}``
* ``groups``           ``{_id: "<stream>/<group>", s, g, start, created}``
* ``items.<stream>``   ``{_id: offset, t: append time (BSON date), d: item}``
* ``claims.<stream>``  ``{_id: "<group>/<seq:012>/<attempt>", g, q, k, lo, hi, n, ws, we, w,
  owner, lease, state, open, error, created}``; index ``(g, q, k)`` for the chain
  head, ``(g, open, lease)`` for reclaiming
* ``models``           ``{_id: "<stream>/<group>/<model>/<seq:012>", s, g, m, q, saved, state}``

Why it is correct without transactions or isolated updates: the two things
concurrent clients compete for are both ``_id`` values, and a duplicate ``_id`` is
rejected atomically by every MongoDB-wire server (error 11000):

* **offsets** — a producer inserts its batch at ``last + 1 …`` with an *ordered*
  ``insert_many``; on a duplicate key the documents before it are in, and it
  re-reads the last offset and inserts the rest after it. Offsets are therefore
  unique, gapless and, for each producer, increasing. The next offset is cached per
  stream, so a lone producer pays one round trip per batch.
* **windows** — a claim attempt's ``_id`` is ``group/seq/attempt``; two consumers
  that build on the same chain head produce the same ``_id`` and only one insert wins.

Every update (lease renewal, commit, release) is to an attempt document that only
its owner writes. ``supersede`` is the one exception, and it is idempotent: it
closes an attempt whose lease has already expired and that a newer attempt replaced.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pymongo
from bson.codec_options import CodecOptions
from pymongo.errors import BulkWriteError, ConfigurationError, DuplicateKeyError, PyMongoError

from ..config import mask_url
from ..errors import BadURLError, UnreachableError
from ..items import now_ms
from .base import COMMITTED, FAILED, Batch, Claim, Group, Store, StreamRecord

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
KEEP_MODEL_VERSIONS = 3
_PRUNE_EVERY = 20
_CODEC = CodecOptions(tz_aware=True, tzinfo=UTC)


def _ms(value: datetime) -> int:
    return (value - _EPOCH) // _MS


def _claim_id(group: str, seq: int, attempt: int) -> str:
    return f"{group}/{seq:012d}/{attempt}"


class MongoStore(Store):
    """A :class:`Store` in one MongoDB database (see the module docstring for the layout)."""

    max_poll = 0.01
    idle_poll = 0.1

    def __init__(self, url: str, database: str, timeout: float = 5.0, **client_options):
        self.url = mask_url(url)
        try:
            self.client = pymongo.MongoClient(
                url,
                serverSelectionTimeoutMS=int(timeout * 1000),
                connectTimeoutMS=int(timeout * 1000),
                appname="streamlog",
                **client_options,
            )
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise BadURLError(f"{self.url}: {exc}") from None
        try:
            self.client.admin.command("ping")
        except PyMongoError:
            self.client.close()
            raise UnreachableError(
                f"cannot reach MongoDB at {self.url} within {timeout:g} s "
                "(is the server running? STREAMLOG_CONNECT_TIMEOUT sets the wait)"
            ) from None
        build = self.client.admin.command("buildInfo")
        # Capability check: FerretDB v1 rejects arrays nested directly in arrays.
        self.nested_arrays = "ferretdbVersion" not in build
        self.db = self.client.get_database(database, codec_options=_CODEC)
        self._streams = self.db["streams"]
        self._groups = self.db["groups"]
        self._models = self.db["models"]
        self._next: dict[str, int] = {}  # optimistic next offset per stream
        self._saves = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def _items(self, name: str):
        return self.db[f"items.{name}"]

    def _claims(self, name: str):
        return self.db[f"claims.{name}"]

    # -- streams --------------------------------------------------------------

    def create_stream(self, name: str) -> StreamRecord:
        existing = self.get_stream(name)
        if existing is not None:
            return existing
        created = now_ms()
        try:
            self._streams.insert_one({"_id": name, "created": created, "options": {}})
        except DuplicateKeyError:
            return self.get_stream(name) or StreamRecord(name, created)
        try:
            self._groups.insert_one(
                {"_id": f"{name}/default", "s": name, "g": "default", "start": 0, "created": created})
        except DuplicateKeyError:
            pass
        # Indexes only make queries fast; correctness rests on _id uniqueness alone.
        claims = self._claims(name)
        claims.create_index([("g", 1), ("q", 1), ("k", 1)])
        claims.create_index([("g", 1), ("open", 1), ("lease", 1)])
        self._groups.create_index([("s", 1), ("g", 1)])
        self._models.create_index([("s", 1), ("g", 1), ("m", 1), ("q", 1)])
        return StreamRecord(name, created, {})

    def get_stream(self, name: str) -> StreamRecord | None:
        doc = self._streams.find_one({"_id": name})
        if doc is None:
            return None
        return StreamRecord(name, doc["created"], doc.get("options") or {})

    def streams(self) -> list[str]:
        return [d["_id"] for d in self._streams.find({}, {"_id": 1}).sort("_id", 1)]

    def set_options(self, name: str, options: dict) -> None:
        self._streams.update_one({"_id": name}, {"$set": {"options": options}})

    def drop(self, name: str) -> bool:
        existed = self._streams.delete_one({"_id": name}).deleted_count > 0
        self._items(name).drop()
        self._claims(name).drop()
        self._groups.delete_many({"s": name})
        self._models.delete_many({"s": name})
        self._next.pop(name, None)
        return existed

    # -- items ----------------------------------------------------------------

    def _read_next(self, name: str) -> int:
        last = self.last_offset(name)
        return 0 if last is None else last + 1

    def append(self, name: str, items: list[dict], time: int) -> list[int]:
        n = len(items)
        if not n:
            return []
        coll = self._items(name)
        when = _EPOCH + timedelta(milliseconds=time)
        offset = self._next.get(name)
        if offset is None:
            offset = self._read_next(name)
        offsets: list[int] = []
        done = 0
        while done < n:
            if n - done == 1:
                try:
                    coll.insert_one({"_id": offset, "t": when, "d": items[done]})
                    offsets.append(offset)
                    done = n
                except DuplicateKeyError:
                    offset = self._read_next(name)
                continue
            docs = [{"_id": offset + i, "t": when, "d": item} for i, item in enumerate(items[done:])]
            try:
                coll.insert_many(docs, ordered=True)
                offsets.extend(range(offset, offset + len(docs)))
                done = n
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                if not errors or errors[0].get("code") != 11000:
                    raise
                inserted = exc.details.get("nInserted", 0)
                offsets.extend(range(offset, offset + inserted))
                done += inserted
                offset = self._read_next(name)
        self._next[name] = offsets[-1] + 1
        return offsets

    def read(self, name: str, start: int = 0, limit: int | None = None, end: int | None = None) -> Batch:
        # Plain find/getMore commands: a third less client CPU than a Cursor, which
        # matters for idle probes and small windows.
        query: dict = {"$gte": start}
        if end is not None:
            query["$lte"] = end
        batch = Batch()
        if limit is not None and limit <= 0:
            return batch
        collection = f"items.{name}"
        # batchSize = limit + 1 (as pymongo's Cursor does) lets the server see the cursor is
        # exhausted and close it with the first batch: no getMore for a window.
        size = 10_000 if limit is None else min(limit + 1, 10_000)
        command = {"find": collection, "filter": {"_id": query}, "sort": {"_id": 1}, "batchSize": size}
        if limit is not None:
            command["limit"] = limit
        reply = self.db.command(command, codec_options=_CODEC)["cursor"]
        docs = reply["firstBatch"]
        offsets, times, data = batch.offsets, batch.times, batch.data
        while True:
            for doc in docs:
                offsets.append(doc["_id"])
                times.append((doc["t"] - _EPOCH) // _MS)
                data.append(doc["d"])
            if not reply.get("id"):
                return batch
            reply = self.db.command({"getMore": reply["id"], "collection": collection, "batchSize": size},
                                    codec_options=_CODEC)["cursor"]
            docs = reply["nextBatch"]

    def _edge(self, name: str, direction: int) -> int | None:
        doc = self._items(name).find_one({}, {"_id": 1}, sort=[("_id", direction)])
        return None if doc is None else doc["_id"]

    def last_offset(self, name: str) -> int | None:
        return self._edge(name, -1)

    def first_offset(self, name: str) -> int | None:
        return self._edge(name, 1)

    def count(self, name: str, after: int | None = None) -> int:
        command: dict = {"count": f"items.{name}"}
        if after is not None:
            command["query"] = {"_id": {"$gt": after}}
        return int(self.db.command(command)["n"])

    def trim(self, name: str, before: int) -> int:
        last = self.last_offset(name)
        if last is None:
            return 0
        return self._items(name).delete_many({"_id": {"$lt": min(before, last)}}).deleted_count

    # -- groups ---------------------------------------------------------------

    def create_group(self, name: str, group: str, start: int) -> Group:
        doc = {"_id": f"{name}/{group}", "s": name, "g": group, "start": start, "created": now_ms()}
        try:
            self._groups.insert_one(doc)
        except DuplicateKeyError:
            doc = self._groups.find_one({"_id": doc["_id"]}) or doc
        return Group(name, group, doc["start"], doc["created"])

    def groups(self, name: str) -> list[Group]:
        docs = self._groups.find({"s": name}).sort("g", 1)
        return [Group(name, d["g"], d["start"], d["created"]) for d in docs]

    # -- claims ---------------------------------------------------------------

    @staticmethod
    def _doc(claim: Claim) -> dict:
        return {
            "_id": _claim_id(claim.group, claim.seq, claim.attempt),
            "g": claim.group, "q": claim.seq, "k": claim.attempt,
            "lo": claim.lo, "hi": claim.hi, "n": claim.count,
            "ws": claim.start, "we": claim.end, "w": claim.windows,
            "owner": claim.owner, "lease": claim.lease, "state": claim.state,
            "open": True, "error": claim.error, "created": claim.created or now_ms(),
        }

    @staticmethod
    def _claim(name: str, d: dict) -> Claim:
        return Claim(name, d["g"], d["q"], d["k"], d["lo"], d["hi"], d["n"], d.get("ws"), d.get("we"),
                     d.get("w", 1), d.get("owner", ""), d.get("lease", 0), d.get("state", ""),
                     d.get("error"), d.get("created", 0))

    def claim(self, claim: Claim) -> bool:
        try:
            self._claims(claim.stream).insert_one(self._doc(claim))
        except DuplicateKeyError:
            return False
        return True

    def last_claim(self, name: str, group: str) -> Claim | None:
        doc = self._claims(name).find_one({"g": group}, sort=[("q", -1), ("k", -1)])
        return None if doc is None else self._claim(name, doc)

    def _set(self, claim: Claim, fields: dict) -> None:
        self._claims(claim.stream).update_one(
            {"_id": _claim_id(claim.group, claim.seq, claim.attempt)}, {"$set": fields})

    def renew(self, claim: Claim, lease: int) -> None:
        self._set(claim, {"lease": lease})

    def commit(self, claim: Claim, state: str = COMMITTED, error: str | None = None) -> None:
        self._set(claim, {"state": state, "open": False, "error": error})

    def release(self, claim: Claim, error: str) -> None:
        self._set(claim, {"state": FAILED, "lease": 0, "error": error})

    def supersede(self, claim: Claim) -> None:
        self._set(claim, {"open": False})

    def expired(self, name: str, group: str, now: int, limit: int = 10) -> list[Claim]:
        docs = (self._claims(name).find({"g": group, "open": True, "lease": {"$lt": now}})
                .sort([("q", 1), ("k", 1)]).limit(limit))
        return [self._claim(name, d) for d in docs]

    def open_claims(self, name: str, group: str | None = None) -> list[Claim]:
        query: dict = {"open": True}
        if group is not None:
            query["g"] = group
        docs = self._claims(name).find(query).sort([("g", 1), ("q", 1), ("k", 1)])
        return [self._claim(name, d) for d in docs]

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

    # -- models ---------------------------------------------------------------

    def save_model(self, name: str, group: str, model: str, seq: int, state: dict) -> None:
        doc = {"s": name, "g": group, "m": model, "q": seq, "saved": now_ms(), "state": state}
        key = f"{name}/{group}/{model}/{seq:012d}"
        try:
            self._models.replace_one({"_id": key}, doc, upsert=True)
        except DuplicateKeyError:  # a concurrent upsert of the same version won
            pass
        self._saves += 1
        if self._saves % _PRUNE_EVERY == 0:
            keep = list(self._models.find({"s": name, "g": group, "m": model}, {"q": 1})
                        .sort("q", -1).skip(KEEP_MODEL_VERSIONS - 1).limit(1))
            if keep:
                self._models.delete_many({"s": name, "g": group, "m": model, "q": {"$lt": keep[0]["q"]}})

    def load_model(self, name: str, group: str, model: str) -> tuple[int, int, dict] | None:
        doc = self._models.find_one({"s": name, "g": group, "m": model}, sort=[("q", -1)])
        return None if doc is None else (doc["q"], doc["saved"], doc["state"])

    def models(self, name: str) -> list[tuple[str, str, int, int]]:
        newest: dict[tuple[str, str], tuple[str, str, int, int]] = {}
        for d in self._models.find({"s": name}, {"g": 1, "m": 1, "q": 1, "saved": 1}):
            key = (d["g"], d["m"])
            if key not in newest or d["q"] > newest[key][2]:
                newest[key] = (d["g"], d["m"], d["q"], d["saved"])
        return [newest[k] for k in sorted(newest)]
