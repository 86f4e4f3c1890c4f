"""The workloads of the benchmark suite (driver side).

Every loop is bounded by a count and by a time budget; child processes are
registered with :mod:`benchlib.common` so that an interrupted run cleans up.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import random
import sqlite3
import time
import uuid
from datetime import datetime, timezone

import orjson

from . import common, workers
from .common import make_items, median, percentile, register, stop_process

CTX = mp.get_context("spawn")
UTC = timezone.utc


# ---------------------------------------------------------------------------
# backends


class Backend:
    """Where one backend's streams live, and the raw driver to compare with."""

    kind: str
    url: str

    def raw(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


class SQLiteBackend(Backend):
    kind = "sqlite"

    def __init__(self, directory: str):
        self.dir = directory
        self.url = f"sqlite:///{directory}/streamlog.db"  # directory is absolute: four slashes

    def raw(self) -> "RawSQLite":
        return RawSQLite(f"{self.dir}/raw.db")

    def url_for(self, name: str) -> str:
        return f"sqlite:///{self.dir}/{name}.db"


class MongoBackend(Backend):
    kind = "mongo"

    def __init__(self, base: str, run_id: str, server_pid: int | None = None):
        self.base = base.rstrip("/")
        self.run_id = run_id
        self.url = f"{self.base}/slbench_{run_id}"
        self.server_pid = server_pid
        self._dbs = [f"slbench_{run_id}", f"rawbench_{run_id}", f"rtbench_{run_id}"]

    def raw(self) -> "RawMongo":
        return RawMongo(self.base, f"rawbench_{self.run_id}")

    def url_for(self, name: str) -> str:
        return f"{self.base}/{name}_{self.run_id}"

    def close(self) -> None:
        import pymongo

        if self.server_pid or common.interrupted:
            return  # our own FerretDB: its state directory goes as a whole
        try:
            client = pymongo.MongoClient(self.base, serverSelectionTimeoutMS=2000)
            for db in self._dbs:
                client.drop_database(db)
            client.close()
        except Exception:  # noqa: BLE001 - best effort
            pass


class RawSQLite:
    """sqlite3 the way a user would write it: a ``(off INTEGER PRIMARY KEY, ts, data)``
    table, orjson-encoded items, the pragmas streamlog uses (WAL, synchronous=NORMAL,
    busy_timeout); one autocommit INSERT per item, one ``BEGIN IMMEDIATE … COMMIT``
    around ``executemany`` per batch."""

    def __init__(self, path: str):
        self.con = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.con.execute("PRAGMA busy_timeout=30000")
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")

    def target(self, name: str):
        self.con.execute(f"DROP TABLE IF EXISTS {name}")
        self.con.execute(f"CREATE TABLE {name} (off INTEGER PRIMARY KEY, ts INTEGER NOT NULL, data BLOB NOT NULL)")
        sql = f"INSERT INTO {name} (ts, data) VALUES (?, ?)"
        con = self.con
        dumps = orjson.dumps

        def one(item):
            con.execute(sql, (time.time_ns() // 1_000_000, dumps(item)))

        def many(items):
            ts = time.time_ns() // 1_000_000
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany(sql, [(ts, dumps(item)) for item in items])
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

        return one, many

    def close(self):
        self.con.close()


class RawMongo:
    """pymongo ``insert_one`` / ``insert_many`` of ``{"t": now, "d": item}`` into a fresh collection."""

    def __init__(self, base: str, database: str):
        import pymongo

        self.client = pymongo.MongoClient(base, serverSelectionTimeoutMS=5000)
        self.db = self.client[database]

    def target(self, name: str):
        self.db.drop_collection(name)
        coll = self.db[name]

        def one(item):
            coll.insert_one({"t": datetime.now(UTC), "d": item})

        def many(items):
            now = datetime.now(UTC)
            coll.insert_many([{"t": now, "d": item} for item in items])

        return one, many

    def close(self):
        self.client.close()


def _wait_event(event, procs, timeout: float, what: str) -> None:
    """Wait for ``event``; fail early if a child died instead."""
    deadline = time.monotonic() + timeout
    while not event.wait(0.2):
        dead = [p for p in procs if not p.is_alive()]
        if dead:
            raise RuntimeError(f"{what}: child process exited with {dead[0].exitcode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: no answer within {timeout:.0f} s")


def _get(q, procs, timeout: float, what: str):
    """``q.get()``, failing early if every child died without answering."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return q.get(timeout=0.5)
        except queue.Empty:
            if all(not p.is_alive() for p in procs):
                try:
                    return q.get(timeout=1.0)
                except queue.Empty:
                    raise RuntimeError(f"{what}: child process exited with {procs[0].exitcode}") from None
            if time.monotonic() > deadline:
                raise


def _drop(stream) -> None:
    if common.interrupted:
        return
    try:
        stream.drop()
    except Exception:  # noqa: BLE001 - any failure is reported and the run goes on
        pass


# ---------------------------------------------------------------------------
# append / extend vs the raw driver


def bench_append(backend: Backend, reps: int, sizes: dict, seed: int, budget: float, log) -> dict:
    """items/s of ``append`` (one at a time) and ``extend`` (batches of 100 and 10,000) against
    the raw driver doing the same inserts. Each repetition interleaves raw and streamlog in
    chunks (alternating which goes first) so machine noise hits both alike."""
    import streamlog

    raw = backend.raw()
    out: dict = {}
    try:
        for label, batch, total, chunks in (("append", 1, sizes["append"], 6),
                                            ("extend100", 100, sizes["extend100"], 6),
                                            ("extend10000", 10_000, sizes["extend10000"], 2)):
            runs = []
            for rep in range(reps):
                name = f"{label}_{rep}_{uuid.uuid4().hex[:6]}"
                stream = streamlog.stream(name, url=backend.url)
                raw_one, raw_many = raw.target(f"raw_{name.replace('-', '_')}")
                items = make_items(total, seed + rep)
                per_chunk = max(batch, total // chunks // batch * batch)
                t_lib = t_raw = 0.0
                n_lib = n_raw = 0
                started = time.monotonic()
                for c, lo in enumerate(range(0, total, per_chunk)):
                    part = items[lo:lo + per_chunk]
                    order = ("raw", "lib") if (rep + c) % 2 == 0 else ("lib", "raw")
                    for side in order:
                        t0 = time.perf_counter()
                        if batch == 1:
                            if side == "raw":
                                for item in part:
                                    raw_one(item)
                            else:
                                append = stream.append
                                for item in part:
                                    append(item)
                        else:
                            fn = raw_many if side == "raw" else stream.extend
                            for k in range(0, len(part), batch):
                                fn(part[k:k + batch])
                        dt = time.perf_counter() - t0
                        if side == "raw":
                            t_raw += dt
                            n_raw += len(part)
                        else:
                            t_lib += dt
                            n_lib += len(part)
                    if time.monotonic() - started > budget:
                        log(f"  {label}: time budget reached after {n_lib} items")
                        break
                lib_rate, raw_rate = n_lib / t_lib, n_raw / t_raw
                runs.append({"streamlog": lib_rate, "raw": raw_rate, "ratio": lib_rate / raw_rate, "items": n_lib})
                log(f"  {backend.kind} {label} rep {rep + 1}: streamlog {lib_rate:,.0f}/s raw {raw_rate:,.0f}/s "
                    f"({lib_rate / raw_rate:.0%})")
                if backend.kind == "mongo":
                    _drop(stream)
                    raw.db.drop_collection(f"raw_{name}")
            out[label] = {
                "batch": batch, "runs": runs,
                "streamlog": median([r["streamlog"] for r in runs]),
                "raw": median([r["raw"] for r in runs]),
                "ratio": median([r["ratio"] for r in runs]),
            }
    finally:
        raw.close()
    return out


# ---------------------------------------------------------------------------
# consume throughput


def _prefill(stream, n: int, seed: int, batch: int) -> None:
    for lo in range(0, n, batch):
        stream.extend(make_items(min(batch, n - lo), seed, lo))


def bench_consume(backend: Backend, reps: int, n: int, seed: int, timeout: float, log) -> dict:
    """items/s through CountWindow(100) and RelaxedTimeWindow(0.5 s), no-op function, with
    one and with two consumer processes in one group, over a backlog of ``n`` items.
    Time: from the driver's "go" until the last consumer has committed and returned."""
    import streamlog

    out: dict = {}
    fill_batch = 10_000 if backend.kind == "sqlite" else 1_000
    for kind in ("count100", "relaxed"):
        for consumers in (1, 2):
            runs = []
            for rep in range(reps):
                name = f"consume_{kind}_{consumers}_{rep}_{uuid.uuid4().hex[:6]}"
                stream = streamlog.stream(name, url=backend.url)
                _prefill(stream, n, seed, fill_batch)
                stream.group("bench")
                counter = CTX.Value("q", 0)
                done, go = CTX.Event(), CTX.Event()
                ready_q, result_q = CTX.Queue(), CTX.Queue()
                procs = [register(CTX.Process(target=workers.consume, daemon=True,
                                              args=(backend.url, name, kind, "bench", n, counter, done, go,
                                                    ready_q, result_q, w)))
                         for w in range(consumers)]
                try:
                    for p in procs:
                        p.start()
                    for _ in procs:
                        _get(ready_q, procs, 120, "consumer start")
                    time.sleep(0.3)  # let them settle into their idle wait
                    t_go = time.time()
                    go.set()
                    results = [_get(result_q, procs, timeout, "consume") for _ in procs]
                    end = max(r["t1"] for r in results)
                    delivered = sum(r["items"] for r in results)
                    rate = n / (end - t_go)
                    runs.append({"rate": rate, "seconds": end - t_go, "delivered": delivered,
                                 "windows": [r["windows"] for r in results],
                                 "items_per_consumer": [r["items"] for r in results]})
                    log(f"  {backend.kind} {kind} x{consumers} rep {rep + 1}: {rate:,.0f} items/s "
                        f"(windows per consumer {[r['windows'] for r in results]}, delivered {delivered}/{n})")
                except (queue.Empty, RuntimeError) as exc:
                    log(f"  {backend.kind} {kind} x{consumers} rep {rep + 1}: FAILED ({exc or 'timeout'})")
                    runs.append({"rate": None, "error": str(exc) or "timeout"})
                finally:
                    done.set()
                    go.set()  # a consumer still waiting for "go" then sees "done" and returns at once
                    for p in procs:
                        p.join(10)
                        stop_process(p)
                    if backend.kind == "mongo":
                        _drop(stream)
            out[f"{kind}_x{consumers}"] = {"runs": runs, "rate": median([r["rate"] for r in runs]), "items": n}
    return out


# ---------------------------------------------------------------------------
# latency


def _poll(poll: float | None) -> str:
    return "" if poll is None else f" (poll={poll * 1000:g} ms)"


def bench_pollsweep(backend: Backend, reps: int, n: int, seconds: float, polls: list[float], log) -> dict:
    """The idle-cost / latency trade-off: both measured with ``streaming(..., poll=P)``
    (the idle back-off cap) for each P."""
    rows = []
    for poll in polls:
        lat = bench_latency(backend, reps, n, log, poll)
        idle = bench_idle(backend, reps, seconds, log, poll)
        rows.append({"poll_ms": poll * 1000, "p50": lat["p50"], "p99": lat["p99"], "cpu_pct": idle["cpu_pct"],
                     "server_cpu_pct": idle["server_cpu_pct"]})
    return {"rows": rows}


def bench_latency(backend: Backend, reps: int, n: int, log, poll: float | None = None) -> dict:
    """append → consumer function start, ``size=1``, an idle blocking consumer in another
    process; the producer appends one item every 20–50 ms (random), stamped with time.time()."""
    import streamlog

    runs = []
    rnd = random.Random(7)
    for rep in range(reps):
        name = f"latency_{rep}_{uuid.uuid4().hex[:6]}"
        stream = streamlog.stream(name, url=backend.url)
        ready, result_q = CTX.Event(), CTX.Queue()
        proc = register(CTX.Process(target=workers.latency, args=(backend.url, name, n, ready, result_q, poll),
                                    daemon=True))
        try:
            proc.start()
            _wait_event(ready, [proc], 120, "latency consumer start")
            time.sleep(1.0)  # idle: its poll interval has backed off to the maximum
            for i in range(n):
                time.sleep(rnd.uniform(0.02, 0.05))
                stream.append({"i": i, "t": time.time()})
            lat = [x * 1000 for x in _get(result_q, [proc], 60, "latency")]
            runs.append({"p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat), "n": len(lat)})
            log(f"  {backend.kind} latency{_poll(poll)} rep {rep + 1}: p50 {runs[-1]['p50']:.2f} ms, "
                f"p99 {runs[-1]['p99']:.2f} ms")
        except (queue.Empty, RuntimeError) as exc:
            runs.append({"p50": None, "p99": None, "error": str(exc) or "timeout"})
            log(f"  {backend.kind} latency rep {rep + 1}: FAILED ({exc or 'timeout'})")
        finally:
            proc.join(10)
            stop_process(proc)
            if backend.kind == "mongo":
                _drop(stream)
    return {"runs": runs, "p50": median([r["p50"] for r in runs]), "p99": median([r["p99"] for r in runs]), "n": n}


# ---------------------------------------------------------------------------
# idle cost


def cpu_seconds(pid: int) -> float:
    """CPU time of a process so far, every thread: the scheduler's nanosecond count
    (``/proc/PID/task/*/schedstat``) on Linux — psutil's ``cpu_times`` counts 10 ms ticks,
    too coarse for an idle process's 0.1 % — else psutil's figure."""
    import glob

    total, found = 0, False
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
            found = True
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            continue
    if found:
        return total / 1e9
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def bench_idle(backend: Backend, reps: int, seconds: float, log, poll: float | None = None) -> dict:
    """CPU % (of one core) of a blocking consumer with nothing to do, over ``seconds``
    (:func:`cpu_seconds` of the consumer process; the server's too when we run it)."""

    import streamlog

    runs = []
    for rep in range(reps):
        name = f"idle_{rep}_{uuid.uuid4().hex[:6]}"
        stream = streamlog.stream(name, url=backend.url)
        ready = CTX.Event()
        proc = register(CTX.Process(target=workers.idle, args=(backend.url, name, ready, poll), daemon=True))
        try:
            proc.start()
            _wait_event(ready, [proc], 120, "idle consumer start")
            time.sleep(1.0)
            server = getattr(backend, "server_pid", None)
            c0, w0 = cpu_seconds(proc.pid), time.perf_counter()
            s0 = cpu_seconds(server) if server else 0.0
            time.sleep(seconds)
            c1, w1 = cpu_seconds(proc.pid), time.perf_counter()
            s1 = cpu_seconds(server) if server else 0.0
            wall = w1 - w0
            cpu = (c1 - c0) / wall * 100
            run = {"cpu_pct": cpu, "seconds": wall}
            if server:
                run["server_cpu_pct"] = (s1 - s0) / wall * 100
            runs.append(run)
            log(f"  {backend.kind} idle{_poll(poll)} rep {rep + 1}: consumer {cpu:.2f} % of a core"
                + (f", server {run['server_cpu_pct']:.2f} %" if server else ""))
        finally:
            stop_process(proc)
            if backend.kind == "mongo":
                _drop(stream)
    return {"runs": runs, "cpu_pct": median([r["cpu_pct"] for r in runs]),
            "server_cpu_pct": median([r.get("server_cpu_pct") for r in runs]), "seconds": seconds}


# ---------------------------------------------------------------------------
# growth (embedded): time per extend batch and per window with 10^4 … 10^6 items in the stream


def bench_growth(backend: SQLiteBackend, reps: int, sizes: list[int], batches: int, seed: int, log) -> dict:
    """One stream per size S, in its own file, filled with S items (history kept). Then, per
    repetition and size in turn (interleaved, so load drift hits every size alike): create a
    group at ``start="latest"``, time ``batches`` extends of 100 items one by one, and consume
    exactly those items in windows of 100 (non-blocking): the gap between consecutive function
    starts is one claim + commit (+ the no-op function)."""
    import streamlog

    streams = {}
    for size in sizes:
        url = backend.url_for(f"growth_{size}")
        stream = streamlog.stream("growth", url=url)
        t0 = time.perf_counter()
        have = len(stream)
        while have < size:
            k = min(10_000, size - have)
            stream.extend(make_items(k, seed, have))
            have += k
        streams[size] = (url, stream)
        log(f"  growth: filled a stream to {have:,} items in {time.perf_counter() - t0:.1f} s")
    runs: dict[int, list] = {size: [] for size in sizes}
    for rep in range(reps):
        for size in sizes:
            url, stream = streams[size]
            length = len(stream)
            group = f"g_{rep}_{uuid.uuid4().hex[:6]}"
            stream.group(group, start="latest")
            batch_ms = []
            for b in range(batches):
                items = make_items(100, seed, length + 100 * b)
                t = time.perf_counter()
                stream.extend(items)
                batch_ms.append((time.perf_counter() - t) * 1000)
            marks: list[float] = []
            windows = streamlog.streaming("growth", size=100, group=group, url=url, blocking=False).apply(
                lambda window, marks=marks: marks.append(time.perf_counter()))
            window_ms = [(b - a) * 1000 for a, b in zip(marks, marks[1:], strict=False)]
            runs[size].append({"length": length, "batch_ms": median(batch_ms), "window_ms": median(window_ms),
                               "windows": windows})
            log(f"  growth {length:>9,} items, rep {rep + 1}: extend(100) {runs[size][-1]['batch_ms']:.3f} ms/batch, "
                f"claim+commit {runs[size][-1]['window_ms']:.3f} ms/window ({windows} windows)")
    out = [{"size": size, "runs": runs[size], "batch_ms": median([r["batch_ms"] for r in runs[size]]),
            "window_ms": median([r["window_ms"] for r in runs[size]])} for size in sizes]
    biggest = max(sizes)
    return {"sizes": out, "url": streams[biggest][0], "length": len(streams[biggest][1])}


# ---------------------------------------------------------------------------
# MongoDB round trips


def bench_roundtrips(backend: MongoBackend, sizes: list[int], batches: int, seed: int, timeout: float, log) -> dict:
    result_q = CTX.Queue()
    url = f"{backend.base}/rtbench_{backend.run_id}"
    proc = register(CTX.Process(target=workers.roundtrips, args=(url, sizes, batches, seed, result_q), daemon=True))
    try:
        proc.start()
        out = _get(result_q, [proc], timeout, "round trips")
    finally:
        proc.join(10)
        stop_process(proc)
    for row in out:
        log(f"  round trips with {row['size']:,} items: extend(100) {row['per_extend_median']:g} "
            f"(max {row['per_extend_max']}) {row['extend_commands']}; window {row['per_window_median']:g} "
            f"(max {row['per_window_max']}) {row['window_commands']} + {row['reclaim_scans']} reclaim scans "
            f"in {row['seconds']:.1f} s ({row['window_ms_median']:.1f} ms/window on this server)")
    return {"sizes": out}


# ---------------------------------------------------------------------------
# memory


def bench_memory(backend: SQLiteBackend, total: int, seed: int, timeout: float, log, growth_url: str | None) -> dict:
    """Peak RSS of a consumer process that processes ``total`` items (windows of 100), with RSS
    sampled along the way (at total/5, 2·total/5, … total)."""
    import streamlog

    url, name = growth_url, "growth"
    stream = streamlog.stream(name, url=url) if url else None
    if stream is None or len(stream) < total:
        url, name = backend.url_for("memory"), "memory"
        stream = streamlog.stream(name, url=url)
        have = len(stream)
        t0 = time.perf_counter()
        while have < total:
            k = min(10_000, total - have)
            stream.extend(make_items(k, seed, have))
            have += k
        log(f"  memory: filled {name} to {have:,} items in {time.perf_counter() - t0:.1f} s")
    marks = [total * k // 5 for k in range(1, 6)]
    result_q = CTX.Queue()
    group = f"mem_{uuid.uuid4().hex[:6]}"
    proc = register(CTX.Process(target=workers.memory, args=(url, name, group, total, marks, result_q), daemon=True))
    try:
        proc.start()
        out = _get(result_q, [proc], timeout, "memory")
    finally:
        proc.join(10)
        stop_process(proc)
    for s in out["samples"]:
        log(f"  memory after {s['items']:>9,} items: RSS {s['rss'] / 2**20:7.1f} MiB "
            f"(peak {s['peak'] / 2**20:.1f} MiB)")
    log(f"  memory: {out['items']:,} items in {out['seconds']:.1f} s ({out['items'] / out['seconds']:,.0f} items/s)")
    return out
