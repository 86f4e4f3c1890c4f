"""What idle SSE followers cost a `streamlog serve` process: RSS and threads before, with N
followers connected at once (a burst, as when browsers reconnect after a restart), and
after they idle; then the cost per follower.

    python scripts/bench_followers.py [--followers 200] [--idle 5] [--read-threads N] [--url URL]

``--read-threads`` overrides ``streamlog.serve.follow.READ_THREADS`` in the server (40 is
what every follower read used before issue 17: Starlette's shared thread pool).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import streamlog  # noqa: E402 - after the sys.path line that makes the checkout's streamlog importable

SERVER = """
import sys
from streamlog.serve import follow, server
if sys.argv[2] != "-":
    follow.READ_THREADS = int(sys.argv[2])
server.serve(sys.argv[1], port=0)
"""


def start(url: str, read_threads: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", SERVER, url, read_threads], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, env=env, text=True)
    line = proc.stderr.readline()
    if " on http://" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line}")
    return proc, line.split(" on ", 1)[1].split("/ ", 1)[0]


async def measure(base: str, pid: int, n: int, idle: float) -> dict:
    server = psutil.Process(pid)

    def sample() -> dict:
        return {"rss": server.memory_info().rss / 2**20, "threads": server.num_threads()}

    limits = httpx.Limits(max_connections=n + 10)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        await http.get("/healthz")  # the app's first request is not a follower's cost
        before = sample()

        async def connect():
            cm = http.stream("GET", "/streams/idle/follow", params={"start": "earliest"})
            response = await cm.__aenter__()
            lines = response.aiter_lines()
            while await lines.__anext__() != "id: 99":  # it has read the backlog: it follows
                pass
            return cm

        streams = await asyncio.gather(*(connect() for _ in range(n)))
        connected = sample()
        cpu0 = sum(server.cpu_times()[:2])
        await asyncio.sleep(idle)  # the measured idle period, not a synchronisation
        cpu = sum(server.cpu_times()[:2]) - cpu0
        after = sample()
        for cm in streams:
            await cm.__aexit__(None, None, None)
    return {"before": before, "connected": connected, "after": after, "cpu": cpu / idle * 100}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--followers", type=int, default=200)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--read-threads", default="-")
    ap.add_argument("--url", default=None, help="default: a fresh embedded database")
    args = ap.parse_args()
    url = args.url or f"sqlite:///{tempfile.mkdtemp(prefix='followbench-')}/bench.db"
    streamlog.connect(url).stream("idle").extend([{"n": i, "pad": "x" * 60} for i in range(100)])
    proc, base = start(url, args.read_threads)
    try:
        r = asyncio.run(measure(base, proc.pid, args.followers, args.idle))
    finally:
        proc.terminate()
        proc.wait(15)
    b, c, a = r["before"], r["connected"], r["after"]
    n = args.followers
    print(f"{n} followers (each read a 100-item backlog, then idle {args.idle:g} s), "
          f"read threads: {args.read_threads if args.read_threads != '-' else 'default'}")
    print("| server | RSS MiB | threads |\n|---|---:|---:|")
    print(f"| no follower | {b['rss']:.1f} | {b['threads']} |")
    print(f"| {n} followers connected | {c['rss']:.1f} | {c['threads']} |")
    print(f"| … after {args.idle:g} s idle | {a['rss']:.1f} | {a['threads']} |")
    print(f"per follower: {(a['rss'] - b['rss']) * 1024 / n:.0f} KiB RSS, "
          f"{a['threads'] - b['threads']} threads in all; idle CPU {r['cpu']:.1f}% of a core")


if __name__ == "__main__":
    main()
