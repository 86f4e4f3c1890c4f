"""The MongoDB backend (pymongo), correct on any MongoDB-wire server: :class:`MongoStore`.

This module holds the connection, the collections, the indexes made with a stream, and
the streams, groups and items (append, read, trim); the rest comes from mixins, one job each:
:mod:`~streamlog.store.mongo_claims` (claims), :mod:`~streamlog.store.mongo_models`
(checkpoints and model history), :mod:`~streamlog.store.mongo_keys` (idempotency keys,
``append_once``), :mod:`~streamlog.store.mongo_wakeups` (push wake-ups where the server
keeps tailable cursors open); :mod:`~streamlog.store.mongo_retry` rides out outages and
:mod:`~streamlog.store.mongo_errors` classifies and describes driver errors.

Collections in the URL's database (see docs/architecture.md):

* ``streams``          ``{_id: name, created, options}``
* ``groups``           ``{_id: "<stream>/<group>", s, g, start, created}``
* ``items.<stream>``   ``{_id: offset, t: append time (BSON date), d: item, b: batch token}``
* ``claims.<stream>``  ``{_id: "<group>/<seq:012>/<attempt>", g, q, k, lo, hi, n, ws, we, w,
  owner, lease, state, open, error, created, e}`` (``e``: a key-discovery record's epoch, absent
  otherwise); index ``(g, q, k)`` for the chain head, ``(g, open, lease)`` for reclaiming
* ``models``           ``{_id: "<stream>/<group>/<model>/<seq:012>", s, g, m, q, saved, state, p}``: the
  newest few hold the learner's ``state``; older ones keep only ``p``, the window's metrics
  point, for the last ``KEEP_MODEL_HISTORY`` windows (the model's history)
* ``wakeups``          capped, ``{s: stream}``: producers' signals for waiting consumers
  (only where the server keeps tailable cursors open; see :mod:`~streamlog.store.mongo_wakeups`)
* ``idempotency``      ``{_id: "<stream>/<attempt>/<key>", s, k, a, digest, owner, token, last, lease,
  created}``: one document per attempt at appending a keyed batch (documents of earlier
  versions also carry ``state``, ``offsets``)

Why it is correct without transactions or isolated updates: the things
concurrent clients compete for are all ``_id`` values, and a duplicate ``_id`` is
rejected atomically by every MongoDB-wire server (error 11000):

* **offsets** — a producer inserts its batch at ``last + 1 …`` with an *ordered*
  ``insert_many``; on a duplicate key the documents before it are in, and it
  re-reads the last offset and inserts the rest after it. Offsets are therefore
  unique, gapless and, for each producer, increasing. The next offset is cached per
  stream, so a lone producer pays one round trip per batch.
* **windows** — a claim attempt's ``_id`` is ``group/seq/attempt``; two consumers
  that build on the same chain head produce the same ``_id`` and only one insert wins.
* **commits** — a commit inserts the *next* attempt's ``_id`` as a closed seal, so a
  consumer whose lease ran out cannot commit over the attempt that took its window
  over, and a takeover cannot start once the window is sealed (fencing).

Every update (lease renewal, release, closing a sealed attempt) is to an attempt
document that only its owner writes. ``supersede`` is the one exception, and it is
idempotent: it closes an attempt whose lease has already expired and that a newer
attempt replaced.

**Trimmed offsets are fenced.** A producer caches its next offset; if the items at
that offset had been trimmed, its insert would meet no duplicate key and land below
offsets that every group has passed. So a cached offset is trusted for
``OFFSET_CACHE_TTL`` seconds after it was verified (read as ``last + 1``, or
followed the producer's own successful insert), and ``trim`` deletes only below the
newest offset it observed at least ``TRIM_FENCE`` seconds earlier: by then every
producer has re-read the last offset, which is above the trimmed range. A batch is
sent in chunks of at most ``CHUNK_ITEMS`` items so no part of it goes out long
after its offsets were verified. (Exact as long as no insert spends more than
``TRIM_FENCE - OFFSET_CACHE_TTL`` seconds between being sent and being applied.)

**Outages.** Every operation retries transient driver errors (lost connection, no
server selectable, a server shutting down) with capped exponential backoff and
jitter for up to ``retry_timeout`` seconds (``STREAMLOG_RETRY_TIMEOUT``, default 60),
then raises :class:`~streamlog.errors.UnreachableError`. Retried writes are safe:
items carry their batch's random token ``b``, so an insert that was applied before
the connection dropped is recognised as ours on the retry (same offsets) and never
stored twice; a claim or seal that was applied is recognised by its owner.
"""

from __future__ import annotations

import random
import threading
import time as _time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import bson
import pymongo
from bson.codec_options import CodecOptions, TypeDecoder, TypeRegistry
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, ConfigurationError, DuplicateKeyError, OperationFailure, PyMongoError

from ..config import mask_url, retry_timeout
from ..errors import BadURLError, UnknownStreamError, UnreachableError
from ..items import now_ms
from .base import DEFAULT_GROUP, Batch, Group, Store, StreamRecord
from .keylease import KeyLeases
from .mongo_claims import Closes, MongoClaims
from .mongo_errors import describe_cause, is_transient, servers_of
from .mongo_keys import MongoKeys
from .mongo_models import MongoModels
from .mongo_retry import Outage, retried
from .mongo_wakeups import MongoWakeups

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
#: seconds a producer trusts its cached next offset (see "Trimmed offsets are fenced")
OFFSET_CACHE_TTL = 0.5
#: seconds between trim's observation of the newest offset and its delete
TRIM_FENCE = 2.0
#: items per insert command: bounds how long after its verification a chunk is sent
CHUNK_ITEMS = 10_000
CHUNK_BYTES = 8 * 1024 * 1024


class _PlainInt(TypeDecoder):
    """BSON int64 → ``int``, as the embedded backend returns it (not ``bson.Int64``)."""

    bson_type = Int64

    def transform_bson(self, value):
        return int(value)


_CODEC: CodecOptions = CodecOptions(tz_aware=True, tzinfo=UTC, type_registry=TypeRegistry([_PlainInt()]))
_RAW = CodecOptions(document_class=RawBSONDocument)


class MongoStore(MongoClaims, MongoModels, MongoKeys, MongoWakeups, Store):
    """A :class:`Store` in one MongoDB database (see the module docstring for the layout):
    streams, groups and items here; claims, models and idempotency keys from its mixins."""

    # While items keep coming a consumer probes every 3 ms or less; idle, every 500 ms (a
    # probe costs an idle client about 1 ms of CPU: with the reclaim scan every 2 s, about
    # 0.25 % of a core). Where the server keeps tailable cursors open, signals wake it sooner.
    max_poll = 0.003
    idle_poll = 0.5

    trim_fence = TRIM_FENCE

    def __init__(self, url: str, database: str, timeout: float = 5.0, retry: float | None = None,
                 **client_options):
        self.url = mask_url(url)
        self.retry_timeout = retry_timeout() if retry is None else retry
        try:
            self.client = pymongo.MongoClient(
                url,
                serverSelectionTimeoutMS=int(timeout * 1000),
                connectTimeoutMS=int(timeout * 1000),
                appname="streamlog",
                **client_options,
            )
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise BadURLError(f"{self.url}: {mask_url(str(exc))}") from None
        try:
            build = self._first_contact(timeout)
        except OperationFailure as exc:
            self.client.close()
            if exc.code in (18, 13) or "auth" in str(exc).lower():
                raise UnreachableError(
                    f"MongoDB at {servers_of(self.url)} refused the credentials ({describe_cause(exc)})") from None
            raise UnreachableError(
                f"MongoDB at {servers_of(self.url)} answered with an error ({describe_cause(exc)})") from None
        except PyMongoError as exc:
            self.client.close()
            raise UnreachableError(
                f"cannot reach MongoDB at {servers_of(self.url)} ({describe_cause(exc)}) within {timeout:g} s "
                "(is the server running? STREAMLOG_CONNECT_TIMEOUT sets the wait)") from None
        # Capability check: FerretDB v1 rejects arrays nested directly in arrays.
        self.nested_arrays = "ferretdbVersion" not in build
        self.db = self.client.get_database(database, codec_options=_CODEC)
        self._streams = self.db["streams"]
        self._groups = self.db["groups"]
        self._models = self.db["models"]
        self._keys = self.db["idempotency"]
        self._keys_indexed = False
        self._key_leases = KeyLeases(self._renew_key, now_ms)
        self._closes = Closes()
        # optimistic next offset per stream, and when it was verified (time.monotonic)
        self._next: dict[str, tuple[int, float]] = {}
        self._observed: dict[str, tuple[int, float]] = {}  # trim's last-offset observations
        self._versions: dict[tuple[str, str, str], list[int]] = {}  # newest model versions saved
        self._lock = threading.Lock()

    def _first_contact(self, timeout: float) -> dict:
        """``ping`` and ``buildInfo``, retrying a server that refuses or drops connections
        (restarting) until ``timeout`` seconds have passed, like an unreachable one."""
        deadline = _time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                self.client.admin.command("ping")
                return self.client.admin.command("buildInfo")
            except PyMongoError as exc:
                if not is_transient(exc) or _time.monotonic() + delay > deadline:
                    raise
                _time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _forget(self, name: str) -> None:
        """Drop what this process cached about a stream (after a drop)."""
        self._next.pop(name, None)
        self._observed.pop(name, None)
        for key in [k for k in self._versions if k[0] == name]:
            del self._versions[key]

    def _outage(self) -> Outage:
        return Outage(self)

    def close(self) -> None:
        self._key_leases.close()
        self.flush(retry=False)
        self._close_wakeups()
        self.client.close()

    def ping(self) -> None:
        self.client.admin.command("ping")  # no retries: a health check wants the answer now

    def _items(self, name: str) -> Collection:
        return self.db[f"items.{name}"]

    # -- streams --------------------------------------------------------------

    @retried
    def create_stream(self, name: str) -> StreamRecord:
        existing = self.get_stream(name)
        if existing is not None:
            return existing
        created = now_ms()
        # The default group and the indexes first, the stream record last: a record that
        # exists means its stream is complete, even if a retry or a crash cut this short.
        try:
            self._groups.insert_one({"_id": f"{name}/{DEFAULT_GROUP}", "s": name, "g": DEFAULT_GROUP,
                                     "start": 0, "created": created})
        except DuplicateKeyError:
            pass
        # Indexes only make queries fast; correctness rests on _id uniqueness alone.
        claims = self._claims(name)
        claims.create_index([("g", 1), ("q", 1), ("k", 1)])
        claims.create_index([("g", 1), ("open", 1), ("lease", 1)])
        self._groups.create_index([("s", 1), ("g", 1)])
        self._models.create_index([("s", 1), ("g", 1), ("m", 1), ("q", 1)])
        deadline = _time.monotonic() + 2 * TRIM_FENCE + 10
        uid = uuid.uuid4().hex
        while True:
            try:
                self._streams.insert_one({"_id": name, "created": created, "options": {}, "uid": uid})
                return StreamRecord(name, created, {}, uid=uid)
            except DuplicateKeyError:
                found = self.get_stream(name)
                if found is not None:
                    return found
                if _time.monotonic() > deadline:  # pragma: no cover - a drop that died half-way
                    raise UnknownStreamError(f"stream {name!r} is still being dropped; try again") from None
                _time.sleep(0.1)  # a drop of that name is in progress: create it once it is done

    @retried
    def get_stream(self, name: str) -> StreamRecord | None:
        doc = self._streams.find_one({"_id": name})
        if doc is None or doc.get("dropping"):
            return None
        return StreamRecord(name, doc["created"], doc.get("options") or {}, uid=doc.get("uid", ""))

    @retried
    def streams(self) -> list[str]:
        return [d["_id"] for d in self._streams.find({}, {"_id": 1, "dropping": 1}).sort("_id", 1)
                if not d.get("dropping")]

    @retried
    def set_options(self, name: str, options: dict) -> None:
        self._streams.update_one({"_id": name}, {"$set": {"options": options}})

    @retried
    def drop(self, name: str) -> bool:
        # Mark the stream as dropping, then wait out the fence: every producer re-checks
        # the record with its offset (at least every OFFSET_CACHE_TTL) and stops with
        # UnknownStreamError, so no acknowledged item lands after the items are deleted.
        doc = self._streams.find_one_and_update({"_id": name}, {"$set": {"dropping": True}})
        if doc is None:
            self._forget(name)
            return False
        _time.sleep(TRIM_FENCE)
        self._items(name).drop()
        self._claims(name).drop()
        self._groups.delete_many({"s": name})
        self._models.delete_many({"s": name})
        self._keys.delete_many({"s": name})
        self._streams.delete_one({"_id": name})
        self._forget(name)
        return not doc.get("dropping")

    # -- items ----------------------------------------------------------------

    def _read_next(self, name: str) -> int:
        """Verify a producer's position: the stream is not dropped, and its last offset."""
        doc = self._streams.find_one({"_id": name}, {"dropping": 1})
        if doc is None or doc.get("dropping"):
            raise UnknownStreamError(f"stream {name!r} was dropped")
        last = self.last_offset(name)
        return 0 if last is None else last + 1

    def _own_prefix(self, name: str, offset: int, token: int, n: int) -> int:
        """How many of the documents at ``offset …`` in a row carry our batch token."""
        docs = self._items(name).find({"_id": {"$gte": offset, "$lt": offset + n}}, {"b": 1}).sort("_id", 1)
        mine = 0
        for doc in docs:
            if doc["_id"] != offset + mine or doc.get("b") != token:
                break
            mine += 1
        return mine

    def append(self, name: str, items: list[dict], time: int, encoded: list[bytes] | None = None) -> list[int]:
        return self._append(name, items, time, encoded, random.getrandbits(62))

    def _append(self, name: str, items: list[dict], time: int, encoded: list[bytes] | None, token: int,
                fence: Callable[[], None] | None = None) -> list[int]:
        """:meth:`append` with the batch token given (idempotent appends record it first);
        ``fence`` is called before every insert (an idempotent append's lease check: it
        raises once the lease may have lapsed)."""
        n = len(items)
        if not n:
            return []
        coll = self._items(name)
        when = _EPOCH + timedelta(milliseconds=time)
        sizes = [len(e) for e in encoded] if encoded is not None else None
        offsets: list[int] = []
        done = 0
        offset, verified = self._next.get(name, (None, 0.0))
        outage: Outage | None = None
        suspect = False  # an earlier attempt at these offsets may have been applied
        while done < n:
            if offset is None or (not suspect and _time.monotonic() - verified > OFFSET_CACHE_TTL):
                verified = _time.monotonic()
                try:
                    offset = self._read_next(name)
                except PyMongoError as exc:
                    outage = outage or self._outage()
                    outage.wait(exc)
                    offset = None
                    continue
            stop = min(n, done + CHUNK_ITEMS)
            if sizes is not None:
                total, stop = 0, done
                while stop < n and stop - done < CHUNK_ITEMS and (stop == done or total + sizes[stop] <= CHUNK_BYTES):
                    total += sizes[stop]
                    stop += 1
            docs = [{"_id": offset + i, "t": when, "d": items[done + i], "b": token} for i in range(stop - done)]
            if fence is not None:
                fence()
            sent = _time.monotonic()
            conflict = False
            try:
                if len(docs) == 1:
                    coll.insert_one(docs[0])
                else:
                    coll.insert_many(docs, ordered=True)
                inserted = len(docs)
            except DuplicateKeyError:
                inserted, conflict = 0, True
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                if not errors or errors[0].get("code") != 11000:
                    raise
                inserted, conflict = exc.details.get("nInserted", 0), True
            except PyMongoError as exc:
                outage = outage or self._outage()
                outage.wait(exc)
                suspect = True  # retry at the same offsets: what was applied shows as ours
                continue
            offsets.extend(range(offset, offset + inserted))
            done += inserted
            offset += inserted
            if conflict:
                if suspect:
                    try:
                        mine = self._own_prefix(name, offset, token, stop - done)
                    except PyMongoError as exc:
                        outage = outage or self._outage()
                        outage.wait(exc)
                        continue
                    if mine:
                        offsets.extend(range(offset, offset + mine))
                        done += mine
                        offset += mine
                        continue
                suspect = False
                offset = None  # somebody else holds the next offset: re-read the last one
            else:
                suspect = False
                verified = sent
        self._next[name] = (offset, verified) if offset is not None else (offsets[-1] + 1, 0.0)
        self._signal(name)
        return offsets

    @retried
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
        reply = self.db.command(command, codec_options=_RAW)["cursor"]
        docs = reply["firstBatch"]
        offsets, times, data = batch.offsets, batch.times, batch.data
        while True:
            # Commands decode replies without the type registry, so the batch comes raw and
            # is decoded here with it (int64 → int): ~0.1 ms per 100 items.
            for doc in bson.decode_all(b"".join(raw.raw for raw in docs), _CODEC):
                offsets.append(doc["_id"])
                times.append((doc["t"] - _EPOCH) // _MS)
                data.append(doc["d"])
            if not reply.get("id"):
                return batch
            reply = self.db.command({"getMore": reply["id"], "collection": collection, "batchSize": size},
                                    codec_options=_RAW)["cursor"]
            docs = reply["nextBatch"]

    @retried
    def _edge(self, name: str, direction: int) -> int | None:
        doc = self._items(name).find_one({}, {"_id": 1}, sort=[("_id", direction)])
        return None if doc is None else doc["_id"]

    def last_offset(self, name: str) -> int | None:
        return self._edge(name, -1)

    def first_offset(self, name: str) -> int | None:
        return self._edge(name, 1)

    @retried
    def count(self, name: str, after: int | None = None) -> int:
        command: dict = {"count": f"items.{name}"}
        if after is not None:
            command["query"] = {"_id": {"$gt": after}}
        return int(self.db.command(command)["n"])

    @retried
    def _trim_bound(self, name: str, wait: bool) -> int | None:
        # The fence: delete only below an offset observed TRIM_FENCE s ago, when every
        # producer's cached offset has been re-verified above it (module docstring).
        observed = self._observed.get(name)
        if observed is None or _time.monotonic() - observed[1] < TRIM_FENCE:
            if observed is None:
                last = self.last_offset(name)
                if last is None:
                    return None
                observed = self._observed[name] = (last, _time.monotonic())
            if not wait:
                return None
            _time.sleep(max(0.0, TRIM_FENCE - (_time.monotonic() - observed[1])))
        del self._observed[name]
        return observed[0]

    @retried
    def _delete_below(self, name: str, offset: int) -> int:
        return self._items(name).delete_many({"_id": {"$lt": offset}}).deleted_count

    # -- groups ---------------------------------------------------------------

    @retried
    def create_group(self, name: str, group: str, start: int) -> Group:
        doc: dict = {"_id": f"{name}/{group}", "s": name, "g": group, "start": start, "created": now_ms()}
        try:
            self._groups.insert_one(doc)
        except DuplicateKeyError:
            doc = self._groups.find_one({"_id": doc["_id"]}) or doc
        return Group(name, group, doc["start"], doc["created"])

    @retried
    def groups(self, name: str) -> list[Group]:
        docs = self._groups.find({"s": name}).sort("g", 1)
        return [Group(name, d["g"], d["start"], d["created"]) for d in docs]

    @retried
    def delete_group(self, name: str, group: str, below_seq: int) -> None:
        self._groups.delete_one({"_id": f"{name}/{group}"})
        self._claims(name).delete_many({"g": group, "q": {"$lt": below_seq}})

