"""Push wake-ups on MongoDB-wire servers (streamlog.store.mongo_wakeups): where the server
keeps a tailable cursor open on a capped collection (FerretDB v1 here; MongoDB too), an
idle consumer waits on the producers' signals instead of polling; elsewhere (FerretDB v2)
it polls. Either way an item appended after a long pause is delivered."""

from __future__ import annotations

import threading
import time
import uuid

import pymongo
import pytest
from helpers import listened_client, store_commands, wait_until

import streamlog
from streamlog.store.mongo import MongoStore
from streamlog.store.mongo_wakeups import TailWatch, tailable


def _database(server: str):
    name = f"w{uuid.uuid4().hex[:10]}"
    return f"{server}/{name}", name


def test_a_signal_wakes_a_tail_watch_and_silence_times_out(ferretdb_v1_server):
    url, name = _database(ferretdb_v1_server)
    client = pymongo.MongoClient(ferretdb_v1_server)
    try:
        db = client[name]
        assert tailable(db)  # FerretDB v1 keeps tailable await cursors open
        producer = MongoStore(url, name)
        watch = TailWatch(db, "s")
        try:
            watch.wait(0.05)  # opens the cursor (and reports a possible change)
            while watch.wait(0.05):
                pass  # signals from before this watch opened
            assert watch.wait(0.2) is False  # nothing: the wait times out
            producer.create_stream("s")
            producer.append("s", [{"n": 1}], 0)  # the signal goes out from a background thread
            wait_until(lambda: watch.wait(0.5), timeout=10, message="the producer's signal")
        finally:
            watch.close()
            producer.close()
    finally:
        client.drop_database(name)
        client.close()


def test_an_idle_consumer_on_a_tailable_server_waits_for_signals_not_polls(ferretdb_v1_server):
    """After a quiet second the consumer stops probing the stream (one safety probe a
    second) and an append wakes it through the signal."""
    url, name = _database(ferretdb_v1_server)
    listener = store_commands()
    client = listened_client(url, listener)

    def probes() -> int:  # a consumer's reads of the stream's items
        return sum(1 for command, target in listener.sent if command == "find" and target == "items.s")

    seen: list[int] = []
    stream = client.stream("s")
    try:
        from streamlog.delivery.consumer import Consumer
        from streamlog.emitters import CountWindow

        worker = Consumer(stream, lambda window: seen.extend(window.offsets), CountWindow(1))
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        time.sleep(2.5)  # measured interval: let the consumer settle into its idle wait
        before = probes()
        time.sleep(2.0)
        probed = probes() - before
        assert probed <= 4, f"{probed} probes in 2 s: the idle consumer polls instead of waiting for signals"
        streamlog.stream("s", url=url).append({"n": 1})
        wait_until(lambda: seen == [0], timeout=10, message="the item appended after the pause")
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        client.close()
        pymongo.MongoClient(ferretdb_v1_server).drop_database(name)


@pytest.mark.parametrize("size", [1])
def test_an_item_after_a_long_pause_is_delivered_on_the_runs_server(mongo_url, size):
    """On the run's server (FerretDB v2 in CI: no tailable cursors, so polling) a consumer
    idle past its back-off still picks up a new item."""
    seen: list[int] = []
    stream = streamlog.stream("s", url=mongo_url)
    from streamlog.delivery.consumer import Consumer
    from streamlog.emitters import CountWindow

    worker = Consumer(stream, lambda window: seen.extend(window.offsets), CountWindow(size))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    time.sleep(1.5)  # measured interval: past the first idle second
    stream.append({"n": 1})
    wait_until(lambda: seen == [0], timeout=10, message="the item appended after the pause")
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_follower_of_streamlog_serve_is_woken_by_signals_after_a_pause(ferretdb_v1_server):
    """The SSE watcher uses the same wake-ups: a follower idle past the back-off gets an
    item appended by another process."""
    from fastapi.testclient import TestClient
    from test_serve_api import offsets_of, sse_events

    from streamlog.serve import create_app

    url, name = _database(ferretdb_v1_server)
    stream = streamlog.stream("s", url=url)
    stream.append({"n": 0})
    app = create_app(url)
    try:
        assert app.state.service.client.store.watch() is not None  # FerretDB v1: signals, not polling
        with TestClient(app) as http, http.stream("GET", "/streams/s/follow", params={"start": "latest"}) as r:
            threading.Timer(1.5, lambda: streamlog.stream("s", url=url).append({"n": 1})).start()
            events = [e for e in sse_events(r, 2) if "id" in e]  # retry, then the item
            assert offsets_of(events) == [1]
    finally:
        app.state.service.client.close()
        pymongo.MongoClient(ferretdb_v1_server).drop_database(name)


def test_on_ferretdb_v2_consumers_poll_because_it_closes_tailable_cursors(documentdb_server):
    """FerretDB v2 accepts a capped collection but ignores it: no push wake-ups there, and
    producers send no signals (no extra writes)."""
    url, name = _database(documentdb_server)
    client = pymongo.MongoClient(documentdb_server)
    try:
        assert tailable(client[name]) is False
        store = MongoStore(url, name)
        try:
            assert store.watch("s") is None
            store.create_stream("s")
            store.append("s", [{"n": 1}], 0)
            assert client[name]["wakeups"].count_documents({"s": "s"}) == 0
        finally:
            store.close()
    finally:
        client.drop_database(name)
        client.close()


def test_a_query_the_server_interrupted_is_retried_not_raised():
    """FerretDB v1 sometimes interrupts a query while a wake-up watch's getMore waits beside
    it (its SQLite 'interrupted (9)'): the store retries such a query like an outage."""
    from pymongo.errors import OperationFailure

    from streamlog.store.mongo_errors import is_transient

    interrupted = OperationFailure("[msg_find.go:344 handler.handleMaxTimeMSError] [collection.go:94 "
                                   "sqlite.(*collection).Query] interrupted (9)", code=1)
    assert is_transient(interrupted)
    assert not is_transient(OperationFailure("unknown operator: $foo", code=2))


def test_an_idle_embedded_consumer_sleeps_until_something_is_due_and_stops_at_once(tmp_path):
    """On the embedded backend the file watch can be interrupted: an idle consumer wakes
    for the periodic look (about once a second), not every STOP_CHECK, yet stop() ends
    its wait at once and an append still wakes it immediately."""
    from streamlog.delivery.consumer import Consumer
    from streamlog.emitters import CountWindow

    url = f"sqlite:///{tmp_path}/idle.db"
    stream = streamlog.stream("s", url=url)
    waits = []
    opened = stream.store.watch

    def counted(name=None):
        watch = opened(name)
        real = watch.wait
        watch.wait = lambda timeout: waits.append(timeout) or real(timeout)
        return watch

    stream.store.watch = counted
    seen: list[int] = []
    worker = Consumer(stream, lambda window: seen.extend(window.offsets), CountWindow(1))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    time.sleep(1.5)  # measured interval: let the consumer settle into its idle wait
    before = len(waits)
    time.sleep(2.0)
    assert len(waits) - before <= 5, f"{len(waits) - before} wake-ups in 2 s: the idle consumer polls"
    streamlog.stream("s", url=url).append({"n": 1})
    wait_until(lambda: seen == [0], timeout=5, message="the item appended after the pause")
    time.sleep(0.3)  # back in a long wait
    asked = time.monotonic()
    worker.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - asked < 0.5, "stop() waited for the idle wait to run out"
