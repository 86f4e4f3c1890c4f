#!/usr/bin/env python
"""``streamlog serve`` benchmarks (issue 11), results in docs/benchmarks.md.

    python scripts/bench_serve.py            # prints a Markdown section

Through a real server subprocess (uvicorn, 127.0.0.1) on the embedded backend in a
temporary directory, in the same run:

* HTTP ingest items/s for batches of 1, 100, 1,000 and 10,000 items (JSON arrays of
  ~70-byte items, pre-encoded; keep-alive httpx clients, CLIENTS threads) against
  direct ``Stream.extend`` of the same batches in this process;
* append → SSE event latency, p50/p99: a follower on ``/follow`` and a producer appending
  one item every 10 ms with ``Stream.append`` (the item carries its send time);
* the server's RSS, threads and CPU with 0 and with 100 idle SSE followers.

Environment: CLIENTS (ingest client threads, default 2), SAMPLES (latency, default 300).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402 - after the sys.path line that makes the checkout importable
import orjson  # noqa: E402 - after the sys.path line that makes the checkout importable
import psutil  # noqa: E402 - after the sys.path line that makes the checkout importable

import streamlog  # noqa: E402 - after the sys.path line that makes the checkout importable

CLIENTS = int(os.environ.get("CLIENTS", 2))
SAMPLES = int(os.environ.get("SAMPLES", 300))
# batch size -> total items sent
PLAN = {1: 6_000, 100: 100_000, 1_000: 200_000, 10_000: 200_000}


def item(i: int) -> dict:
    return {"device": f"sensor-{i % 1000:04d}", "temp": 21.5 + i % 7, "hum": 45.25, "n": i}


def start_server(url: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "streamlog.cli", "serve", "--port", "0", "--url", url],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    line = proc.stderr.readline()
    if " on http://" not in line:
        raise SystemExit(f"the server did not start: {line}")
    return proc, line.split(" on ", 1)[1].split("/ ", 1)[0]


def timed_threads(target, args: list) -> float:
    """Seconds for ``target(a)`` on one thread per ``a`` in ``args``, all at once."""
    threads = [threading.Thread(target=target, args=(a,)) for a in args]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def ingest(base: str, batch: int, total: int) -> float:
    bodies = [orjson.dumps([item(i * batch + j) for j in range(batch)]) for i in range(total // batch)]
    shares = [bodies[k::CLIENTS] for k in range(CLIENTS)]
    headers = {"Content-Type": "application/json"}

    def send(share):
        with httpx.Client(base_url=base, timeout=60) as http:
            for body in share:
                response = http.post(f"/streams/http{batch}/items", content=body, headers=headers)
                assert response.status_code == 200, response.text

    with httpx.Client(base_url=base) as http:  # warm up: the stream exists, connections are open
        http.post(f"/streams/http{batch}/items", content=b"[]", headers=headers)
    return total / timed_threads(send, shares)


def raw_single(base: str, total: int) -> float:
    """Single-item POSTs from a minimal keep-alive HTTP/1.1 client on raw sockets (CLIENTS
    connections): what the server sustains when the client costs next to nothing (httpx
    spends about as much CPU per request as the server, on the same two cores)."""
    import socket

    host, port = base.removeprefix("http://").rsplit(":", 1)
    body = orjson.dumps([item(0)])
    request = (b"POST /streams/raw1/items HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    def send(n: int) -> None:
        with socket.create_connection((host, int(port))) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(n):
                sock.sendall(request)
                data = b""
                while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                    data += sock.recv(65536)
                assert data.startswith(b"HTTP/1.1 200"), data[:100]

    send(10)
    return total / timed_threads(send, [total // CLIENTS] * CLIENTS)


def direct(url: str, batch: int, total: int) -> float:
    stream = streamlog.connect(url).stream(f"direct{batch}")
    batches = [[item(i * batch + j) for j in range(batch)] for i in range(total // batch)]
    started = time.perf_counter()
    for b in batches:
        stream.extend(b)
    return total / (time.perf_counter() - started)


def latency(base: str, url: str) -> tuple[float, float]:
    stream = streamlog.connect(url).stream("latency")
    delays: list[float] = []
    ready = threading.Event()

    def follow():
        with httpx.Client(base_url=base, timeout=60) as http:
            with http.stream("GET", "/streams/latency/follow") as r:
                for line in r.iter_lines():
                    if line.startswith("retry"):
                        ready.set()
                    if line.startswith("data: "):
                        delays.append((time.time() - orjson.loads(line[6:])["data"]["t"]) * 1000)
                        if len(delays) >= SAMPLES:
                            return

    thread = threading.Thread(target=follow)
    thread.start()
    ready.wait(10)
    time.sleep(0.2)
    for _ in range(SAMPLES):
        stream.append({"t": time.time()})
        time.sleep(0.01)
    thread.join(30)
    delays.sort()
    return delays[len(delays) // 2], delays[min(len(delays) - 1, int(0.99 * len(delays)))]


def idle_followers(base: str, pid: int, n: int = 100, idle: float = 5.0) -> dict:
    server = psutil.Process(pid)

    def sample() -> dict:
        return {"rss": server.memory_info().rss / 2**20, "threads": server.num_threads()}

    async def run() -> dict:
        before = sample()
        limits = httpx.Limits(max_connections=n + 10)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
            streams = []
            for _ in range(n):
                cm = http.stream("GET", "/streams/idle/follow")
                response = await cm.__aenter__()
                await response.aiter_lines().__anext__()  # "retry: …": it follows
                streams.append((cm, response))
            connected = sample()
            cpu0 = sum(server.cpu_times()[:2])
            await asyncio.sleep(idle)
            cpu = sum(server.cpu_times()[:2]) - cpu0
            after = sample()
            for cm, _ in streams:
                await cm.__aexit__(None, None, None)
        return {"before": before, "connected": connected, "after": after, "cpu": cpu / idle * 100}

    streamlog.connect(f"sqlite:///{DB}").stream("idle")
    return asyncio.run(run())


def _parser() -> str:
    """The HTTP parser uvicorn picks (``http="auto"``): httptools when installed, else h11."""
    import importlib.util

    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def main() -> None:
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    global DB
    work = tempfile.mkdtemp(prefix="servebench-")
    DB = f"{work}/bench.db"
    url = f"sqlite:///{DB}"
    streamlog.connect(url)
    proc, base = start_server(url)
    try:
        rows = []
        for batch, total in PLAN.items():
            http_rate = ingest(base, batch, total)
            direct_rate = direct(url, batch, min(total, 20_000) if batch == 1 else total)
            rows.append((batch, total, http_rate, direct_rate))
        raw = raw_single(base, PLAN[1])
        p50, p99 = latency(base, url)
        rss = idle_followers(base, proc.pid)
    finally:
        proc.terminate()
        proc.wait(15)
    print("### HTTP API: `streamlog serve` (issue 11)\n")
    print(f"`python scripts/bench_serve.py` (2 cores, embedded backend, a real `streamlog serve` subprocess "
          f"on 127.0.0.1 — uvicorn {__import__('uvicorn').__version__} with {_parser()}; the clients run on the same "
          f"two cores). JSON arrays of ~70-byte items, {CLIENTS} keep-alive httpx clients:\n")
    print("| batch | items sent | HTTP items/s | direct `extend` items/s | HTTP / direct |")
    print("|---:|---:|---:|---:|---:|")
    for batch, total, h, d in rows:
        print(f"| {batch:,} | {total:,} | {h:,.0f} | {d:,.0f} | {h / d:.2f} |")
    print(f"\nSingle-item POSTs from a minimal raw-socket keep-alive client ({CLIENTS} connections) instead of "
          f"httpx: **{raw:,.0f} requests/s** — the server's own rate, the client costing next to nothing.")
    print(f"\nAppend → SSE event (`Stream.append` in another process → the follower's `data:` line), "
          f"{SAMPLES} items 10 ms apart: **p50 {p50:.2f} ms, p99 {p99:.2f} ms**.\n")
    b, c, a = rss["before"], rss["connected"], rss["after"]
    print("| server | RSS MiB | threads |")
    print("|---|---:|---:|")
    print(f"| 0 followers | {b['rss']:.1f} | {b['threads']} |")
    print(f"| 100 idle SSE followers, connected | {c['rss']:.1f} | {c['threads']} |")
    print(f"| … after 5 s idle | {a['rss']:.1f} | {a['threads']} |")
    print(f"\nServer CPU while the 100 followers idle: {rss['cpu']:.1f}% of a core.")


if __name__ == "__main__":
    main()
