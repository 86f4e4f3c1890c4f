"""The MQTT bridge against a real mosquitto (started per test on a free 127.0.0.1 port,
with persistence in tmp_path): MQTTSource (broker → stream, at least once, persistent
session, reconnects, id de-duplication, graceful stop) and MQTTSink (consumer results →
broker, acknowledged before the window commits). Without mosquitto: skipped, or failed
when CI is set."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import IN_CI, _free_port
from helpers import run_python, wait_until

import streamlog
from streamlog import BadURLError, ConsumerError, UnreachableError
from streamlog.bridges.mqtt import MQTTSink, MQTTSource, parse_mqtt_url
from streamlog.delivery.consumer import Consumer
from streamlog.emitters import CountWindow

mqtt = pytest.importorskip("paho.mqtt.client")

pytestmark = pytest.mark.timeout(30)


def _mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class Broker:
    """A mosquitto on 127.0.0.1:port with persistence under ``directory``; restartable."""

    def __init__(self, binary: str, directory: Path):
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "max_queued_messages 0\n"
            # Started as root, mosquitto switches to the user "mosquitto", who cannot write
            # tmp_path: stay the user we are (no effect when not root).
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        )
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "mosquitto.log"

    def url(self, topic: str, userinfo: str = "") -> str:
        return f"mqtt://{userinfo}127.0.0.1:{self.port}/{topic}"

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited ({self.proc.returncode}): {self.log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(self._accepting, timeout=10, message="mosquitto to accept connections")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    binary = _mosquitto()
    if binary is None:
        message = "mosquitto not found: install the mosquitto package (apt-get install mosquitto)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    b = Broker(binary, tmp_path / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def publish(broker: Broker, messages, qos: int = 1, retain: bool = False) -> None:
    """Publish (topic, payload) pairs with QoS 1 and wait until the broker has them all."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = [client.publish(t, p if isinstance(p, bytes) else json.dumps(p), qos=qos, retain=retain)
                 for t, p in messages]
        for info in infos:
            info.wait_for_publish(5)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


class Subscriber:
    """A paho subscriber collecting (topic, JSON payload) pairs."""

    def __init__(self, broker: Broker, topic: str, client_id: str = ""):
        self.messages: list[tuple[str, object]] = []
        self.subscribed = threading.Event()
        # A client id: a persistent session (it gets what is published while it reconnects).
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=not client_id)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, json.loads(m.payload)))
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, timeout=5, message="the subscription")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def running(bridge: MQTTSource, ready: bool = True):
    """Run the bridge in a thread; on exit stop it and wait for run() to return."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(bridge.run()), daemon=True)
    thread.start()
    try:
        if ready:
            wait_until(lambda: bridge.ready.is_set() or not thread.is_alive(), timeout=10,
                       message="the bridge to subscribe")
            assert thread.is_alive(), "the bridge stopped"
        yield result
    finally:
        bridge.stop()
        thread.join(15)
        assert not thread.is_alive(), "the bridge did not stop"
    assert result, "run() raised"


def data(stream) -> list[dict]:
    return [r["data"] for r in stream.read(0, limit=None)]


def payloads(stream) -> list:
    return [d["payload"] for d in data(stream)]


# -- the source ----------------------------------------------------------------------------


def test_live_messages_of_every_kind_land_in_the_stream(broker, sqlite_url):
    stream = streamlog.stream("readings", sqlite_url)
    publish(broker, [("plant/r/reading", {"retained": True})], retain=True)
    source = MQTTSource(broker.url("plant/+/reading,alerts/%23"), stream, status_every=None, flush_ms=50)
    with running(source):
        wait_until(lambda: len(stream) == 1, timeout=5, message="the retained message")
        publish(broker, [
            ("plant/a/reading", {"t": 21.5, "unit": "C", "at": "2024-01-01T00:00:00Z"}),
            ("plant/b/reading", [1, 2, 3]),
            ("plant/c/reading", b"42"),
            ("plant/a/reading", "héllo wörld".encode()),
            ("plant/a/reading", b"\xff\x00\xfe"),
            ("plant/a/reading", b""),
            ("plant/a/reading", {"a.b": 1, "$x": 2}),  # JSON the log cannot hold as such
            ("plant/a/reading", b'{"big": 18446744073709551615}'),  # beyond 64 bits
            ("plant/a/reading", b"x" * 1_100_000),  # too big for an item (1 MiB)
            ("plant/a/other", {"ignored": 1}),  # matches no filter
            ("plant/a/b/reading", {"ignored": 2}),  # '+' is one level
            ("alerts/fire/room/1", {"level": "high"}),  # second filter, '#'
        ])
        wait_until(lambda: len(stream) == 11, timeout=5, message="11 items")
    items = data(stream)
    assert len(items) == 11
    assert items[0]["payload"] == {"retained": True} and items[0]["retain"] is True
    assert [i["topic"] for i in items[1:]] == ["plant/a/reading", "plant/b/reading", "plant/c/reading"] + \
        ["plant/a/reading"] * 6 + ["alerts/fire/room/1"]
    assert items[1]["payload"] == {"t": 21.5, "unit": "C", "at": "2024-01-01T00:00:00Z"}
    assert items[2]["payload"] == [1, 2, 3]
    assert items[3]["payload"] == 42
    assert items[4]["payload"] == "héllo wörld" and "encoding" not in items[4]
    assert items[5]["payload"] == "/wD+" and items[5]["encoding"] == "base64"
    assert items[6]["payload"] == ""
    assert items[7]["payload"] == '{"a.b": 1, "$x": 2}' and "not allowed" in items[7]["error"]
    assert items[8]["payload"] == '{"big": 18446744073709551615}' and "error" in items[8]
    assert items[9]["payload"] is None and items[9]["size"] == 1_100_000 and "1 MiB" in items[9]["error"]
    assert items[10]["payload"] == {"level": "high"}
    for item in items[1:]:
        assert item["qos"] == 1 and item["retain"] is False
        assert isinstance(item["received"], datetime) and item["received"].tzinfo is not None
        assert abs((datetime.now(timezone.utc) - item["received"]).total_seconds()) < 30
    counters = source.counters.snapshot()
    assert counters["received"] == 11 and counters["stored"] == 11
    assert counters["errors"] == 3  # the payloads stored with an error
    assert counters["lag"] is not None and 0 <= counters["lag"] < 5


OUT_OF_RANGE = "is an integer outside the 64-bit range"


@pytest.mark.parametrize("raw", [
    b'{"n": -9223372036854775809}', b'{"n": 18446744073709551616}', b'{"n": 1180591620717411303425}',
])
def test_payloads_and_lines_share_one_number_rule(raw):
    from streamlog.bridges.mqtt.messages import decode_payload as _payload
    from streamlog.errors import BadItemError
    from streamlog.lines import json_value, parse_json

    assert _payload(raw) == (json_value(raw), None)
    assert type(json_value(raw)["n"]) is int  # exact, never a float
    with pytest.raises(BadItemError) as refused:  # as `streamlog append` and the TCP bridge refuse it
        parse_json(raw, "line 1")
    assert str(refused.value) == f"line 1: item value at n {OUT_OF_RANGE}"


def test_integers_beyond_64_bits_are_stored_as_text_with_an_error_never_rounded(broker, url):
    # The MQTT payload decoder reads numbers by the one rule of `streamlog append`, the TCP
    # bridge and HTTP: an integer the log cannot hold exactly is refused, not rounded.
    stream = streamlog.stream("numbers", url)
    source = MQTTSource(broker.url("n/#"), stream, status_every=None, flush_ms=20)
    sent = [
        b'{"amount": 123456789012345678901234567890}',  # was stored as 1.2345678901234568e+29
        b'{"id": 1180591620717411303425}',  # 2**70 + 1: was the float 2**70
        b"-9223372036854775809",  # -2**63 - 1, 19 digits: orjson alone reads a float
        b"123456789012345678901234567890",  # a bare number
        b'[1, {"deep": [18446744073709551616]}]',  # 2**64, inside containers
        b'{"lo": -9223372036854775808, "hi": 9223372036854775807, "f": 0.12345678901234567890}',
    ]
    with running(source):
        publish(broker, [("n/x", raw) for raw in sent])
        wait_until(lambda: len(stream) == len(sent), timeout=10, message="every message stored")
    items = data(stream)
    for item, raw, where in zip(items, sent, ["payload.amount", "payload.id", "payload", "payload",
                                              "payload[1].deep[0]"], strict=False):
        assert item["payload"] == raw.decode(), raw  # the exact text, never a rounded number
        assert item["error"] == f"item value at {where} {OUT_OF_RANGE}", raw
    assert items[-1]["payload"] == {"lo": -2**63, "hi": 2**63 - 1, "f": 0.12345678901234568}
    assert "error" not in items[-1]
    assert source.counters.snapshot()["errors"] == 5


def test_id_field_never_drops_a_distinct_big_id(broker, url):
    stream = streamlog.stream("bigids", url)
    source = MQTTSource(broker.url("ids/#"), stream, id_field="id", status_every=None, flush_ms=20)
    # equal as floats, all distinct: two beyond 64 bits, the text of one, four at the edges
    distinct = [2**70, 2**70 + 1, str(2**70 + 1), 2**63 - 1, 2**63 - 2, -2**63, -2**63 + 1]
    with running(source):
        publish(broker, [("ids/x", f'{{"id": {json.dumps(i)}}}'.encode()) for i in distinct])
        wait_until(lambda: len(stream) == len(distinct), timeout=10, message="every distinct id")
        publish(broker, [("ids/x", b'{"id": 1180591620717411303425}')])  # a true duplicate of 2**70 + 1
        wait_until(lambda: source.duplicates == 1, timeout=5, message="the duplicate acknowledged")
    assert source.counters.received == len(distinct) + 1 and len(stream) == len(distinct)
    stored = payloads(stream)
    assert stored[:2] == [f'{{"id": {2**70}}}', f'{{"id": {2**70 + 1}}}']  # as text, with an error
    assert stored[2:] == [{"id": i} for i in distinct[2:]]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_messages_published_while_the_bridge_is_down_land_when_it_is_back(broker, sqlite_url, protocol):
    stream = streamlog.stream("offline", sqlite_url)
    url = broker.url("dev/%2B/t")
    with running(MQTTSource(url, stream, status_every=None, protocol=protocol)):
        pass  # the persistent session now exists on the broker
    publish(broker, [("dev/1/t", {"n": n}) for n in range(5)])
    again = MQTTSource(url, stream, status_every=None, protocol=protocol)
    with running(again):
        wait_until(lambda: len(stream) == 5, timeout=10, message="the queued messages")
    assert payloads(stream) == [{"n": n} for n in range(5)]
    assert again.counters.received == 5 and again.duplicates == 0


def test_messages_survive_broker_restarts(broker, sqlite_url):
    stream = streamlog.stream("restarts", sqlite_url)
    url = broker.url("r/#")
    source = MQTTSource(url, stream, status_every=None, flush_ms=20)
    with running(source):
        publish(broker, [("r/a", {"n": 1}), ("r/a", {"n": 2})])
        wait_until(lambda: len(stream) == 2, timeout=5, message="the first messages")
        broker.stop()
        wait_until(lambda: not source.ready.is_set() and source.counters.errors >= 1, timeout=5,
                   message="the bridge to notice")
        broker.start()
        wait_until(source.ready.is_set, timeout=10, message="the bridge to reconnect")
        publish(broker, [("r/b", {"n": 3}), ("r/b", {"n": 4})])
        wait_until(lambda: len(stream) == 4, timeout=5, message="messages after the restart")
    # Published while the bridge is down, then the broker restarts (persistence keeps them).
    publish(broker, [("r/c", {"n": 5}), ("r/c", {"n": 6})])
    broker.stop()
    broker.start()
    again = MQTTSource(url, stream, status_every=None)
    with running(again):
        wait_until(lambda: len(stream) == 6, timeout=10, message="messages kept across the restart")
    assert [p["n"] for p in payloads(stream)] == [1, 2, 3, 4, 5, 6]


def test_a_copy_whose_ack_was_lost_with_the_broker_is_not_stored_again(broker, sqlite_url):
    """Acks in flight when the broker stops never arrive: the restarted broker resends those
    messages (DUP) on the resumed session, and the bridge acknowledges them unstored."""
    stream = streamlog.stream("lostacks", sqlite_url)
    source = MQTTSource(broker.url("l/#"), stream, status_every=None, flush_ms=20)
    with running(source):
        client = source.client
        real_ack = client.ack
        client.ack = lambda mid, qos: None  # sent, as far as the bridge knows; the broker never hears it
        publish(broker, [("l/a", {"n": 1}), ("l/a", {"n": 2})])
        wait_until(lambda: len(stream) == 2, timeout=5, message="the first messages")
        broker.stop()
        wait_until(lambda: not source.ready.is_set(), timeout=5, message="the bridge to notice")
        client.ack = real_ack
        broker.start()
        wait_until(source.ready.is_set, timeout=10, message="the bridge to reconnect")
        publish(broker, [("l/b", {"n": 3})])  # queued behind the resent copies
        wait_until(lambda: len(stream) >= 3, timeout=5, message="the message after the restart")
        wait_until(lambda: source.duplicates == 2, timeout=5, message="both copies recognised")
    assert [p["n"] for p in payloads(stream)] == [1, 2, 3]


def test_a_bridge_started_before_the_broker_connects_when_it_comes_up(broker, sqlite_url):
    stream = streamlog.stream("early", sqlite_url)
    broker.stop()
    source = MQTTSource(broker.url("early"), stream, status_every=None, flush_ms=20)
    with running(source, ready=False):
        wait_until(lambda: source.counters.errors >= 2, timeout=5, message="failed connection attempts")
        broker.start()
        wait_until(source.ready.is_set, timeout=10, message="the bridge to connect")
        publish(broker, [("early", {"n": 1})])
        wait_until(lambda: len(stream) == 1, timeout=5, message="the message")
    broker.stop()  # and a bridge stops at once while its broker is away
    with running(MQTTSource(broker.url("early"), stream, status_every=None), ready=False):
        pass


def _crash_before_ack(source: MQTTSource) -> MQTTSource:
    """Simulate a process that dies after the append and before the acknowledgement."""
    source._ack = lambda entries: None
    return source


def test_id_field_stores_a_redelivered_message_once(broker, sqlite_url):
    stream = streamlog.stream("ids", sqlite_url)
    url = broker.url("ids/#")
    first = _crash_before_ack(MQTTSource(url, stream, id_field="id", status_every=None, flush_ms=20))
    with running(first):
        publish(broker, [("ids/x", {"id": i, "v": i * 10}) for i in (1, 2, 3)])
        wait_until(lambda: len(stream) == 3, timeout=5, message="3 stored, never acknowledged")
    # A new process: the broker redelivers 1..3; the ids are rebuilt from the stream's tail.
    second = MQTTSource(url, stream, id_field="id", status_every=None, flush_ms=20)
    with running(second):
        publish(broker, [("ids/x", {"id": 3, "v": 30}), ("ids/x", {"id": 4, "v": 40}), ("ids/x", b"no id")])
        wait_until(lambda: second.counters.received == 6 and len(stream) == 5, timeout=10,
                   message="the redelivered and new messages")
        wait_until(lambda: second.duplicates == 4, timeout=5, message="4 duplicates acknowledged")
    assert [p["id"] if isinstance(p, dict) else p for p in payloads(stream)] == [1, 2, 3, 4, "no id"]
    # Everything was acknowledged: a third run gets only what is published next.
    third = MQTTSource(url, stream, status_every=None, flush_ms=20)
    with running(third):
        publish(broker, [("ids/x", {"id": 5})])
        wait_until(lambda: len(stream) == 6, timeout=5, message="the marker")
    assert third.counters.received == 1


def test_without_id_field_a_crash_between_append_and_ack_repeats_messages(broker, sqlite_url):
    stream = streamlog.stream("repeats", sqlite_url)
    url = broker.url("rep")
    with running(_crash_before_ack(MQTTSource(url, stream, status_every=None, flush_ms=20))):
        publish(broker, [("rep", {"n": 1}), ("rep", {"n": 2})])
        wait_until(lambda: len(stream) == 2, timeout=5, message="2 stored")
    with running(MQTTSource(url, stream, status_every=None, flush_ms=20)):
        wait_until(lambda: len(stream) == 4, timeout=10, message="the redelivered copies")
    assert [p["n"] for p in payloads(stream)] == [1, 2, 1, 2]  # what the docstring says can repeat


class _SlowStream:
    """A stream whose first extend blocks until ``gate`` is set."""

    def __init__(self, stream):
        self._stream = stream
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def extend(self, items):
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(15)
        return self._stream.extend(items)


def test_a_reconnect_during_an_append_does_not_store_the_redelivered_copy(broker, sqlite_url):
    stream = streamlog.stream("midway", sqlite_url)
    slow = _SlowStream(stream)
    source = MQTTSource(broker.url("mid"), slow, status_every=None, flush_ms=20)
    with running(source):
        publish(broker, [("mid", {"n": 1})])
        wait_until(slow.entered.is_set, timeout=5, message="the append to start")
        broker.stop()  # the acknowledgement of the batch being appended cannot be sent
        broker.start()
        wait_until(lambda: source.counters.received == 2, timeout=10, message="the redelivered copy")
        slow.gate.set()
        wait_until(lambda: source.duplicates == 1, timeout=5, message="the copy acknowledged")
        publish(broker, [("mid", {"n": 2})])
        wait_until(lambda: len(stream) == 2, timeout=5, message="the next message")
    assert payloads(stream) == [{"n": 1}, {"n": 2}]
    assert source.counters.errors >= 1  # the lost connection


def test_stop_stores_and_acknowledges_the_pending_batch(broker, sqlite_url):
    stream = streamlog.stream("pending", sqlite_url)
    url = broker.url("p")
    source = MQTTSource(url, stream, status_every=None, flush_ms=60_000, idle_ms=None)
    with running(source):
        publish(broker, [("p", {"n": n}) for n in range(3)])
        wait_until(lambda: source.counters.received == 3, timeout=5, message="3 received")
        assert len(stream) == 0  # still in the batch
    assert len(stream) == 3 and source.counters.stored == 3
    again = MQTTSource(url, stream, status_every=None, flush_ms=20)
    with running(again):
        publish(broker, [("p", {"n": "marker"})])
        wait_until(lambda: len(stream) == 4, timeout=5, message="the marker")
    assert again.counters.received == 1  # nothing was redelivered: the batch was acknowledged
    assert [p["n"] for p in payloads(stream)] == [0, 1, 2, "marker"]


def test_sigterm_flushes_acknowledges_and_exits_zero(broker, sqlite_url, tmp_path):
    url = broker.url("sig")
    code = (
        "import sys, threading, streamlog\n"
        "from streamlog.bridges.mqtt import MQTTSource\n"
        "src = MQTTSource(sys.argv[1], 'sig', client_id='sig-test', flush_ms=60000, idle_ms=None,\n"
        "                 status_every=0.05)\n"
        "threading.Thread(target=lambda: (src.ready.wait(), print('ready', flush=True)), daemon=True).start()\n"
        "print(src.run()['stored'], flush=True)\n"
    )
    err = open(tmp_path / "stderr.txt", "w+")
    proc = run_python(code, sqlite_url, url, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        publish(broker, [("sig", {"n": n}) for n in range(3)])
        wait_until(lambda: "3 received, 0 stored" in (tmp_path / "stderr.txt").read_text(), timeout=10,
                   message="the status line to show 3 received")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()
    assert out.strip() == "3"
    stream = streamlog.stream("sig", sqlite_url)
    assert [p["n"] for p in payloads(stream)] == [0, 1, 2]
    again = MQTTSource(url, stream, client_id="sig-test", status_every=None, flush_ms=20)
    with running(again):
        publish(broker, [("sig", {"n": "marker"})])
        wait_until(lambda: len(stream) == 4, timeout=5, message="the marker")
    assert again.counters.received == 1


def test_status_line_and_logs_never_show_the_password(broker, sqlite_url, caplog):
    caplog.set_level(logging.DEBUG)
    stream = streamlog.stream("status", sqlite_url)
    out = io.StringIO()
    source = MQTTSource(broker.url("st", "alice:s3cret@"), stream, status_every=0.05, status_stream=out,
                        flush_ms=20)
    with running(source):
        publish(broker, [("st", {"n": 1}), ("st", {"n": 2})])
        wait_until(lambda: "2 received, 2 stored" in out.getvalue(), timeout=5, message="a status line")
    line = next(line for line in out.getvalue().splitlines() if "2 received, 2 stored" in line)
    assert line.startswith(f"mqtt mqtt://alice:***@127.0.0.1:{broker.port}/st → status: 2 received, 2 stored")
    assert "0 errors" in line and "lag " in line and "lag -" not in line
    assert "s3cret" not in out.getvalue() and "s3cret" not in caplog.text and "s3cret" not in repr(source.target)


@pytest.mark.parametrize("bad, why", [
    ("mqtt://alice:s3cret@broker:notaport/t", "port"),
    ("mqtt://alice:s3cret@broker:70000/t", "port"),
    ("mqtt://alice:s3cret@/t", "no host"),
    ("mqtt://alice:s3cret@broker", "no topic"),
    ("mqtt://alice:s3cret@broker/", "no topic"),
    ("http://alice:s3cret@broker/t", "scheme"),
    ("alice:s3cret@broker/t", "no scheme"),
    ("mqtt://alice:s3cret@broker/a/#/b", "'#'"),
    ("mqtt://alice:s3cret@broker/a/b+", "'+'"),
    ("mqtt://alice:s3/cr\net@broker/t", "port"),
])
def test_a_bad_url_is_a_one_line_error_with_the_password_masked(bad, why, sqlite_url):
    stream = streamlog.stream("bad", sqlite_url)
    with pytest.raises(BadURLError) as caught:
        MQTTSource(bad, stream, status_every=None)
    message = str(caught.value)
    assert why in message and "\n" not in message
    assert "s3" not in message.replace("mqtts", "") and "cret" not in message
    with pytest.raises(BadURLError) as caught:
        MQTTSink(bad)
    assert "\n" not in str(caught.value) and "cret" not in str(caught.value)


def test_parse_mqtt_url():
    t = parse_mqtt_url("mqtt://broker/sensors/%2B/temp")
    assert (t.host, t.port, t.username, t.password, t.topic, t.tls) == \
        ("broker", 1883, None, None, "sensors/+/temp", False)
    t = parse_mqtt_url("mqtts://us%40er:p%3Ass@[::1]:8884/a/#")
    assert (t.host, t.port, t.username, t.password, t.topic, t.tls) == ("::1", 8884, "us@er", "p:ss", "a/#", True)
    assert parse_mqtt_url("MQTTS://h/t").port == 8883
    assert parse_mqtt_url("mqtt://h/a,b/#").topics == ["a", "b/#"]
    assert "p:ss" not in repr(t) and "p%3Ass" not in t.masked


def test_sink_bad_templates():
    with pytest.raises(BadURLError, match="wildcards"):
        MQTTSink("mqtt://h/out/#")
    with pytest.raises(BadURLError, match="placeholder"):
        MQTTSink("mqtt://h/out/{a.b}")
    sink = MQTTSink("mqtt://h/out/{device}/p")
    with pytest.raises(ConsumerError, match="record 1 has no field 'device'"):
        sink.extend([{"device": "a"}, {"x": 1}])  # before anything is published or connected
    with pytest.raises(ConsumerError, match="cannot go in an MQTT topic"):
        sink.topic_for({"device": "a/#"})
    assert sink.topic_for({"device": 7}) == "out/7/p"


# -- the sink ----------------------------------------------------------------------------


def test_sink_publishes_what_a_consumer_returns(broker, sqlite_url):
    stream = streamlog.stream("predict", sqlite_url)
    stream.extend([{"device": d, "x": i} for i, d in enumerate("abab")])
    subscriber = Subscriber(broker, "out/#")
    sink = MQTTSink(broker.url("out/{device}/prediction"))
    at = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)

    def predict(window):
        return [{"device": d["device"], "y": d["x"] * 2, "at": at} for d in window.data]

    try:
        done = Consumer(stream, predict, CountWindow(2), sink=sink, blocking=False).run()
        assert done == 2
        assert stream.buffer() == []  # committed after the broker acknowledged
        assert sink.sent == 4
        wait_until(lambda: len(subscriber.messages) == 4, timeout=5, message="4 published messages")
    finally:
        sink.close()
        subscriber.close()
    assert sorted(subscriber.messages, key=lambda m: m[1]["y"]) == [
        (f"out/{d}/prediction", {"device": d, "y": 2 * i, "at": "2024-05-01T12:00:00.000+00:00"})
        for i, d in enumerate("abab")
    ]


def test_sink_raises_unreachable_when_the_broker_is_down_and_the_window_is_not_committed(broker, sqlite_url):
    stream = streamlog.stream("down", sqlite_url)
    stream.extend([{"n": 1}, {"n": 2}])
    sink = MQTTSink(broker.url("down/out"), timeout=1.0)
    subscriber = Subscriber(broker, "down/#", client_id="down-subscriber")
    try:
        assert len(sink.extend([{"probe": True}])) == 1
        broker.stop()
        with pytest.raises(UnreachableError, match="MQTT broker"):
            sink.extend([{"n": 0}])
        consumer = Consumer(stream, lambda w: w.data, CountWindow(2), sink=sink, blocking=False,
                            retry_delay=0.2, retry_max_delay=0.2, max_retries=30)
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(consumer.run()), daemon=True)
        thread.start()
        wait_until(lambda: consumer.failed >= 1, timeout=5, message="a failed attempt")
        assert [r["data"] for r in stream.buffer()] == [{"n": 1}, {"n": 2}]  # not committed
        broker.start()
        thread.join(15)  # the released window is retried and now goes through
        assert result == [1]
        assert stream.buffer() == []
        windows = lambda: [m[1] for m in subscriber.messages if "n" in m[1]]  # noqa: E731 - a one-line helper local to this test
        wait_until(lambda: len(windows()) >= 2, timeout=5, message="the retried window")
    finally:
        sink.close()
        subscriber.close()
    assert windows() == [{"n": 1}, {"n": 2}]  # (the probe may come twice: QoS 1 to the subscriber)


def test_a_learner_whose_broker_was_down_publishes_the_window_on_retry(broker, url):
    # The window is learned and checkpointed, then the broker does not acknowledge its record:
    # the retry must not learn it again, and must publish its record (at least once).
    from streamlog.consumers import OnlineLinearRegression

    stream = streamlog.stream("learn", url)
    stream.extend([{"x": float(i), "y": 2.0 * i + 1} for i in range(100)])
    sink = MQTTSink(broker.url("learn/model"), timeout=1.0)
    subscriber = Subscriber(broker, "learn/#", client_id="learn-subscriber")
    real, down = sink.extend, []

    def extend(records):
        records = list(records)
        if not down and any(r["seq"] == 2 for r in records):
            down.append(True)
            broker.stop()
            try:
                return real(records)
            finally:
                broker.start()  # back for the retry
        return real(records)

    sink.extend = extend
    model = OnlineLinearRegression(["x"], "y")
    try:
        consumer = Consumer(stream, model, CountWindow(20), sink=sink, blocking=False, retry_delay=0)
        assert consumer.run() == 5
        assert down and consumer.failed == 1  # window 2's first attempt: the broker was down
        assert consumer.dead_lettered == 0 and stream.buffer() == []

        def seqs():
            return sorted({m[1]["seq"] for m in subscriber.messages})

        wait_until(lambda: seqs() == [1, 2, 3, 4, 5], timeout=10, message="a record of every window")
    finally:
        sink.close()
        subscriber.close()
    assert {m[1]["n_seen"] for m in subscriber.messages if m[1]["seq"] == 2} == {40}
    assert model.n_seen_ == 100 and stream.model(model.name)["state"]["n_seen"] == 100  # learned once


def test_sink_to_a_port_nobody_listens_on():
    sink = MQTTSink(f"mqtt://127.0.0.1:{_free_port()}/x", timeout=0.5)
    try:
        with pytest.raises(UnreachableError, match="did not accept a connection"):
            sink.extend([{"a": 1}])
    finally:
        sink.close()


# -- the MongoDB-wire backend ----------------------------------------------------------------


@pytest.mark.mongo
@pytest.mark.parametrize("backend", ["mongo"])
def test_source_on_mongo(broker, url):
    stream = streamlog.stream("mongo_mqtt", url)
    source = MQTTSource(broker.url("m/#"), stream, id_field="id", status_every=None, flush_ms=20)
    with running(source):
        publish(broker, [("m/1", {"id": 1}), ("m/2", {"id": 2}), ("m/1", {"id": 1}), ("m/3", b"text")])
        wait_until(lambda: source.counters.received == 4 and len(stream) == 3, timeout=10,
                   message="3 items on the MongoDB backend")
    assert payloads(stream) == [{"id": 1}, {"id": 2}, "text"]
    assert source.duplicates == 1
