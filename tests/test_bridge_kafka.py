"""The Kafka bridge against a real broker (tests/kafkalib.py: a KRaft broker from
scripts/kafka.sh, one per module): KafkaSource (topics → stream, exactly once through
restarts, SIGKILL and rebalances), KafkaSink and ``streamlog publish`` (stream → topic,
committed after the delivery reports), SASL credentials masked. Without the broker's jars:
skipped, or failed when CI is set."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest
from helpers import reaped, wait_until
from kafkalib import PASSWORD, USER, module_broker
from test_bridge_mqtt import running as run_in_thread

import streamlog
from streamlog import BadURLError, UnreachableError
from streamlog.bridges.kafka import KafkaAccessError, KafkaSink, KafkaSource, parse_kafka_url

pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.timeout(60)

FAST = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """One KRaft broker for the whole module (about 8 s to start)."""
    yield from module_broker(tmp_path_factory)


@contextlib.contextmanager
def running(bridge: KafkaSource, ready: bool = True):
    """Run the bridge in a thread (test_bridge_mqtt's helper); wait for its partitions."""
    with run_in_thread(bridge, ready=False) as result:
        if ready:
            wait_until(bridge.ready.is_set, timeout=20, message="the bridge to get partitions")
        yield result


def stored(stream) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of every item, asserting none is stored twice."""
    data = [r["data"] for r in stream.read(0, limit=None)]
    keys = [(o["topic"], o["partition"], o["offset"]) for o in (d.get("_kafka", d) for d in data)]
    twice = [k for k, n in Counter(keys).items() if n > 1]
    assert not twice, f"stored twice: {twice[:10]}"
    return keys


def cli(*args: str, env_url: str) -> list[str]:
    return [sys.executable, "-m", "streamlog.cli", *args]


def env_for(url: str) -> dict:
    return dict(os.environ, STREAMLOG_URL=url, PYTHONUNBUFFERED="1")


# -- addressing (no broker) ------------------------------------------------------------------


def test_urls_parse_and_errors_are_one_line_with_the_password_masked():
    target = parse_kafka_url("kafka://bob:p%40ss@h1:9093,h2/a,b?mechanism=scram-sha-512")
    assert (target.servers, target.topics, target.username, target.password, target.mechanism) == \
        ("h1:9093,h2:9092", ("a", "b"), "bob", "p@ss", "SCRAM-SHA-512")
    assert target.security_protocol == "SASL_PLAINTEXT" and "p@ss" not in repr(target)
    tls = parse_kafka_url("kafkas://h/t?tls_ca=/ca.pem&tls_key_password=s3cret")
    assert tls.security_protocol == "SSL" and ("ssl.ca.location", "/ca.pem") in tls.tls_options
    assert parse_kafka_url("kafka://h/t?key=device", one_topic=True).key_field == "device"
    for url, words in [("kafka://bob:s3cret@h/", "no topic"), ("kafka://bob:s3cret@h:x/t", "port"),
                       ("kafka://bob:s3cret@h/t?mechanism=GSSAPI", "mechanism"),
                       ("kafka://bob:s3cret@h/a b", "not a Kafka topic name"),
                       ("kafka://h/t?tls_ca=/x", "need kafkas://"),
                       ("kafkas://bob:s3cret@h/t?tls_verify=maybe", "true"),
                       ("kafka://bob:s3cret@h/t?nope=1", "unknown option"), ("mqtt://bob:s3cret@h/t", "not kafka")]:
        with pytest.raises(BadURLError) as caught:
            parse_kafka_url(url)
        message = str(caught.value)
        assert words in message and "s3cret" not in message and "\n" not in message, message
    with pytest.raises(BadURLError, match="exactly one topic"):
        KafkaSink("kafka://h/a,b")


# -- the source ------------------------------------------------------------------------------


def test_live_messages_of_every_kind_land_in_the_stream(broker, sqlite_url):
    topic = broker.create_topic("kinds", partitions=2)
    stream = streamlog.stream("kinds", sqlite_url)
    source = KafkaSource(broker.url(topic), stream, status_every=None, flush_ms=20, settings=FAST)
    values = [{"t": 21.5, "unit": "C"}, [1, 2, 3], b"42", "héllo".encode(), b"\xff\x00\xfe", b"",
              {"a.b": 1, "$x": 2}, b'{"big": 18446744073709551615}']
    with running(source):
        broker.produce(topic, values, keys=[b"k", None, b"\xff", b"k", b"k", b"k", b"k", b"k"], partition=0)
        wait_until(lambda: len(stream) == len(values), timeout=15, message="every message")
    by_offset = {d["offset"]: d for d in (r["data"] for r in stream.read(0, limit=None))}
    assert set(by_offset[0]) >= {"topic", "partition", "offset", "key", "value", "headers", "timestamp"}
    assert by_offset[0]["value"] == {"t": 21.5, "unit": "C"} and by_offset[0]["key"] == "k"
    assert by_offset[0]["timestamp"] is not None and by_offset[0]["topic"] == topic
    assert by_offset[1]["value"] == [1, 2, 3] and by_offset[1]["key"] is None
    assert by_offset[2]["value"] == 42 and by_offset[2]["key_encoding"] == "base64"
    assert by_offset[3]["value"] == "héllo"
    assert by_offset[4]["encoding"] == "base64" and by_offset[5]["value"] == ""
    assert by_offset[6]["value"] == '{"a.b": 1, "$x": 2}' and "error" in by_offset[6]  # the log's key rules
    assert "18446744073709551615" in by_offset[7]["value"] and "error" in by_offset[7]  # never rounded
    assert source.counters.snapshot()["errors"] >= 2
    stored(stream)


def test_value_only_stores_the_object_and_its_position(broker, sqlite_url):
    topic = broker.create_topic("values")
    stream = streamlog.stream("values", sqlite_url)
    broker.produce(topic, [{"x": 1}, {"x": 2}, [3]])
    with running(KafkaSource(broker.url(topic), stream, status_every=None, value_only=True, settings=FAST)):
        wait_until(lambda: len(stream) == 3, timeout=15, message="3 items")
    data = [r["data"] for r in stream.read(0, limit=None)]
    assert data[0] == {"x": 1, "_kafka": {"topic": topic, "partition": 0, "offset": 0}}
    assert data[2]["value"] == [3] and "not a JSON object" in data[2]["error"]


def test_fast_path_stores_exactly_what_the_general_path_stores(broker):
    """The SQLite fast path (bridges/kafka/fast.py) encodes a batch of flat JSON objects
    straight into the stored form: the same bytes as Stream.extend of the items, else None."""
    from streamlog.bridges.kafka.fast import encode_batch
    from streamlog.bridges.kafka.messages import to_item
    from streamlog.items import encode_many, normalize_many

    topic = broker.create_topic("fastpath", partitions=2)
    common = [{"id": i, "device": f"s-{i}", "t": 21.5, "ok": i % 2 == 0, "none": None, "big": 2**53 - 1}
              for i in range(50)] + [{}]
    broker.produce(topic, common, keys=[None if i % 3 else f"k{i}".encode() for i in range(len(common))])
    messages = broker.consume_all(topic, len(common))
    for value_only in (False, True):
        general = encode_many(normalize_many([to_item(m, value_only)[0] for m in messages]))
        assert encode_batch(messages, value_only) == general
    others = [({"nested": {"a": 1}}, None), ([1, 2], None), ({"n": 2**60}, None), ({"n": -0.0}, None),
              (b"text", None), ({"x": 1}, b"\xff"), ({"n": 18446744073709551615}, None)]
    # a topic of their own: a consumer interleaves partitions, so "the last ones read" is no selector
    odd = broker.create_topic("fastpath-others")
    broker.produce(odd, [v for v, _ in others], keys=[k for _, k in others])
    with_header = broker.create_topic("fastpath-headers")
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.servers})
    producer.produce(with_header, b'{"x": 1}', headers=[("h", b"v")])
    assert producer.flush(30) == 0
    later = broker.consume_all(odd, len(others))
    assert len(later) == len(others)
    for m in [*later, *broker.consume_all(with_header, 1)]:
        assert encode_batch([messages[0], m], False) is None, m.value()


class _Queue:
    """A stand-in for a Consumer holding ``queued`` messages: records each consume() call."""

    def __init__(self, queued: int):
        self.queued, self.calls = queued, []

    def consume(self, num_messages: int, timeout: float) -> list:
        self.calls.append((num_messages, timeout))
        taken = min(num_messages, self.queued, 300)  # librdkafka hands a backlog over in pieces
        self.queued -= taken
        return [object()] * taken


def test_poll_appends_what_is_queued_without_waiting_for_a_batch_to_fill(sqlite_url):
    source = KafkaSource("kafka://127.0.0.1:1/t", streamlog.stream("poll", sqlite_url), batch=1000,
                         flush_ms=60_000, status_every=None)
    few = _Queue(3)
    assert len(source._poll(few)) == 3
    assert few.calls == [(1, 0.1), (999, 0), (997, 0)]  # waits for the first only, then takes what is there
    backlog = _Queue(5000)
    assert len(source._poll(backlog)) == 1000 and all(t == 0 for _, t in backlog.calls[1:])
    assert source._poll(_Queue(0)) == []


def test_messages_sent_while_the_bridge_is_down_are_stored_once(broker, sqlite_url):
    topic = broker.create_topic("down", partitions=3)
    stream = streamlog.stream("down", sqlite_url)
    broker.produce(topic, [{"i": i} for i in range(300)])
    with running(KafkaSource(broker.url(topic), stream, status_every=None, settings=FAST)):
        wait_until(lambda: len(stream) == 300, timeout=15, message="the first 300")
    broker.produce(topic, [{"i": i} for i in range(300, 700)])
    # another group: no committed offsets at all, so the position can only come from the log
    with running(KafkaSource(broker.url(topic), stream, status_every=None, group="other", settings=FAST)):
        broker.produce(topic, [{"i": i} for i in range(700, 800)])
        wait_until(lambda: len(stream) >= 800, timeout=15, message="all 800")
    assert len(stored(stream)) == 800
    assert sorted(d["value"]["i"] for d in (r["data"] for r in stream.read(0, limit=None))) == list(range(800))
    from confluent_kafka import Consumer, TopicPartition

    tools = Consumer({"bootstrap.servers": broker.servers, "group.id": "streamlog-down"})
    committed = tools.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    tools.close()
    assert sum(tp.offset for tp in committed) == 300  # written for tools, by the first group


def test_sigkill_mid_batch_then_restart_stores_every_message_once(broker, sqlite_url):
    topic = broker.create_topic("killed", partitions=3)
    n = broker.produce(topic, [{"i": i, "pad": "x" * 80} for i in range(30_000)])
    stream = streamlog.stream("killed", sqlite_url)
    command = [sys.executable, "-m", "streamlog.cli", "bridge", broker.url(topic), "--stream", "killed",
               "--batch", "200", "--status-every", "0"]
    with reaped(subprocess.Popen(command, env=env_for(sqlite_url), stderr=subprocess.DEVNULL)) as proc:
        wait_until(lambda: len(stream) >= 2000, timeout=30, message="the bridge to store some")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert len(stream) < n, "stored everything before the kill: no mid-run kill tested"
    with reaped(subprocess.Popen(command + ["--group", "after-kill"], env=env_for(sqlite_url),
                                 stderr=subprocess.DEVNULL)) as proc:
        wait_until(lambda: len(stream) >= n, timeout=40, message="all messages after the restart")
        proc.terminate()
        assert proc.wait(20) == 0
    assert len(stored(stream)) == n == len(stream)


def test_two_bridges_split_the_partitions_and_store_every_message_once(broker, sqlite_url):
    topic = broker.create_topic("split", partitions=4)
    name = "split"
    first = KafkaSource(broker.url(topic), streamlog.stream(name, sqlite_url), status_every=None,
                        batch=100, settings=FAST)
    second = KafkaSource(broker.url(topic), streamlog.stream(name, sqlite_url), status_every=None,
                         batch=100, settings=FAST)
    stream = streamlog.stream(name, sqlite_url)
    with running(first):
        broker.produce(topic, [{"i": i} for i in range(2000)])
        with running(second, ready=False):
            broker.produce(topic, [{"i": i} for i in range(2000, 4000)])
            wait_until(lambda: len(first.assigned) == 2 and len(second.assigned) == 2, timeout=30,
                       message="the partitions split 2 / 2")
            assert not first.assigned & second.assigned
            broker.produce(topic, [{"i": i} for i in range(4000, 5000)])
            wait_until(lambda: len(stream) >= 5000, timeout=20, message="5000 items")
        # the second bridge left: the first takes all 4 partitions over, from the log's positions
        wait_until(lambda: len(first.assigned) == 4, timeout=20, message="the first bridge to hold all 4")
        broker.produce(topic, [{"i": i} for i in range(5000, 6000)])
        wait_until(lambda: len(stream) >= 6000, timeout=20, message="6000 items")
    assert len(stored(stream)) == 6000 == len(stream)
    assert first.counters.stored + second.counters.stored == 6000 and second.counters.stored > 0


def test_wrong_credentials_end_the_bridge_with_one_masked_line(broker, sqlite_url):
    topic = broker.create_topic("secured")
    broker.produce(topic, [{"ok": 1}])
    stream = streamlog.stream("secured", sqlite_url)
    for mechanism in ("PLAIN", "SCRAM-SHA-256"):  # right credentials: stored
        url = broker.url(topic, f"{USER}:{PASSWORD}@", f"mechanism={mechanism}")
        with running(KafkaSource(url, stream, status_every=None, group=f"g-{mechanism}", settings=FAST)):
            wait_until(lambda: len(stream) >= 1, timeout=20, message="the message over SASL")
    bad = broker.url(topic, f"{USER}:wrong-pw-123@")
    proc = subprocess.run([sys.executable, "-m", "streamlog.cli", "bridge", bad, "--stream", "secured2",
                           "--status-every", "0"], env=env_for(sqlite_url), capture_output=True, text=True,
                          timeout=40, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and lines, proc.stderr
    assert lines[-1].startswith("streamlog: error: Kafka broker") and "refused user 'alice'" in lines[-1]
    assert len(lines[-1]) <= 200 and "wrong-pw-123" not in proc.stderr + proc.stdout and "***" in lines[-1]
    with pytest.raises(KafkaAccessError, match="refused") as caught:
        KafkaSink(bad, timeout=10).extend([{"a": 1}])
    assert "wrong-pw-123" not in str(caught.value)


# -- the sink ---------------------------------------------------------------------------------


def test_sink_publishes_each_window_with_its_key_after_the_acks(broker, sqlite_url):
    topic = broker.create_topic("results")
    stream = streamlog.stream("readings", sqlite_url)
    stream.extend({"device": f"d{i % 3}", "v": i} for i in range(30))
    windows = streamlog.streaming("readings", size=10, url=sqlite_url, blocking=False,
                                  sink=broker.url(topic, query="key=device")).apply(lambda w: w.data)
    assert windows == 3
    got = broker.consume_all(topic, 30)
    assert sorted(orjson_loads(m.value())["v"] for m in got) == list(range(30))
    assert {m.key() for m in got} == {b"d0", b"d1", b"d2"}


def test_publish_resumes_from_its_group_after_a_restart(broker, sqlite_url):
    topic = broker.create_topic("published")
    stream = streamlog.stream("outbox", sqlite_url)
    stream.extend({"n": i} for i in range(100))
    command = [sys.executable, "-m", "streamlog.cli", "publish", "outbox", broker.url(topic), "--start", "earliest"]
    for total in (100, 150):
        with reaped(subprocess.Popen(command, env=env_for(sqlite_url), stdout=subprocess.PIPE, text=True,
                                     stderr=subprocess.DEVNULL)) as proc:
            broker.consume_all(topic, total)
            proc.terminate()
            out, _ = proc.communicate(timeout=20)
            assert proc.returncode == 0 and "sent" in out, out
        stream.extend({"n": i} for i in range(100, 150))
    got = broker.consume_all(topic, 150)
    assert sorted(orjson_loads(m.value())["n"] for m in got) == list(range(150))  # nothing repeated


def orjson_loads(raw: bytes):
    import orjson

    return orjson.loads(raw)


def test_broker_restart_source_keeps_going_and_sink_fails_then_succeeds(broker, sqlite_url):
    topic = broker.create_topic("restart", partitions=2)
    stream = streamlog.stream("restart", sqlite_url)
    sink = KafkaSink(broker.url(topic), timeout=3)
    source = KafkaSource(broker.url(topic), stream, status_every=None, settings=FAST)
    with running(source):
        broker.produce(topic, [{"i": i} for i in range(200)])
        wait_until(lambda: len(stream) == 200, timeout=15, message="200 before the restart")
        broker.stop()
        with pytest.raises(UnreachableError, match="did not acknowledge 5 of 5"):
            sink.extend([{"i": i} for i in range(200, 205)])  # the window fails: retried later
        broker.start()
        assert sink.extend([{"i": i} for i in range(200, 205)]) != []  # the retry, broker up
        broker.produce(topic, [{"i": i} for i in range(205, 400)])
        wait_until(lambda: len(stream) >= 400, timeout=30, message="all 400 after the restart")
    sink.close()
    assert len(stored(stream)) == 400
    assert sorted(d["value"]["i"] for d in (r["data"] for r in stream.read(0, limit=None))) == list(range(400))


def test_docs_kafka_example(broker, tmp_path):
    """docs/bridges.md's Kafka lines, bounded: the bridge from two topics into ``shop``, then
    ``publish`` of ``shop`` to a third topic keyed by the messages' keys (the broker is this
    module's, started by the same scripts/kafka.sh)."""
    from doclib import ROOT, blocks

    [block] = [b for b in blocks(ROOT / "docs" / "bridges.md") if b.text.startswith("scripts/install-kafka.sh")]
    lines = {line.split()[1]: line.split("#")[0].strip().replace(":9092", f":{broker.port}")
             for line in block.text.splitlines() if line.startswith("streamlog ")}
    for topic in ("orders", "refunds", "shop-copy"):
        broker.create_topic(topic)
    broker.produce("orders", [{"order": i} for i in range(20)], keys=[f"o{i}".encode() for i in range(20)])
    broker.produce("refunds", [{"refund": i} for i in range(5)], keys=[f"r{i}".encode() for i in range(5)])
    env = env_for(f"sqlite:///{tmp_path}/docs.db")
    shop = streamlog.stream("shop", env["STREAMLOG_URL"])
    for command, check in (("bridge", lambda: len(shop) >= 25), ("publish", lambda: len(broker.consume_all(
            "shop-copy", 25)) >= 25)):
        with reaped(subprocess.Popen(["bash", "-c", f"exec {lines[command]}"], cwd=ROOT, env=env,
                                     stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)) as proc:
            wait_until(check, timeout=30, message=f"the docs' {command} line")
            proc.terminate()
            assert proc.wait(20) == 0
    assert len(stored(shop)) == 25
    assert {m.key() for m in broker.consume_all("shop-copy", 25)} >= {b"o0", b"r4"}
