"""The MongoDB-collection source bridge (streamlog.bridges.collection) against FerretDB:
a fresh source database per test, the target stream on FerretDB or the embedded file.

FerretDB v1 has no change streams, so the bridge polls by _id here; the capability
check and its fallback are tested, the change-stream path itself needs a replica set."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import struct
import threading
import time
import uuid
from collections import Counter

import pymongo
import pytest
from bson import Binary, Int64, ObjectId, Regex
from bson.decimal128 import Decimal128
from bson.timestamp import Timestamp
from helpers import wait_until

import streamlog
from streamlog.bridges.collection import CollectionSource, convert_document, parse_collection_url

pytestmark = [pytest.mark.mongo, pytest.mark.timeout(30)]

UTC = dt.timezone.utc


# -- fixtures ------------------------------------------------------------------------

class Source:
    """A fresh collection on the test server, and its bridge URL."""

    def __init__(self, base: str, database: str, name: str = "events"):
        self.client = pymongo.MongoClient(base, serverSelectionTimeoutMS=5000)
        self.database = database
        self.coll = self.client[database][name]
        self.url = f"mongodb-collection://{base.split('://', 1)[1]}/{database}/{name}"

    def insert(self, docs: list[dict]) -> list:
        return self.coll.insert_many(docs).inserted_ids


@pytest.fixture
def source(mongo_server):
    src = Source(mongo_server, f"src{uuid.uuid4().hex[:12]}")
    yield src
    src.client.drop_database(src.database)
    src.client.close()


@pytest.fixture
def mongo_target(mongo_url):
    """A fresh streamlog database on the test server."""
    return mongo_url


class Running:
    """A bridge serving in a thread; ``stop()`` stops it and re-raises what it raised."""

    def __init__(self, bridge: CollectionSource):
        self.bridge = bridge
        self.error: BaseException | None = None
        self.result: dict | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.bridge.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop()
            self.error = exc

    def stop(self, timeout: float = 10.0) -> dict:
        started = time.monotonic()
        self.bridge.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the bridge did not stop"
        assert time.monotonic() - started < 5, "stopping took too long"
        if self.error is not None:
            raise self.error
        return self.result


def bridge(src: Source, stream, **options) -> CollectionSource:
    options.setdefault("poll", 0.05)
    options.setdefault("status_every", None)
    return CollectionSource(src.url, stream, **options)


def ids_of(stream) -> list:
    return [r["data"]["_id"] for r in stream.read(0, None)]


def wait_len(stream, n: int, timeout: float = 10.0) -> None:
    wait_until(lambda: len(stream) >= n, timeout=timeout, message=f"{n} items in {stream.name}")
    time.sleep(0.2)  # nothing more arrives
    assert len(stream) == n


def oid(seconds: int, rest: int) -> ObjectId:
    """An ObjectId with the given time and the 8 other bytes from ``rest``."""
    return ObjectId(struct.pack(">IQ", seconds, rest))


# -- following -----------------------------------------------------------------------

def test_existing_documents_then_new_ones_in_id_order(source, mongo_target):
    first = source.insert([{"n": i} for i in range(40)])
    stream = streamlog.connect(mongo_target).stream("copy")
    running = Running(bridge(source, stream, batch=16))
    wait_len(stream, 40)
    assert ids_of(stream) == [str(i) for i in sorted(first)]
    more = source.insert([{"n": i} for i in range(40, 50)]) + source.insert([{"n": 50}])
    wait_len(stream, 51)
    counters = running.stop()
    assert ids_of(stream) == [str(i) for i in first + more]
    assert [r["data"]["n"] for r in stream.read(0, None)] == list(range(51))
    assert counters["received"] == counters["stored"] == 51 and counters["errors"] == 0
    assert running.bridge.mode == "polling"


def test_documents_become_items(source, sqlite_url):
    ref = ObjectId()
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    some_uuid = uuid.uuid4()
    doc = {
        "ref": ref, "when": when, "nested": {"a": [1, {"b": ref}], "c": {"d": when}},
        "big": Int64(2**40), "x": 1.5, "s": "text", "flag": True, "none": None,
        "raw": b"\x00\x01bytes", "uuid": Binary(some_uuid.bytes, 4), "re": Regex("^a", "i"),
        "ts": Timestamp(5, 1),
    }
    [doc_id] = source.insert([doc])
    stream = streamlog.connect(sqlite_url).stream("items")
    running = Running(bridge(source, stream))
    wait_len(stream, 1)
    running.stop()
    item = stream.read(0, None)[0]["data"]
    assert item["_id"] == str(doc_id) and item["ref"] == str(ref)
    assert item["when"] == when and item["nested"] == {"a": [1, {"b": str(ref)}], "c": {"d": when}}
    assert item["big"] == 2**40 and type(item["big"]) is int
    assert (item["x"], item["s"], item["flag"], item["none"]) == (1.5, "text", True, None)
    assert item["raw"] == "AAFieXRlcw=="  # base64
    assert item["uuid"] == str(some_uuid)
    assert isinstance(item["re"], str) and isinstance(item["ts"], str)
    assert ObjectId(item["_id"]) == doc_id  # joins back


def test_conversion_rules_for_what_ferretdb_cannot_store():
    """Decimal128 and keys with '$' or '.' (real MongoDB stores them; FerretDB v1 does not)."""
    item = convert_document({"_id": 7, "$price.usd": Decimal128("12.50"), "a.b": {"$c": Decimal128("NaN")},
                             "": 1, "when": dt.datetime(2024, 1, 1, tzinfo=UTC)})
    assert item == {"_id": 7, "_price_usd": 12.5, "a_b": {"_c": item["a_b"]["_c"]}, "_": 1,
                    "when": dt.datetime(2024, 1, 1, tzinfo=UTC)}
    assert item["a_b"]["_c"] != item["a_b"]["_c"]  # NaN (stored as None)
    with pytest.raises(streamlog.BadItemError, match="'a.b'.*becomes 'a_b'"):
        convert_document({"a_b": 1, "a.b": 2})


def test_documents_streamlog_cannot_store_are_skipped_and_counted(source, sqlite_url, caplog):
    source.insert([{"n": 0}, {"n": 1, "huge": "x" * (1_100_000)}, {"n": 2}])
    stream = streamlog.connect(sqlite_url).stream("skips")
    with caplog.at_level(logging.WARNING, logger="streamlog"):
        running = Running(bridge(source, stream))
        wait_len(stream, 2)
        source.insert([{"n": 3}])
        wait_len(stream, 3)
        counters = running.stop()
    assert [r["data"]["n"] for r in stream.read(0, None)] == [0, 2, 3]
    assert counters["errors"] == 1 and counters["received"] == 4 and counters["stored"] == 3
    assert any("skipped document" in r.getMessage() and "1 MiB" in r.getMessage() for r in caplog.records)


# -- resuming ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["objectid", "int", "hexstring"])
def test_stop_and_restart_continue_without_rereading(source, sqlite_url, kind):
    def docs(lo, hi):
        make = {"objectid": lambda i: {"n": i},
                "int": lambda i: {"_id": i, "n": i},
                "hexstring": lambda i: {"_id": f"{i:024x}", "n": i}}[kind]
        return [make(i) for i in range(lo, hi)]

    source.insert(docs(0, 60))
    stream = streamlog.connect(sqlite_url).stream("resume")
    first = Running(bridge(source, stream, batch=7))
    wait_until(lambda: len(stream) >= 7, message="a first batch")
    one = first.stop()  # stops after the batch in hand: a multiple of 7 or all 60
    assert one["stored"] == len(stream) and (len(stream) % 7 == 0 or len(stream) == 60)
    source.insert(docs(60, 80))  # while stopped
    second = Running(bridge(source, stream, batch=7))
    wait_len(stream, 80)
    two = second.stop()
    assert two["received"] == 80 - one["stored"], "re-read documents already appended"
    third = Running(bridge(source, stream))
    time.sleep(0.5)
    three = third.stop()
    assert three["received"] == 0 and len(stream) == 80
    items = [r["data"] for r in stream.read(0, None)]
    assert [d["n"] for d in items] == list(range(80))  # each once, in order
    expected = {"int": list(range(80)), "hexstring": [f"{i:024x}" for i in range(80)]}.get(kind)
    if expected:
        assert [d["_id"] for d in items] == expected


def test_target_on_the_embedded_file_source_on_ferretdb(source, sqlite_url):
    source.insert([{"n": i, "at": dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i)}
                   for i in range(100)])
    stream = streamlog.stream("from-ferret", url=sqlite_url)
    running = Running(bridge(source, stream, batch=25))
    wait_len(stream, 100)
    source.insert([{"n": 100}])
    wait_len(stream, 101)
    running.stop()
    again = Running(bridge(source, stream))
    source.insert([{"n": 101}])
    wait_len(stream, 102)
    assert again.stop()["received"] == 1
    items = [r["data"] for r in stream.read(0, None)]
    assert [d["n"] for d in items] == list(range(102))
    assert Counter(d["_id"] for d in items).most_common(1)[0][1] == 1
    assert items[5]["at"] == dt.datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert stream.client.url.startswith("sqlite:")


def test_late_object_ids_within_the_overlap_arrive_once(source, sqlite_url):
    """An ObjectId smaller than one already read (another client, same second) is found
    by the overlap window, and a restart does not append it again; without the window
    it is missed (the documented assumption of polling)."""
    now = int(time.time())
    high, low = oid(now, 2**63), oid(now, 1)
    source.coll.insert_one({"_id": high, "n": "high"})
    stream = streamlog.connect(sqlite_url).stream("late")
    running = Running(bridge(source, stream, overlap=2.0))
    wait_len(stream, 1)
    source.coll.insert_one({"_id": low, "n": "low"})  # visible after `high` was read
    wait_len(stream, 2)
    running.stop()
    assert ids_of(stream) == [str(high), str(low)]
    again = Running(bridge(source, stream, overlap=2.0))
    source.coll.insert_one({"_id": oid(now, 2**63 + 5), "n": "next"})
    wait_len(stream, 3)
    assert again.stop()["received"] == 1
    assert [r["data"]["n"] for r in stream.read(0, None)] == ["high", "low", "next"]

    plain = streamlog.connect(sqlite_url).stream("no-overlap")
    without = Running(bridge(source, plain, overlap=0))
    wait_len(plain, 3)  # high, low, next: in _id order from scratch
    source.coll.insert_one({"_id": oid(now, 2), "n": "missed"})
    time.sleep(0.5)
    without.stop()
    assert "missed" not in [r["data"]["n"] for r in plain.read(0, None)]


# -- modes, outages, stopping, bad input -------------------------------------------------

def test_change_streams_fall_back_to_polling_on_ferretdb(source, sqlite_url, caplog):
    stream = streamlog.connect(sqlite_url).stream("modes")
    source.insert([{"n": 1}])
    with caplog.at_level(logging.INFO, logger="streamlog"):
        running = Running(bridge(source, stream, change_streams="auto"))
        wait_len(stream, 1)
        assert running.bridge.mode == "polling"
        assert running.bridge.status_line().endswith("mode polling")
        running.stop()
    assert any("change streams are not available" in r.getMessage() and "polling" in r.getMessage()
               for r in caplog.records)
    required = bridge(source, stream, change_streams="on")
    with pytest.raises(streamlog.StreamlogError, match="no change streams") as caught:
        required.run()
    assert "\n" not in str(caught.value)
    off = Running(bridge(source, stream, change_streams=False))
    source.insert([{"n": 2}])
    wait_len(stream, 2)
    assert off.bridge.mode == "polling"
    off.stop()


def test_source_server_restart(own_ferretdb, sqlite_url, monkeypatch):
    monkeypatch.setenv("STREAMLOG_RETRY_TIMEOUT", "20")
    monkeypatch.setenv("STREAMLOG_CONNECT_TIMEOUT", "0.5")  # server selection gives up (and retries) sooner
    src = Source(own_ferretdb.base, "restart")
    src.insert([{"n": i} for i in range(10)])
    stream = streamlog.connect(sqlite_url).stream("outage")
    running = Running(bridge(src, stream, batch=4))
    wait_len(stream, 10)
    own_ferretdb.stop()
    wait_until(lambda: running.bridge.counters.errors, timeout=5, message="the outage noticed")
    time.sleep(0.5)  # the bridge retries against a stopped server
    assert running.thread.is_alive() and running.error is None
    own_ferretdb.start()
    src.client.close()
    src = Source(own_ferretdb.base, "restart")
    src.insert([{"n": i} for i in range(10, 20)])
    wait_len(stream, 20)
    counters = running.stop()
    src.client.close()
    assert [r["data"]["n"] for r in stream.read(0, None)] == list(range(20))
    assert counters["errors"] == 1 and counters["stored"] == counters["received"] == 20


def test_an_outage_longer_than_the_retry_timeout_is_one_clear_error(own_ferretdb, sqlite_url, monkeypatch):
    monkeypatch.setenv("STREAMLOG_RETRY_TIMEOUT", "1")
    secret = "s3cr3t"
    src = Source(own_ferretdb.base, "gone")
    src.insert([{"n": 1}])
    src.client.close()
    stream = streamlog.connect(sqlite_url).stream("gone")
    url = src.url.replace("://", f"://user:{secret}@", 1)
    own_ferretdb.stop()
    with pytest.raises(streamlog.UnreachableError) as caught:
        CollectionSource(url, stream, poll=0.05, status_every=None).run()
    message = str(caught.value)
    assert "STREAMLOG_RETRY_TIMEOUT" in message and "\n" not in message and secret not in message


def test_stop_waits_for_the_batch_in_hand_and_sigterm_stops(source, sqlite_url):
    source.insert([{"n": i} for i in range(300)])
    stream = streamlog.connect(sqlite_url).stream("stop")
    one = bridge(source, stream, batch=10, status_every=0.1)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        counters = one.run()  # main thread: SIGTERM handled by the bridge
    finally:
        timer.cancel()
    assert counters["stored"] == len(stream) and len(stream) % 10 == 0
    assert [r["data"]["n"] for r in stream.read(0, None)] == list(range(len(stream)))
    rest = Running(bridge(source, stream, batch=50))
    wait_len(stream, 300)
    rest.stop()
    assert [r["data"]["n"] for r in stream.read(0, None)] == list(range(300))


@pytest.mark.parametrize("url, message", [
    ("mongodb-collection://127.0.0.1/db", "database and a collection"),
    ("mongodb-collection://127.0.0.1/db/", "database and a collection"),
    ("mongodb-collection://127.0.0.1", "database and a collection"),
    ("mongodb-collection:///db/coll", "no host"),
    ("mongodb-collection://u:pa$$word@127.0.0.1/db/a$b", "collection name"),
    ("mongodb-collection://u:pa/ss@127.0.0.1/db/c", "percent-escaped"),
    ("mongodb-collection://u:pa$$word@127.0.0.1:99999/db/c", "Port"),
    ("mongodb-collection://127.0.0.1/bad.db/c", "database name"),
    ("http://127.0.0.1/db/c", "unsupported source URL scheme"),
    ("mongodb://127.0.0.1/db", "name the collection"),
    ("", "empty"),
])
def test_bad_urls_are_one_line_errors(url, message, sqlite_url):
    stream = streamlog.connect(sqlite_url).stream("bad")
    with pytest.raises(streamlog.BadURLError, match=message) as caught:
        CollectionSource(url, stream)
    text = str(caught.value)
    assert "\n" not in text and "pa$$word" not in text and "pa/ss" not in text


def test_url_forms():
    assert parse_collection_url("MongoDB-Collection://u:p%40ss@h:27017/db/a.b%2Fc?authSource=admin") == (
        "mongodb://u:p%40ss@h:27017/db?authSource=admin", "db", "a.b/c")
    assert parse_collection_url("mongodb://h/db", collection="coll") == ("mongodb://h/db", "db", "coll")
    with pytest.raises(streamlog.StreamlogError, match="batch"):
        CollectionSource("mongodb-collection://h/db/c", None, batch=0)


# -- the change-stream path, with a stand-in server ---------------------------------------
# FerretDB has no change streams and no replica set runs here: the collection's watch()
# and the session's operation time are simulated over the real (FerretDB) collection,
# which still serves the catch-up reads. Event i has the resume token {"_data": "%08d" % i}
# and cluster time Timestamp(i, 0).

class FakeChangeStream:
    def __init__(self, log: "ChangeLog", first: int):
        self.log, self.pos, self.closed = log, first, False

    def try_next(self):
        if self.log.fail_next:
            self.log.fail_next -= 1
            raise pymongo.errors.AutoReconnect("connection closed (injected)")
        if self.pos < len(self.log.events):
            self.pos += 1
            return self.log.events[self.pos - 1]
        time.sleep(0.01)
        return None

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ChangeLog:
    """The events of a collection with change streams, and what watch() was asked."""

    def __init__(self, real):
        self.real, self.events, self.opened, self.fail_next, self.lost_before = real, [], [], 0, 0

    def insert(self, docs: list[dict]) -> None:
        for doc in docs:
            doc.setdefault("_id", ObjectId())
            self.real.insert_one(doc)
            self.events.append({"_id": {"_data": f"{len(self.events):08d}"}, "operationType": "insert",
                                "fullDocument": dict(doc), "documentKey": {"_id": doc["_id"]},
                                "wallTime": dt.datetime.now(UTC)})


class FakeCollection:
    def __init__(self, log: ChangeLog, source):
        self.log, self.source = log, source

    def find(self, *args, session=None, **kwargs):
        return self.source.find(*args, **kwargs)

    def find_one(self, *args, **kwargs):
        return self.source.find_one(*args, **kwargs)

    def watch(self, pipeline, resume_after=None, start_at_operation_time=None, max_await_time_ms=None):
        assert pipeline == [{"$match": {"operationType": "insert"}}]
        self.log.opened.append({"resume_after": resume_after, "start_at": start_at_operation_time})
        if resume_after is not None:
            seq = int(resume_after["_data"])
            if seq < self.log.lost_before:
                raise pymongo.errors.OperationFailure("resume point no longer in the oplog", code=286)
            return FakeChangeStream(self.log, seq + 1)
        if start_at_operation_time is not None:
            return FakeChangeStream(self.log, start_at_operation_time.time)
        return FakeChangeStream(self.log, len(self.log.events))


class FakeSession:
    def __init__(self, log: ChangeLog):
        self.log = log

    @property
    def operation_time(self):
        return Timestamp(len(self.log.events), 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class FakeClient:
    def __init__(self, log: ChangeLog, real):
        self.log, self.real = log, real

    def start_session(self, **options):
        return FakeSession(self.log)

    def close(self):
        self.real.close()


def change_stream_bridge(src: Source, log: ChangeLog, stream, **options) -> CollectionSource:
    b = bridge(src, stream, **options)
    b.source, b.client = FakeCollection(log, b.source), FakeClient(log, b.client)
    return b


def test_change_streams_catch_up_then_follow_and_resume_by_token(source, sqlite_url, caplog):
    log = ChangeLog(source.coll)
    log.insert([{"n": i} for i in range(5)])  # before the bridge: read by the catch-up
    stream = streamlog.connect(sqlite_url).stream("changes")
    with caplog.at_level(logging.INFO, logger="streamlog"):
        first = Running(change_stream_bridge(source, log, stream, batch=2))
        wait_len(stream, 5)
    assert first.bridge.mode == "change-stream"
    assert any("with a change stream" in r.getMessage() for r in caplog.records)
    log.insert([{"n": i} for i in range(5, 8)])
    wait_len(stream, 8)
    log.fail_next = 1  # a dropped connection: reopened from the last token
    log.insert([{"n": 8}])
    wait_len(stream, 9)
    counters = first.stop()
    assert counters["errors"] == 1 and counters["stored"] == 9
    items = [r["data"] for r in stream.read(0, None)]
    assert [d["n"] for d in items] == list(range(9))
    assert "_resume" not in items[4] and [d["_resume"] for d in items[5:]] == ["00000005", "00000006",
                                                                              "00000007", "00000008"]
    assert log.opened[1]["start_at"] == Timestamp(5, 0)  # [0] is the capability probe
    assert log.opened[-1]["resume_after"] == {"_data": "00000007"}

    log.insert([{"n": 9}, {"n": 10}])  # while stopped
    second = Running(change_stream_bridge(source, log, stream))
    wait_len(stream, 11)
    assert second.stop()["received"] == 2
    assert log.opened[-1]["resume_after"] == {"_data": "00000008"}
    assert [r["data"]["n"] for r in stream.read(0, None)] == list(range(11))

    log.lost_before = 100  # the token fell out of the server's history: catch up by _id
    log.insert([{"n": 11}])
    third = Running(change_stream_bridge(source, log, stream))
    wait_len(stream, 12)
    log.insert([{"n": 12}])
    wait_len(stream, 13)
    assert third.stop()["errors"] == 1
    assert [r["data"]["n"] for r in stream.read(0, None)] == list(range(13))


def test_wrong_credentials_are_one_clear_error_without_the_password(auth_ferretdb, sqlite_url):
    from urllib.parse import quote

    secret = "wr0ng/p@ss"
    url = (f"mongodb-collection://admin:{quote(secret, safe='')}@127.0.0.1:{auth_ferretdb.port}/db/coll"
           "?authSource=admin")
    stream = streamlog.connect(sqlite_url).stream("auth")
    with pytest.raises(streamlog.StreamlogError) as caught:
        CollectionSource(url, stream, status_every=None).run()
    message = str(caught.value)
    assert "credentials" in message and "\n" not in message
    assert secret not in message and quote(secret, safe="") not in message
