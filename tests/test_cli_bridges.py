"""The bridge commands as a user runs them: `streamlog listen`, `streamlog publish` and
`streamlog bridge` in real subprocesses, stopped with SIGTERM."""

from __future__ import annotations

import json
import signal
import socket

import pytest
from conftest import _free_port
from helpers import reaped, wait_until
from test_bridge_mqtt import (
    Subscriber,
    broker,  # noqa: F401 - a fixture, which pytest finds by its name
    publish,
)
from test_cli import LineReader, streamlog_process

import streamlog


def _stop(proc) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def _connect(port: int, deadline: float = 20.0) -> socket.socket:
    holder: dict = {}

    def attempt():
        try:
            holder["s"] = socket.create_connection(("127.0.0.1", port), timeout=5)
            return True
        except OSError:
            return False

    wait_until(attempt, timeout=deadline, interval=0.05, message=f"a listener on port {port}")
    return holder["s"]


def test_listen_appends_lines_from_a_tcp_client_and_stops_on_sigterm(url):
    port = _free_port()
    proc = streamlog_process(["listen", f"tcp://127.0.0.1:{port}", "--stream", "lines",
                              "--status-every", "0"], url)
    try:
        client = _connect(port)
        client.sendall(b'{"n": 1}\n{"n": 2}\nnope\n# ack\n')
        replies = b""
        while b"ok line 4" not in replies:
            chunk = client.recv(1000)
            assert chunk, replies
            replies += chunk
        assert replies.startswith(b"error line 3: not valid JSON")
        client.close()
    finally:
        code, out, err = _stop(proc)
    assert code == 0, err
    assert "2 items appended to lines (3 lines, 1 error)" in out
    assert [r["data"] for r in streamlog.connect(url).get("lines").read()] == [{"n": 1}, {"n": 2}]


def test_listen_refuses_other_hosts_without_a_token(url):
    proc = streamlog_process(["listen", "tcp://0.0.0.0:9", "--stream", "lines"], url)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "token" in err.lower() and "Traceback" not in err


def test_publish_sends_new_items_as_json_lines(url):
    stream = streamlog.connect(url).stream("out")
    stream.append({"old": True})
    port = _free_port()
    proc = streamlog_process(["publish", "out", f"tcp://127.0.0.1:{port}", "--start", "earliest",
                              "--status-every", "0"], url)
    try:
        client = _connect(port)
        reader = LineReader(client.makefile("r"))
        wait_until(lambda: reader.lines, message="the history")
        stream.append({"new": 1})
        wait_until(lambda: len(reader.lines) >= 2, message="a new item")
        records = [json.loads(line) for line in reader.lines[:2]]
        assert [r["data"] for r in records] == [{"old": True}, {"new": 1}]
        assert [r["offset"] for r in records] == [0, 1]
        client.close()
    finally:
        code, out, err = _stop(proc)
    assert code == 0, err


@pytest.mark.mongo
def test_bridge_follows_a_mongodb_collection(mongo_server, sqlite_url):
    import uuid

    import pymongo

    database = f"src{uuid.uuid4().hex[:8]}"
    source = pymongo.MongoClient(mongo_server)[database]["orders"]
    source.insert_many([{"_id": i, "item": f"x{i}"} for i in range(3)])
    address = mongo_server.replace("mongodb://", "mongodb-collection://") + f"/{database}/orders"
    proc = streamlog_process(["bridge", address, "--stream", "orders", "--poll", "0.1",
                              "--status-every", "0"], sqlite_url)
    try:
        stream = streamlog.connect(sqlite_url).stream("orders")
        wait_until(lambda: len(stream) == 3, message="the existing documents")
        source.insert_one({"_id": 3, "item": "x3"})
        wait_until(lambda: len(stream) == 4, message="a new document")
    finally:
        code, out, err = _stop(proc)
        source.database.client.drop_database(database)
    assert code == 0, err
    assert [r["data"]["item"] for r in stream.read()] == ["x0", "x1", "x2", "x3"]


def test_bridge_refuses_an_unknown_source(url):
    proc = streamlog_process(["bridge", "ftp://host/x", "--stream", "s"], url)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "mqtt://" in err and "Traceback" not in err


# ---------------------------------------------------------------------------
# a dropped stream ends every bridge: exit code 3 and one error line naming the stream


def _ends_as_dropped(proc, name: str, started: str, deadline: float = 30.0) -> str:
    """Wait (bounded) for ``proc`` to end by itself; assert exit code 3 and that stderr,
    besides the line announcing the start, is one ``streamlog: error:`` line naming the
    stream. Returns that line (the caller checks its wording)."""
    try:
        wait_until(lambda: proc.poll() is not None, timeout=deadline, interval=0.05,
                   message="the bridge to end after its stream was dropped")
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate(timeout=10)
    lines = [line for line in err.splitlines() if line.strip() and started not in line]
    assert proc.returncode == 3, err
    assert len(lines) == 1, err
    assert lines[0].startswith("streamlog: error: ") and repr(name) in lines[0], err
    return lines[0]


def test_listen_ends_with_exit_3_when_its_stream_is_dropped(url):
    port = _free_port()
    proc = streamlog_process(["listen", f"tcp://127.0.0.1:{port}", "--stream", "lines", "--flush-ms", "10",
                              "--status-every", "0"], url)
    with reaped(proc):
        client = _connect(port)
        reader = LineReader(client.makefile("r"))
        client.sendall(b'{"n": 1}\n# ack\n')
        wait_until(lambda: "ok line 2\n" in reader.lines, message="the first line stored")
        streamlog.connect(url).get("lines").drop()
        client.sendall(b'{"n": 2}\n')
        line = _ends_as_dropped(proc, "lines", "listening on")
        wait_until(lambda: any(x.startswith("error line 3: not stored") for x in reader.lines),
                   message="the line answered as not stored")
        client.close()
    assert line == "streamlog: error: stream 'lines' was dropped while the bridge appended to it"


def test_publish_ends_with_exit_3_when_its_stream_is_dropped(url):
    stream = streamlog.connect(url).stream("out")
    stream.append({"old": True})
    port = _free_port()
    proc = streamlog_process(["publish", "out", f"tcp://127.0.0.1:{port}", "--start", "earliest",
                              "--status-every", "0"], url)
    with reaped(proc):
        client = _connect(port)
        reader = LineReader(client.makefile("r"))
        wait_until(lambda: reader.lines, message="the history")
        stream.drop()
        line = _ends_as_dropped(proc, "out", "publishing out")
        client.close()
    assert line == "streamlog: error: stream 'out' was dropped while publishing it"


@pytest.mark.mongo
def test_bridge_from_a_collection_ends_with_exit_3_when_its_stream_is_dropped(mongo_server, sqlite_url):
    import uuid

    import pymongo

    database = f"src{uuid.uuid4().hex[:8]}"
    source = pymongo.MongoClient(mongo_server)[database]["orders"]
    source.insert_one({"_id": 0, "item": "x0"})
    address = mongo_server.replace("mongodb://", "mongodb-collection://") + f"/{database}/orders"
    proc = streamlog_process(["bridge", address, "--stream", "orders", "--poll", "0.1",
                              "--status-every", "0"], sqlite_url)
    try:
        with reaped(proc):
            stream = streamlog.connect(sqlite_url).stream("orders")
            wait_until(lambda: len(stream) == 1, message="the existing document")
            stream.drop()
            source.insert_one({"_id": 1, "item": "x1"})
            line = _ends_as_dropped(proc, "orders", "bridging")
    finally:
        source.database.client.drop_database(database)
    assert line == "streamlog: error: stream 'orders' was dropped while the bridge appended to it"


def test_bridge_from_mqtt_ends_with_exit_3_when_its_stream_is_dropped(request, sqlite_url):
    mqtt_broker = request.getfixturevalue("broker")
    proc = streamlog_process(["bridge", mqtt_broker.url("plant/temp"), "--stream", "readings", "--flush-ms", "10",
                              "--status-every", "0"], sqlite_url)
    with reaped(proc):
        stream = streamlog.connect(sqlite_url).stream("readings")

        def first_stored():
            publish(mqtt_broker, [("plant/temp", {"t": 1})])
            return len(stream) >= 1

        wait_until(first_stored, timeout=20, interval=0.5, message="a message stored (the bridge subscribed)")
        stream.drop()
        publish(mqtt_broker, [("plant/temp", {"t": 2})])
        line = _ends_as_dropped(proc, "readings", "bridging")
    assert line == "streamlog: error: stream 'readings' was dropped while the bridge appended to it"


def test_run_with_an_mqtt_sink_ends_with_exit_3_when_its_stream_is_dropped(request, sqlite_url, tmp_path):
    mqtt_broker = request.getfixturevalue("broker")
    consumer = tmp_path / "consumer.py"
    consumer.write_text("def count(window):\n    return {'n': len(window)}\n")
    stream = streamlog.connect(sqlite_url).stream("readings")
    subscriber = Subscriber(mqtt_broker, "counts")
    proc = streamlog_process(["run", f"{consumer}:count", "--stream", "readings", "--size", "1",
                              "--sink", mqtt_broker.url("counts")], sqlite_url)
    try:
        with reaped(proc):
            stream.append({"t": 1})
            wait_until(lambda: subscriber.messages, message="the first window's record published")
            stream.drop()
            line = _ends_as_dropped(proc, "readings", "Ctrl-C or SIGTERM stops")
    finally:
        subscriber.close()
    assert line == "streamlog: error: no stream named 'readings'"  # the consumer runtime's own message
