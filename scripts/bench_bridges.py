#!/usr/bin/env python
"""Bridge benchmarks (issue 13), results in docs/benchmarks.md and docs/bridges.md.

    python scripts/bench_bridges.py mqtt    # MQTTSource vs mosquitto_sub: QoS 1, ~100-byte JSON (needs mosquitto)
    python scripts/bench_bridges.py tcp     # TCPListener: 4 clients x 25,000 ~100-byte JSON lines
    python scripts/bench_bridges.py kafka   # KafkaSource / KafkaSink vs bare confluent-kafka (starts a broker)

Both write into the embedded (SQLite) backend in a temporary directory. Environment for
the MQTT part: N (messages, default 20000), ONLY (live,latency,drain).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)


def bench_mqtt() -> None:
    import json
    import os
    import socket
    import subprocess
    import sys
    import tempfile
    import threading
    import time

    import paho.mqtt.client as mqtt

    N = int(os.environ.get("N", 20000))
    ONLY = os.environ.get("ONLY", "live,latency,drain")
    work = tempfile.mkdtemp(prefix="mqbench-")
    DB = f"sqlite:///{work}/bench.db"
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    PORT = s.getsockname()[1]
    s.close()
    open(f"{work}/m.conf", "w").write(f"listener {PORT} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    broker = subprocess.Popen(["mosquitto", "-c", f"{work}/m.conf"], stderr=subprocess.DEVNULL)
    time.sleep(0.5)

    def pct(xs, q):
        return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]

    def payload(i):  # "t" = when the publisher hands the message to paho
        body = {"id": i, "t": time.time(), "device": f"sensor-{i % 1000:04d}", "temp": 21.53, "hum": 45.2, "pad": ""}
        body["pad"] = "x" * max(0, 100 - len(json.dumps(body)))
        return json.dumps(body).encode()

    def publish(topic, n, rate=None):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(1000)
        c.connect("127.0.0.1", PORT)
        c.loop_start()
        t0 = time.time()
        infos = []
        for i in range(n):
            if rate and (d := t0 + i / rate - time.time()) > 0:
                time.sleep(d)
            infos.append(c.publish(topic, payload(i), qos=1))
        for info in infos:
            info.wait_for_publish(60)
        t1 = time.time()
        c.disconnect()
        c.loop_stop()
        return t0, t1

    def sub_proc(topic, session=None):
        cmd = ["mosquitto_sub", "-p", str(PORT), "-q", "1", "-t", topic] + (["-c", "-i", session] if session else [])
        return subprocess.Popen(cmd, stdout=subprocess.PIPE)

    def sub_collect(proc, n, out):  # out: list of publish->printed ms; returns when n lines were read
        for line in proc.stdout:
            out.append((time.time() - json.loads(line)["t"]) * 1000)
            if len(out) == n:
                out.append(time.time())
                return

    BRIDGE = """
    import sys, threading, time, streamlog
    from streamlog.bridges.mqtt import MQTTSource
    src = MQTTSource(sys.argv[1], sys.argv[2], db_url=sys.argv[3], status_every=None)
    th = threading.Thread(target=src.run); th.start(); src.ready.wait(10); print("ready", flush=True)
    n = int(sys.stdin.readline()); first = None
    while src.counters.stored < n:
        if first is None and src.counters.received: first = time.time()
        time.sleep(0.0005)
    print(time.time(), first, flush=True); src.stop(); th.join()
    """
    def bridge(topic, stream):
        p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BRIDGE), f"mqtt://127.0.0.1:{PORT}/{topic}",
                              stream, DB],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=ROOT))
        assert p.stdout.readline().strip() == "ready"
        return p

    def bridge_wait(p, n):
        p.stdin.write(f"{n}\n")
        p.stdin.flush()
        end, first = p.stdout.readline().split()
        p.wait(30)
        return float(end), (None if first == "None" else float(first))

    def stored_latency(stream, start):
        import streamlog
        items = streamlog.stream(stream, DB).read(start, limit=None)
        return [(r["timestamp"].timestamp() - r["data"]["payload"]["t"]) * 1000 for r in items], len(items)

    print(f"{N} messages of {len(payload(12345))} bytes, QoS 1, {os.cpu_count()} cores")
    if "live" in ONLY:
        t0, t1 = publish("b/none", N)
        print(f"publisher alone: {N / (t1 - t0):,.0f} msg/s")
        sub = sub_proc("b/sub")
        time.sleep(0.5)
        lat = []
        th = threading.Thread(target=sub_collect, args=(sub, N, lat))
        th.start()
        t0, t1 = publish("b/sub", N)
        th.join(120)
        sub.terminate()
        end = lat.pop()
        print(f"live  mosquitto_sub: {N / (end - t0):,.0f} msg/s (publisher {N / (t1 - t0):,.0f}); "
              f"publish->printed p50 {pct(lat, .5):.0f} ms p99 {pct(lat, .99):.0f} ms")
        p = bridge("b/src", "live")
        t0, t1 = publish("b/src", N)
        end, _ = bridge_wait(p, N)
        lat, n = stored_latency("live", 0)
        assert n == N
        print(f"live  MQTTSource:    {N / (end - t0):,.0f} msg/s (publisher {N / (t1 - t0):,.0f}); "
              f"publish->stored p50 {pct(lat, .5):.0f} ms p99 {pct(lat, .99):.0f} ms")
    if "latency" in ONLY:
        for rate in (100, 1000):
            n = rate * 5
            sub = sub_proc(f"b/lat{rate}")
            time.sleep(0.5)
            lat = []
            th = threading.Thread(target=sub_collect, args=(sub, n, lat))
            th.start()
            publish(f"b/lat{rate}", n, rate)
            th.join(60)
            sub.terminate()
            lat.pop()
            p = bridge(f"b/slat{rate}", f"lat{rate}")
            publish(f"b/slat{rate}", n, rate)
            bridge_wait(p, n)
            slat, got = stored_latency(f"lat{rate}", 0)
            assert got == n
            print(f"{rate:>5} msg/s: MQTTSource publish->stored p50 {pct(slat, .5):.1f} ms p99 {pct(slat, .99):.1f} ms "
                  f"max {max(slat):.1f} | mosquitto_sub publish->printed p50 {pct(lat, .5):.1f} "
                  f"p99 {pct(lat, .99):.1f}")
    if "drain" in ONLY:  # a backlog published while the receiver was away (persistent sessions)
        sub = sub_proc("b/dsub", "bench-dsub")
        time.sleep(0.5)
        sub.terminate()
        sub.wait()
        publish("b/dsub", N)
        lat = []
        t0 = time.time()
        sub = sub_proc("b/dsub", "bench-dsub")
        sub_collect(sub, N, lat)
        end = lat.pop()
        sub.terminate()
        print(f"drain mosquitto_sub: {N / (end - t0):,.0f} msg/s (from process start)")
        p = bridge("b/drain", "drain")
        bridge_wait(p, 0)  # creates the session
        publish("b/drain", N)
        t0 = time.time()
        p = bridge("b/drain", "drain")
        end, first = bridge_wait(p, N)
        assert stored_latency("drain", 0)[1] == N
        print(f"drain MQTTSource:    {N / (end - t0):,.0f} msg/s from process start, "
              f"{N / (end - first):,.0f} msg/s from the first message received")
    broker.terminate()
    broker.wait()


def bench_tcp() -> None:
    import json
    import socket
    import sys
    import tempfile
    import threading
    import time

    import streamlog
    from streamlog.bridges.tcp import TCPListener

    CLIENTS, LINES = 4, 25_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    db = tempfile.mkdtemp() + "/bench.db"
    s = streamlog.stream("bench", url=f"sqlite:///{db}")
    def line(c, i):
        return json.dumps({"client": c, "seq": i, "sensor": "temp-01", "value": 21.5 + i % 7, "unit": "C",
                           "site": "north-field-07", "ok": True}).encode()
    payloads = [b"".join(line(c, i) + b"\n" for i in range(LINES)) + b"# ack\n" for c in range(CLIENTS)]
    size = sum(len(line(0, i)) for i in range(100)) / 100
    listener = TCPListener("tcp://127.0.0.1:0", s, batch=batch, status_every=None).start()
    done = {}
    def client(c):
        sock = socket.create_connection(("127.0.0.1", listener.port))
        sock.sendall(payloads[c])
        buf = b""
        while b"\n" not in buf:
            buf += sock.recv(100)
        done[c] = buf.strip().decode()
        sock.close()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    counters = listener.close()
    n = len(s)
    assert n == CLIENTS * LINES and set(done.values()) == {f"ok line {LINES + 1}"}, (n, done)
    print(f"batch={batch}: {n} lines ({size:.0f} B avg) in {elapsed:.2f} s = {n / elapsed:,.0f} lines/s; "
          f"max queued {listener.max_pending_seen}; {counters}")


LATENCY_PRODUCER = """
    import json, sys, time
    from confluent_kafka import Producer
    servers, n, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    body = {"id": 0, "device": "sensor-0001", "temp": 21.53, "hum": 45.2, "pad": ""}
    body["pad"] = "x" * (100 - len(json.dumps(body)))
    p = Producer({"bootstrap.servers": servers, "linger.ms": 0})
    t0 = time.time()
    for i in range(n):
        if (d := t0 + i / rate - time.time()) > 0:
            time.sleep(d)
        p.produce("latency", json.dumps({**body, "id": i, "t": time.time()}).encode())
        p.poll(0)
    print(p.flush(30), time.time() - t0)
"""


def bench_kafka() -> None:
    """Source drain of N (100,000) ~100-byte JSON messages (4 partitions) into the embedded
    backend vs a bare consumer loop writing nowhere; sink throughput (windows of 1000)
    vs a bare producer; produce → stored latency at 1,000 msg/s (a producer process of its
    own). REPS (5) interleaved runs; the load average before and after."""
    import json
    import os
    import socket
    import statistics
    import subprocess
    import tempfile
    import threading
    import time

    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    import streamlog
    from streamlog.bridges.kafka import KafkaSink, KafkaSource

    N, REPS = int(os.environ.get("N", 100_000)), int(os.environ.get("REPS", 5))
    work = tempfile.mkdtemp(prefix="kafkabench-")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    script = f"{ROOT}/scripts/kafka.sh"
    subprocess.run([script, "start", work], check=True, env=dict(os.environ, KAFKA_PORT=str(port)))
    servers = f"127.0.0.1:{port}"
    try:
        admin = AdminClient({"bootstrap.servers": servers})
        admin.create_topics([NewTopic("bench", 4, 1)])["bench"].result(30)
        body = {"id": 0, "device": "sensor-0001", "temp": 21.53, "hum": 45.2, "pad": ""}
        body["pad"] = "x" * (100 - len(json.dumps(body)))
        producer = Producer({"bootstrap.servers": servers, "linger.ms": 5})
        for i in range(N):
            producer.produce("bench", json.dumps({**body, "id": i}).encode())
            if i % 10_000 == 0:
                producer.poll(0)
        producer.flush(60)

        def bare(rep):
            c = Consumer({"bootstrap.servers": servers, "group.id": f"bare-{rep}", "auto.offset.reset": "earliest"})
            c.subscribe(["bench"])
            t0, n = time.perf_counter(), 0
            while n < N:
                n += sum(1 for m in c.consume(1000, 0.5) if not m.error())
            elapsed = time.perf_counter() - t0
            c.close()
            return N / elapsed

        def bridge(rep):
            stream = streamlog.stream("bench", f"sqlite:///{work}/drain-{rep}.db")
            source = KafkaSource(f"kafka://{servers}/bench", stream, group=f"bridge-{rep}", status_every=None)
            t0 = time.perf_counter()
            thread = threading.Thread(target=source.run)
            thread.start()
            while source.counters.stored < N:  # the counter, not len(stream): no COUNT(*) racing the writer
                time.sleep(0.005)
            elapsed = time.perf_counter() - t0
            source.stop()
            thread.join()
            assert len(stream) == N
            return N / elapsed

        records = [{**body, "id": i} for i in range(N)]

        def bare_producer(rep):
            p = Producer({"bootstrap.servers": servers, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
            t0 = time.perf_counter()
            for start in range(0, N, 1000):  # the same windows, each flushed
                for r in records[start:start + 1000]:
                    p.produce("sinkbench", json.dumps(r).encode())
                p.flush(30)
            return N / (time.perf_counter() - t0)

        def sink(rep):
            k = KafkaSink(f"kafka://{servers}/sinkbench")
            t0 = time.perf_counter()
            for start in range(0, N, 1000):
                k.extend(records[start:start + 1000])
            rate = N / (time.perf_counter() - t0)
            k.close()
            return rate

        results: dict[str, list[float]] = {"bare consumer": [], "KafkaSource": [], "bare producer": [],
                                           "KafkaSink": []}
        print(f"{N} messages of {len(json.dumps(body))} bytes, 4 partitions, {os.cpu_count()} cores; load average "
              f"before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for rep in range(REPS):
            results["bare consumer"].append(bare(rep))
            results["KafkaSource"].append(bridge(rep))
            results["bare producer"].append(bare_producer(rep))
            results["KafkaSink"].append(sink(rep))
        for name, rates in results.items():
            print(f"{name:14s} msg/s min {min(rates):9,.0f}  median {statistics.median(rates):9,.0f}  "
                  f"max {max(rates):9,.0f}")
        for a, b in (("KafkaSource", "bare consumer"), ("KafkaSink", "bare producer")):
            print(f"{a} / {b}: {statistics.median(results[a]) / statistics.median(results[b]):.2f}x (medians)")
        # latency: 1,000 msg/s for 5 s from a producer process of its own (in this process
        # it would share the GIL with the source), its produce time in the payload; the
        # stored time from the log (the source, default settings) or the receive time (a
        # bare consumer loop, for what broker and client add). REPS interleaved runs each.
        admin.create_topics([NewTopic("latency", 4, 1)])["latency"].result(30)

        def produce_paced():
            out = subprocess.run([sys.executable, "-c", textwrap.dedent(LATENCY_PRODUCER), servers, "5000", "1000"],
                                 check=True, capture_output=True, text=True).stdout.split()
            assert out[0] == "0", f"the latency producer left {out[0]} messages unsent"

        def pcts(lat):
            lat.sort()
            return lat[len(lat) // 2], lat[int(len(lat) * 0.99)]

        def bare_latency(rep):
            c = Consumer({"bootstrap.servers": servers, "group.id": f"latency-bare-{rep}",
                          "auto.offset.reset": "latest"})
            assigned = threading.Event()
            c.subscribe(["latency"], on_assign=lambda consumer, partitions: assigned.set())
            t_ready = None
            while t_ready is None or time.monotonic() - t_ready < 1:  # assigned, positions looked up
                c.consume(100, 0.1)
                if assigned.is_set() and t_ready is None:
                    t_ready = time.monotonic()
            producer = threading.Thread(target=produce_paced)
            producer.start()
            lat: list[float] = []
            while len(lat) < 5000:  # poll: each message as soon as it is there (consume(1000, …) waits to fill)
                m = c.poll(0.1)
                if m is not None and not m.error():
                    lat.append((time.time() - json.loads(m.value())["t"]) * 1000)
            producer.join()
            c.close()
            return pcts(lat)

        def source_latency(rep):
            stream = streamlog.stream("latency", f"sqlite:///{work}/latency-{rep}.db")
            source = KafkaSource(f"kafka://{servers}/latency", stream, group=f"latency-{rep}", start="latest",
                                 status_every=None)
            thread = threading.Thread(target=source.run)
            thread.start()
            source.ready.wait(30)
            time.sleep(1)  # the positions of "latest" are looked up after the assignment
            produce_paced()
            deadline = time.monotonic() + 60
            while source.counters.stored < 5000 and time.monotonic() < deadline:
                time.sleep(0.05)
            source.stop()
            thread.join()
            records = stream.read(0, limit=None)
            assert len(records) == 5000, len(records)
            return pcts([(r["timestamp"].timestamp() - r["data"]["value"]["t"]) * 1000 for r in records])

        lats: dict[str, list[tuple[float, float]]] = {"bare consumer": [], "KafkaSource": []}
        for rep in range(REPS):
            lats["bare consumer"].append(bare_latency(rep))
            lats["KafkaSource"].append(source_latency(rep))
        for name, runs in lats.items():
            p50s, p99s = [r[0] for r in runs], [r[1] for r in runs]
            print(f"latency at 1,000 msg/s, {name:13s} produce -> {'stored' if name == 'KafkaSource' else 'received'}"
                  f": p50 min {min(p50s):.1f} median {statistics.median(p50s):.1f} max {max(p50s):.1f} ms; "
                  f"p99 min {min(p99s):.1f} median {statistics.median(p99s):.1f} max {max(p99s):.1f} ms")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        subprocess.run([script, "stop", work], check=False)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which in ("mqtt", "all"):
        bench_mqtt()
    if which in ("tcp", "all"):
        bench_tcp()
    if which in ("kafka", "all"):
        bench_kafka()
