"""streamlog (embedded) against Redis Streams through redis-py with hiredis, in one run.

The same items (benchlib's sensor-like dicts, JSON) go both ways:

* **consume**: a backlog of ``n`` items, then windows of 100 delivered to a no-op Python
  function until none is left — streamlog: ``streaming(size=100, blocking=False)``
  (claim, read, decode, call, commit); Redis: ``XREADGROUP COUNT 100`` + JSON decode of
  each entry + the call + ``XACK`` of the window's ids. Timed from the first read to the
  last acknowledgement; the backlog is written before the clock starts.
* **batched consume**: the same, reading ahead in bulk on both sides — streamlog with
  ``windows_per_claim=16`` (one claim and one commit per 16 windows), Redis with
  ``XREADGROUP COUNT 1600`` and one ``XACK`` per read; the function still gets windows
  of 100. (A separate group on each side, over the same backlog.)
* **extend**: ``stream.extend`` of 100 items at a time against ``XADD`` × 100 in one
  pipeline (no MULTI), the same ``n`` items.

Redis runs as a private ``redis-server`` on 127.0.0.1 with its append-only file synced
every second (``appendfsync everysec``: the nearest to SQLite's WAL with
``synchronous=NORMAL``, which survives a process crash, not a power cut) and no RDB
snapshots. Each repetition runs both sides in ten chunks, taking turns (the one that starts
alternates); ratios are per repetition (streamlog items/s ÷ Redis items/s), reported as
min / median / max.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from .common import free_port, make_items, median

WINDOW = 100
#: the batched comparison: streamlog's windows_per_claim, Redis's windows per XREADGROUP (one XACK)
BATCHED = 16
#: each repetition alternates the sides this many times (so drift on the machine hits both)
CHUNKS = 10


class RedisServer:
    """A private redis-server on 127.0.0.1 (its own process group; stopped on exit)."""

    def __init__(self, binary: str):
        self.dir = Path(tempfile.mkdtemp(prefix="streamlog-bench-redis-"))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def version(self) -> str:
        return str(self.client.info("server").get("redis_version"))

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _noop(window) -> None:
    pass


def _redis_fill(client, key: str, items: list[dict]) -> float:
    """XADD every item (field ``d``: its JSON), 100 per pipeline; returns the seconds taken."""
    t0 = time.perf_counter()
    for lo in range(0, len(items), WINDOW):
        pipe = client.pipeline(transaction=False)
        for item in items[lo:lo + WINDOW]:
            pipe.xadd(key, {"d": orjson.dumps(item)})
        pipe.execute()
    return time.perf_counter() - t0


def _redis_consume(client, key: str, n: int, windows: int = 1) -> float:
    """Consume the next ``n`` items of a group (created at the first call): read
    ``windows`` windows of 100 per ``XREADGROUP``, call the function per window, then one
    ``XACK`` of every id read (``windows`` > 1: the batched client, group ``bench-N``)."""
    group = "bench" if windows == 1 else f"bench-{windows}"
    if not client.exists(f"{key}:{group}"):
        client.xgroup_create(key, group, id="0")
        client.set(f"{key}:{group}", 1)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        reply = client.xreadgroup(group, "c1", {key: ">"}, count=min(WINDOW * windows, n - done))
        if not reply:
            break
        entries = reply[0][1]
        for lo in range(0, len(entries), WINDOW):
            _noop([orjson.loads(fields[b"d"]) for _, fields in entries[lo:lo + WINDOW]])
        client.xack(key, group, *[entry_id for entry_id, _ in entries])
        done += len(entries)
    if done != n:
        raise RuntimeError(f"Redis delivered {done} of {n}")
    return time.perf_counter() - t0


def _streamlog_fill(url: str, name: str, items: list[dict]) -> float:
    import streamlog

    stream = streamlog.stream(name, url)
    t0 = time.perf_counter()
    for lo in range(0, len(items), WINDOW):
        stream.extend(items[lo:lo + WINDOW])
    return time.perf_counter() - t0


def _streamlog_consume(url: str, name: str, n: int, windows: int = 1) -> float:
    """Consume the next ``n`` items of a group (a multiple of the window size), with
    ``windows_per_claim=windows`` (> 1: group ``bench-N``)."""
    import streamlog

    group = "bench" if windows == 1 else f"bench-{windows}"
    sf = streamlog.streaming(name, size=WINDOW, blocking=False, url=url, group=group, max_windows=n // WINDOW,
                             windows_per_claim=windows)
    t0 = time.perf_counter()
    sf.apply(_noop)
    seconds = time.perf_counter() - t0
    if sf.consumer.processed != n // WINDOW:
        raise RuntimeError(f"streamlog delivered {sf.consumer.processed} windows of {n // WINDOW}")
    return seconds


def _interleaved(sides: list, chunks: int, first: int) -> dict[str, float]:
    """Seconds per side, the sides taking turns chunk by chunk (``first`` starts)."""
    seconds = {side: 0.0 for side, _ in sides}
    for chunk in range(chunks):
        for side, run in sides if (chunk + first) % 2 == 0 else sides[::-1]:
            seconds[side] += run()
    return seconds


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": median(values), "max": max(values)}


def bench_redis(sqlite_dir: str, reps: int, n: int, seed: int, log) -> dict:
    """The comparison (module doc); ``{"skipped": why}`` when redis-server or redis-py is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        log("  redis-server not found (apt-get install redis-server): skipping the Redis comparison")
        return {"skipped": "redis-server not found"}
    try:
        import hiredis  # noqa: F401 - only checked: redis-py picks its parser up by itself
        import redis  # noqa: F401
    except ImportError:
        log("  redis-py with hiredis not installed (pip install 'redis[hiredis]'): skipping the Redis comparison")
        return {"skipped": "redis-py or hiredis not installed"}
    server = RedisServer(binary)
    chunk = max(WINDOW, n // CHUNKS // WINDOW * WINDOW)
    n = chunk * (n // chunk)
    items = make_items(n, seed)
    runs = []
    try:
        for rep in range(reps):
            run: dict = {}
            key = f"bench-{uuid.uuid4().hex[:8]}"
            url = f"sqlite:///{sqlite_dir}/redis-{key}.db"
            parts = [items[lo:lo + chunk] for lo in range(0, n, chunk)]
            to_redis, to_streamlog = iter(parts), iter(parts)
            fills = [("redis", lambda key=key, todo=to_redis: _redis_fill(server.client, key, next(todo))),
                     ("streamlog", lambda url=url, todo=to_streamlog: _streamlog_fill(url, "s", next(todo)))]
            for side, seconds in _interleaved(fills, len(parts), rep).items():
                run[f"{side}_extend"] = n / seconds
            consumes = [("redis", lambda key=key: _redis_consume(server.client, key, chunk)),
                        ("streamlog", lambda url=url: _streamlog_consume(url, "s", chunk))]
            for side, seconds in _interleaved(consumes, len(parts), rep).items():
                run[f"{side}_consume"] = n / seconds
            batched = [("redis", lambda key=key: _redis_consume(server.client, key, chunk, BATCHED)),
                       ("streamlog", lambda url=url: _streamlog_consume(url, "s", chunk, BATCHED))]
            for side, seconds in _interleaved(batched, len(parts), rep).items():
                run[f"{side}_batched"] = n / seconds
            server.client.delete(key, f"{key}:bench", f"{key}:bench-{BATCHED}")
            for suffix in ("", "-wal", "-shm", "-claims", "-claims-wal", "-claims-shm"):
                Path(f"{sqlite_dir}/redis-{key}.db{suffix}").unlink(missing_ok=True)
            run["consume_ratio"] = run["streamlog_consume"] / run["redis_consume"]
            run["batched_ratio"] = run["streamlog_batched"] / run["redis_batched"]
            run["extend_ratio"] = run["streamlog_extend"] / run["redis_extend"]
            runs.append(run)
            log(f"  redis rep {rep + 1}: consume {run['streamlog_consume']:,.0f} vs {run['redis_consume']:,.0f} "
                f"items/s ({run['consume_ratio']:.2f}×), {BATCHED} windows per claim / read "
                f"{run['streamlog_batched']:,.0f} vs {run['redis_batched']:,.0f} ({run['batched_ratio']:.2f}×), "
                f"extend(100) {run['streamlog_extend']:,.0f} vs "
                f"{run['redis_extend']:,.0f} ({run['extend_ratio']:.2f}×)")
        version = server.version()
    finally:
        server.close()
    import redis as redis_py

    return {"runs": runs, "items": n, "redis_version": version, "redis_py": redis_py.__version__,
            **{key: _spread([r[key] for r in runs]) for key in runs[0]}}
