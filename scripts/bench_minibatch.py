#!/usr/bin/env python
"""The minibatch side of scripts/bench.py. Runs in minibatch's own virtualenv (it does not
import streamlog) against a MongoDB-wire server, and writes its results as JSON.

    python scripts/bench_minibatch.py --url mongodb://127.0.0.1:PORT --db NAME --out FILE [--reps 3]

Workloads (the same as streamlog's, with minibatch's public API):

* append: ``Stream.get_or_create(name, url=...)`` then ``stream.append(item)`` one at a time
  (``insert_one`` each), and with ``batchsize=100`` (minibatch's batched ``insert_many``);
* CountWindow(100): a backlog of ``--count-n`` items, one consumer process running
  ``make_emitter(name, noop, size=100, url=...)`` (what ``@streaming(name, size=100)`` runs),
  timed until the buffer is empty (minibatch deletes items on commit);
* latency: ``size=1``, idle consumer in another process, the producer appends one item every
  20–50 ms stamped with time.time(); the window function (run by minibatch in its process
  pool) records now − t;
* idle: CPU % of that consumer process with nothing to do.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager

CTX = mp.get_context("spawn")


def make_items(n: int, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    return [{"i": k, "x1": rnd.random(), "x2": rnd.random(), "y": rnd.random(), "sensor": f"s-{k % 7}"}
            for k in range(n)]


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(round(q / 100 * len(values) + 0.5)) - 1))
    return values[k]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- consumer processes -------------------------------------------------------------


def noop(window):
    return None


def record_latency(window):
    now = time.time()
    with open(os.environ["MB_BENCH_LATENCY_FILE"], "a") as f:
        for d in window.data:
            f.write(f"{now - d['t']}\n")


def consumer(url: str, name: str, size: int, fn_name: str, latency_file: str | None, ready, go, stop_q) -> None:
    if latency_file:
        os.environ["MB_BENCH_LATENCY_FILE"] = latency_file
    from minibatch import make_emitter

    fn = {"noop": noop, "latency": record_latency}[fn_name]
    em = make_emitter(name, fn, size=size, url=url, queue=stop_q)
    em.executor.submit(int).result()  # start the worker pool now, not inside the timed part
    ready.set()
    go.wait()
    em.run(blocking=True)


# -- workloads -----------------------------------------------------------------------


@contextmanager
def consumer_process(url: str, name: str, size: int, fn_name: str, latency_file: str | None):
    """A minibatch consumer in its own process, started and ready; yields (process, go event)."""
    ready, go, stop_q = CTX.Event(), CTX.Event(), CTX.Queue()
    proc = CTX.Process(target=consumer, args=(url, name, size, fn_name, latency_file, ready, go, stop_q))
    try:
        proc.start()
        if not ready.wait(120):
            raise RuntimeError("minibatch consumer did not start")
        yield proc, go
    finally:
        stop_q.put(True)
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
            proc.join(10)


def bench_append(url, reps, n, batchsize, log):
    from minibatch import Stream

    runs = []
    for rep in range(reps):
        name = f"mb_append_{batchsize}_{rep}_{uuid.uuid4().hex[:6]}"
        stream = Stream.get_or_create(name, url=url, batchsize=batchsize)
        items = make_items(n, rep)
        t0 = time.perf_counter()
        for item in items:
            stream.append(item)
        if batchsize > 1:
            stream.flush()
        rate = n / (time.perf_counter() - t0)
        runs.append(rate)
        log(f"  minibatch append (batchsize={batchsize}) rep {rep + 1}: {rate:,.0f} items/s")
        stream.clear()
        stream.stop()
    return {"runs": runs, "rate": median(runs), "items": n}


def _buffer_count(db, name):
    return db["buffer"].count_documents({"stream": name})


def bench_count(url, db, reps, n, timeout, log):
    from minibatch import Stream

    runs = []
    for rep in range(reps):
        name = f"mb_count_{rep}_{uuid.uuid4().hex[:6]}"
        stream = Stream.get_or_create(name, url=url, batchsize=1000)
        for item in make_items(n, rep):
            stream.append(item)
        stream.flush()
        stream.stop()
        assert _buffer_count(db, name) == n
        with consumer_process(url, name, 100, "noop", None) as (proc, go):
            time.sleep(0.3)
            t0 = time.time()
            go.set()
            deadline = time.monotonic() + timeout
            left = n
            while time.monotonic() < deadline:
                left = _buffer_count(db, name)
                if left == 0:
                    break
                time.sleep(0.25)
            t1 = time.time()
            rate = (n - left) / (t1 - t0)
            runs.append({"rate": rate, "seconds": t1 - t0, "left": left})
            log(f"  minibatch CountWindow(100) rep {rep + 1}: {rate:,.1f} items/s ({n - left}/{n} in {t1 - t0:.1f} s)")
    return {"runs": runs, "rate": median([r["rate"] for r in runs]), "items": n}


def bench_latency(url, reps, n, idle_seconds, log):
    from minibatch import Stream

    runs, idle = [], []
    rnd = random.Random(7)
    for rep in range(reps):
        name = f"mb_latency_{rep}_{uuid.uuid4().hex[:6]}"
        stream = Stream.get_or_create(name, url=url)
        fd, path = tempfile.mkstemp(prefix="mb-latency-")
        os.close(fd)
        try:
            with consumer_process(url, name, 1, "latency", path) as (proc, go):
                go.set()
                time.sleep(1.0)
                if idle_seconds:
                    c0, w0 = cpu_seconds(proc.pid), time.perf_counter()
                    time.sleep(idle_seconds)
                    cpu = (cpu_seconds(proc.pid) - c0) / (time.perf_counter() - w0) * 100
                    idle.append(cpu)
                    log(f"  minibatch idle rep {rep + 1}: consumer {cpu:.2f} % of a core")
                for i in range(n):
                    time.sleep(rnd.uniform(0.02, 0.05))
                    stream.append({"i": i, "t": time.time()})
                deadline = time.monotonic() + 60
                lat = []
                while time.monotonic() < deadline:
                    with open(path) as f:
                        lat = [float(x) * 1000 for x in f.read().split()]
                    if len(lat) >= n:
                        break
                    time.sleep(0.2)
                runs.append({"p50": percentile(lat, 50), "p99": percentile(lat, 99), "n": len(lat),
                             "max": max(lat) if lat else None})
                log(f"  minibatch latency rep {rep + 1}: p50 {runs[-1]['p50']:.1f} ms, p99 {runs[-1]['p99']:.1f} ms "
                    f"({len(lat)}/{n} delivered)")
        finally:
            stream.clear()
            stream.stop()
            os.unlink(path)
    return {"runs": runs, "p50": median([r["p50"] for r in runs]), "p99": median([r["p99"] for r in runs]), "n": n,
            "idle_cpu_pct": median(idle), "idle_runs": idle}


def versions():
    from importlib.metadata import version

    out = {}
    for pkg in ("minibatch", "mongoengine", "pymongo", "dill"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - any failure is reported and the run goes on
            out[pkg] = None
    out["python"] = sys.version.split()[0]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="server URL without a database")
    ap.add_argument("--db", default=f"mbbench_{uuid.uuid4().hex[:8]}")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--append-n", type=int, default=500)
    ap.add_argument("--count-n", type=int, default=1000)
    ap.add_argument("--latency-n", type=int, default=200)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measurement (0: skip)")
    ap.add_argument("--timeout", type=float, default=180.0, help="per CountWindow run")
    args = ap.parse_args()

    def log(msg):
        print(msg, flush=True)

    import pymongo

    url = f"{args.url.rstrip('/')}/{args.db}"
    client = pymongo.MongoClient(args.url, serverSelectionTimeoutMS=5000)
    result = {"versions": versions(), "url": url}
    try:
        result["append"] = bench_append(url, args.reps, args.append_n, 1, log)
        result["append_batch100"] = bench_append(url, args.reps, max(args.append_n, 1000), 100, log)
        result["count100"] = bench_count(url, client[args.db], args.reps, args.count_n, args.timeout, log)
        result["latency"] = bench_latency(url, args.reps, args.latency_n, args.idle, log)
    except Exception as exc:  # noqa: BLE001 - reported to the driver with the evidence
        import traceback

        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        log(result["traceback"])
    finally:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        try:
            client.drop_database(args.db)
        except Exception:  # noqa: BLE001 - any failure is reported and the run goes on
            pass
        client.close()
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
