"""The bridge commands as a user runs them: `streamlog listen`, `streamlog publish` and
`streamlog bridge` in real subprocesses, stopped with SIGTERM."""

from __future__ import annotations

import json
import signal
import socket

import pytest

import streamlog

from conftest import _free_port
from helpers import wait_until
from test_cli import LineReader, streamlog_process


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
