"""The MongoDB backend (pymongo), correct on any MongoDB-wire server.

Collections in the URL's database (see docs/architecture.md):

* ``streams``          ``{_id: name, created, options}``
* ``groups``           ``{_id: "<stream>/<group>", s, g, start, created}``
* ``items.<stream>``   ``{_id: offset, t: append time (BSON date), d: item}``
* ``claims.<stream>``  ``{_id: "<group>/<seq:012>/<attempt>", g, q, k, lo, hi, n, ws, we, w,
  owner, lease, state, open, error, created}``; index ``(g, q, k)`` for the chain
  head, ``(g, open, lease)`` for reclaiming
* ``models``           ``{_id: "<stream>/<group>/<model>/<seq:012>", s, g, m, q, saved, state, p}``: the
  newest few hold the learner's ``state``; older ones keep only ``p``, the window's metrics
  point, for the last ``KEEP_MODEL_HISTORY`` windows (the model's history)
* ``idempotency``      ``{_id: "<stream>/<attempt>/<key>", s, k, a, digest, owner, token, last, lease,
  state, offsets, created}``: one document per attempt at appending a keyed batch

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

import functools
import logging
import random
import re
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
from pymongo.errors import (BulkWriteError, ConfigurationError, ConnectionFailure, DuplicateKeyError,
                            OperationFailure, PyMongoError)

from ..config import mask_url, retry_timeout
from ..errors import BadURLError, UnknownStreamError, UnreachableError
from ..items import now_ms
from .base import (COMMITTED, DEFAULT_GROUP, FAILED, KEEP_MODEL_HISTORY, KEEP_MODEL_VERSIONS, KEY_WINDOW_MS, OPEN_STATES, Batch, Claim,
                   Group, Once, Store, StreamRecord, offset_ranges, range_offsets)
from .keylease import KEY_LEASE, KeyLeaseLost, KeyLeases

log = logging.getLogger("streamlog")

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


_CODEC = CodecOptions(tz_aware=True, tzinfo=UTC, type_registry=TypeRegistry([_PlainInt()]))
_RAW = CodecOptions(document_class=RawBSONDocument)
# Server errors that mean "try again": interrupted or shutting down, not primary.
_TRANSIENT_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionFailure):  # AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
        return True
    if isinstance(exc, OperationFailure) and not isinstance(exc, (DuplicateKeyError, BulkWriteError)):
        return exc.code in _TRANSIENT_CODES or exc.has_error_label("RetryableWriteError")
    return False


# A driver error's text → its cause in a few words (first match wins).
_REASONS = (("connection refused", "connection refused"), ("name or service not known", "unknown host"),
            ("nodename nor servname", "unknown host"), ("name resolution", "host name not resolved"),
            ("no route to host", "no route to host"), ("network is unreachable", "network unreachable"),
            ("timed out", "timed out"), ("certificate verify failed", "TLS certificate rejected"),
            ("ssl", "TLS handshake failed"), ("authentication failed", "authentication failed"))


def describe_error(exc: BaseException) -> str:
    """A driver error as one short masked line: its type and the first part of its text,
    without pymongo's timeouts and topology description (``streamlog -v`` prints all of it)."""
    first = re.split(r" \(configured timeouts|, Timeout: |, full error: |\n", str(exc), maxsplit=1)[0].strip()
    if len(first) > 120:
        first = first[:119] + "…"
    return mask_url(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def _describe(exc: BaseException) -> str:
    """The cause of a driver error in a few words (``connection refused``), for messages
    that name the server themselves, else :func:`describe_error`."""
    lowered = str(exc).lower()
    for needle, words in _REASONS:
        if needle in lowered:
            return words
    return describe_error(exc)


def _where(url: str) -> str:
    """The servers of a (masked) MongoDB URL, for messages: ``alice:***@h1:27017,h2``
    (the user kept, the password masked; no scheme, database or options)."""
    rest = mask_url(url).split("://", 1)[-1]
    user, at, hosts = rest.rpartition("@")
    hosts = re.split(r"[/?]", hosts, maxsplit=1)[0]
    where = f"{user}@{hosts}" if at else hosts
    return where if len(where) <= 80 else where[:79] + "…"


def _retried(method):
    """Retry ``method`` on transient errors until the store's retry deadline (idempotent ops)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        outage = None
        while True:
            try:
                return method(self, *args, **kwargs)
            except PyMongoError as exc:
                if outage is None:
                    outage = self._outage()
                outage.wait(exc)

    return wrapper


class _Outage:
    """Backoff state while the server is unreachable: capped exponential delays with
    jitter, then :class:`UnreachableError` once ``retry_timeout`` has passed."""

    def __init__(self, store: "MongoStore"):
        self.store = store
        self.deadline = _time.monotonic() + store.retry_timeout
        self.delay = 0.05
        self.logged = False

    def wait(self, exc: BaseException) -> None:
        if not _transient(exc):
            raise exc
        left = self.deadline - _time.monotonic()
        if left <= 0:
            raise UnreachableError(
                f"lost MongoDB at {_where(self.store.url)} ({_describe(exc)}) for more than "
                f"{self.store.retry_timeout:g} s (STREAMLOG_RETRY_TIMEOUT sets the wait)") from None
        if not self.logged:
            log.warning("MongoDB at %s is not answering (%s); retrying for up to %g s",
                        self.store.url, _describe(exc), self.store.retry_timeout)
            self.logged = True
        _time.sleep(min(left, self.delay * random.uniform(0.5, 1.0)))
        self.delay = min(self.delay * 2, 2.0)


def _ms(value: datetime) -> int:
    return (value - _EPOCH) // _MS


def _claim_id(group: str, seq: int, attempt: int) -> str:
    return f"{group}/{seq:012d}/{attempt}"


#: a model's metric points older than KEEP_MODEL_HISTORY windows are deleted every this many windows
_HISTORY_TRIM = 32


class MongoStore(Store):
    """A :class:`Store` in one MongoDB database (see the module docstring for the layout)."""

    max_poll = 0.01
    idle_poll = 0.1

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
                    f"MongoDB at {_where(self.url)} refused the credentials ({_describe(exc)})") from None
            raise UnreachableError(
                f"MongoDB at {_where(self.url)} answered with an error ({_describe(exc)})") from None
        except PyMongoError as exc:
            self.client.close()
            raise UnreachableError(
                f"cannot reach MongoDB at {_where(self.url)} ({_describe(exc)}) within {timeout:g} s "
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
                if not _transient(exc) or _time.monotonic() + delay > deadline:
                    raise
                _time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _forget(self, name: str) -> None:
        """Drop what this process cached about a stream (after a drop)."""
        self._next.pop(name, None)
        self._observed.pop(name, None)
        for key in [k for k in self._versions if k[0] == name]:
            del self._versions[key]

    def _outage(self) -> _Outage:
        return _Outage(self)

    def close(self) -> None:
        self._key_leases.close()
        self.client.close()

    def ping(self) -> None:
        self.client.admin.command("ping")  # no retries: a health check wants the answer now

    def _items(self, name: str):
        return self.db[f"items.{name}"]

    def _claims(self, name: str):
        return self.db[f"claims.{name}"]

    # -- streams --------------------------------------------------------------

    @_retried
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

    @_retried
    def get_stream(self, name: str) -> StreamRecord | None:
        doc = self._streams.find_one({"_id": name})
        if doc is None or doc.get("dropping"):
            return None
        return StreamRecord(name, doc["created"], doc.get("options") or {}, uid=doc.get("uid", ""))

    @_retried
    def streams(self) -> list[str]:
        return [d["_id"] for d in self._streams.find({}, {"_id": 1, "dropping": 1}).sort("_id", 1)
                if not d.get("dropping")]

    @_retried
    def set_options(self, name: str, options: dict) -> None:
        self._streams.update_one({"_id": name}, {"$set": {"options": options}})

    @_retried
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
        outage: _Outage | None = None
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
        return offsets

    @_retried
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

    @_retried
    def _edge(self, name: str, direction: int) -> int | None:
        doc = self._items(name).find_one({}, {"_id": 1}, sort=[("_id", direction)])
        return None if doc is None else doc["_id"]

    def last_offset(self, name: str) -> int | None:
        return self._edge(name, -1)

    def first_offset(self, name: str) -> int | None:
        return self._edge(name, 1)

    @_retried
    def count(self, name: str, after: int | None = None) -> int:
        command: dict = {"count": f"items.{name}"}
        if after is not None:
            command["query"] = {"_id": {"$gt": after}}
        return int(self.db.command(command)["n"])

    @_retried
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

    @_retried
    def _delete_below(self, name: str, offset: int) -> int:
        return self._items(name).delete_many({"_id": {"$lt": offset}}).deleted_count

    # -- groups ---------------------------------------------------------------

    @_retried
    def create_group(self, name: str, group: str, start: int) -> Group:
        doc = {"_id": f"{name}/{group}", "s": name, "g": group, "start": start, "created": now_ms()}
        try:
            self._groups.insert_one(doc)
        except DuplicateKeyError:
            doc = self._groups.find_one({"_id": doc["_id"]}) or doc
        return Group(name, group, doc["start"], doc["created"])

    @_retried
    def groups(self, name: str) -> list[Group]:
        docs = self._groups.find({"s": name}).sort("g", 1)
        return [Group(name, d["g"], d["start"], d["created"]) for d in docs]

    @_retried
    def delete_group(self, name: str, group: str, below_seq: int) -> None:
        self._groups.delete_one({"_id": f"{name}/{group}"})
        self._claims(name).delete_many({"g": group, "q": {"$lt": below_seq}})

    # -- claims ---------------------------------------------------------------

    @staticmethod
    def _doc(claim: Claim) -> dict:
        return {
            "_id": _claim_id(claim.group, claim.seq, claim.attempt),
            "g": claim.group, "q": claim.seq, "k": claim.attempt,
            "lo": claim.lo, "hi": claim.hi, "n": claim.count,
            "ws": claim.start, "we": claim.end, "w": claim.windows,
            "owner": claim.owner, "lease": claim.lease, "state": claim.state,
            "open": claim.state in OPEN_STATES, "error": claim.error, "created": claim.created or now_ms(),
        }

    @staticmethod
    def _claim(name: str, d: dict) -> Claim:
        return Claim(name, d["g"], d["q"], d["k"], d["lo"], d["hi"], d["n"], d.get("ws"), d.get("we"),
                     d.get("w", 1), d.get("owner", ""), d.get("lease", 0), d.get("state", ""),
                     d.get("error"), d.get("created", 0))

    def _insert_owned(self, name: str, doc: dict) -> bool:
        """Insert ``doc``; False on a duplicate ``_id`` — unless an earlier attempt of this
        very insert was applied before the connection dropped (same owner, state, time)."""
        outage = None
        suspect = False
        while True:
            try:
                self._claims(name).insert_one(doc)
                return True
            except DuplicateKeyError:
                if not suspect:
                    return False
                found = self._claim_doc(name, doc["_id"])
                return found is not None and all(found.get(k) == doc[k] for k in ("owner", "state", "created"))
            except PyMongoError as exc:
                outage = outage or self._outage()
                outage.wait(exc)
                suspect = True

    @_retried
    def _claim_doc(self, name: str, key: str) -> dict | None:
        return self._claims(name).find_one({"_id": key}, {"owner": 1, "state": 1, "created": 1})

    def claim(self, claim: Claim) -> bool:
        return self._insert_owned(claim.stream, self._doc(claim))

    @_retried
    def last_claim(self, name: str, group: str) -> Claim | None:
        doc = self._claims(name).find_one({"g": group}, sort=[("q", -1), ("k", -1)])
        return None if doc is None else self._claim(name, doc)

    @_retried
    def _set(self, claim: Claim, fields: dict) -> None:
        self._claims(claim.stream).update_one(
            {"_id": _claim_id(claim.group, claim.seq, claim.attempt)}, {"$set": fields})

    def renew(self, claim: Claim, lease: int) -> None:
        self._set(claim, {"lease": lease})

    def commit(self, claim: Claim, state: str = COMMITTED, error: str | None = None) -> bool:
        seal = self._doc(claim)
        seal.update(_id=_claim_id(claim.group, claim.seq, claim.attempt + 1), k=claim.attempt + 1,
                    state=state, open=False, lease=0, error=error, created=now_ms())
        if not self._insert_owned(claim.stream, seal):
            return False  # a newer attempt took the window over
        self._set(claim, {"state": state, "open": False, "error": error})
        return True

    def release(self, claim: Claim, error: str, retry_at: int = 0) -> None:
        self._set(claim, {"state": FAILED, "lease": retry_at, "error": error})

    def supersede(self, claim: Claim) -> None:
        self._set(claim, {"open": False})

    @_retried
    def expired(self, name: str, group: str, now: int, limit: int = 10) -> list[Claim]:
        docs = (self._claims(name).find({"g": group, "open": True, "lease": {"$lt": now}})
                .sort([("q", 1), ("k", 1)]).limit(limit))
        return [self._claim(name, d) for d in docs]

    @_retried
    def open_claims(self, name: str, group: str | None = None) -> list[Claim]:
        query: dict = {"open": True}
        if group is not None:
            query["g"] = group
        docs = self._claims(name).find(query).sort([("g", 1), ("q", 1), ("k", 1)])
        return [self._claim(name, d) for d in docs]

    @_retried
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

    @_retried
    def save_model(self, name: str, group: str, model: str, seq: int, state: dict,
                   point: dict | None = None) -> None:
        doc = {"s": name, "g": group, "m": model, "q": seq, "saved": now_ms(), "state": state}
        if point is not None:
            doc["p"] = point
        key = f"{name}/{group}/{model}/{seq:012d}"
        try:
            self._models.replace_one({"_id": key}, doc, upsert=True)
        except DuplicateKeyError:  # a concurrent upsert of the same version won
            pass
        # Keep the newest KEEP_MODEL_VERSIONS full states: the versions this process saved are
        # known; the first save of a model in a process looks the older ones up once. Older
        # checkpoints lose their state but keep their metrics point (the model's history): the
        # one write per window that used to delete them now strips them, so the history costs
        # no round trip; points older than KEEP_MODEL_HISTORY windows go every _HISTORY_TRIM saves.
        who = {"s": name, "g": group, "m": model}
        versions = self._versions.get((name, group, model))
        if versions is None:
            versions = [d["q"] for d in self._models.find({**who, "state": {"$exists": True}}, {"q": 1})
                        .sort("q", -1).limit(KEEP_MODEL_VERSIONS)]
        versions = sorted(set(versions) | {seq}, reverse=True)[:KEEP_MODEL_VERSIONS]
        self._versions[(name, group, model)] = versions
        if len(versions) == KEEP_MODEL_VERSIONS:
            older = {**who, "q": {"$lt": versions[-1]}, "state": {"$exists": True}}
            if point is None:
                self._models.delete_many(older)
            else:
                self._models.update_many(older, {"$unset": {"state": ""}})
        if seq > KEEP_MODEL_HISTORY and seq % _HISTORY_TRIM == 0:
            self._models.delete_many({**who, "q": {"$lte": seq - KEEP_MODEL_HISTORY}})

    @_retried
    def load_model(self, name: str, group: str, model: str) -> tuple[int, int, dict] | None:
        doc = self._models.find_one({"s": name, "g": group, "m": model, "state": {"$exists": True}},
                                    sort=[("q", -1)])
        return None if doc is None else (doc["q"], doc["saved"], doc["state"])

    @_retried
    def models(self, name: str) -> list[tuple[str, str, int, int]]:
        newest: dict[tuple[str, str], tuple[str, str, int, int]] = {}
        for d in self._models.find({"s": name, "state": {"$exists": True}}, {"g": 1, "m": 1, "q": 1, "saved": 1}):
            key = (d["g"], d["m"])
            if key not in newest or d["q"] > newest[key][2]:
                newest[key] = (d["g"], d["m"], d["q"], d["saved"])
        return [newest[k] for k in sorted(newest)]

    @_retried
    def model_history(self, name: str, group: str, model: str,
                      limit: int = KEEP_MODEL_HISTORY) -> list[tuple[int, int, dict]]:
        limit = max(0, int(limit))
        if not limit:
            return []
        docs = self._models.find({"s": name, "g": group, "m": model, "p": {"$exists": True}},
                                 {"q": 1, "saved": 1, "p": 1}).sort("q", -1).limit(limit)
        return [(d["q"], d["saved"], d["p"]) for d in docs][::-1]

    # -- idempotency keys -------------------------------------------------------
    #
    # One document per attempt at a keyed batch, ``_id`` "<stream>/<attempt>/<key>": the
    # unique insert of attempt 1 decides which request appends. Its document records the
    # batch token and the newest offset before the append, and after it the offsets
    # (state "done"). Another request with the key waits for "done"; if the attempt's lease
    # lapses first (its process died), the next attempt is inserted (unique again) and
    # its owner finds the items the dead attempts stored — documents after their recorded
    # offset that carry their token, a prefix of the batch — and appends only the rest.
    # Every update is to a document that only its owner writes. The lease is short and
    # renewed by the owner's process while it appends, and an owner that cannot renew
    # stops before its lease lapses (keylease.py: the lease, the renewals, the fence).

    def _index_keys(self) -> None:
        if not self._keys_indexed:
            self._keys.create_index([("s", 1), ("k", 1)])
            self._keys.create_index([("created", 1)])
            self._keys_indexed = True

    @_retried
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

    @_retried
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

    @_retried
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

    @_retried
    def forget_keys(self, older_than: int) -> int:
        return self._keys.delete_many({"created": {"$lt": older_than}}).deleted_count
