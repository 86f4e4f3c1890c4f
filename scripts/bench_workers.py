#!/usr/bin/env python
"""Parallel workers (issue 12): ``workers=1`` vs ``workers=N`` with a slow function.

    python scripts/bench_workers.py                  # 200 windows of 10 items, a 50 ms function
    python scripts/bench_workers.py --write          # … and put the result in docs/benchmarks.md

Embedded (SQLite) backend in a temporary directory. Each run consumes the same stream in
its own group with ``blocking=False`` (so the clock stops when the last window is
committed) and sinks one record per item, so commits and sink writes from several threads
are part of what is measured. Every run is checked: every item delivered exactly once.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import streamlog  # noqa: E402 - after the sys.path line that makes the checkout importable

SECTION = "### Parallel workers (issue 12)"


def run(url: str, workers: int, windows: int, size: int, work: float) -> float:
    """Seconds to process every window with ``workers`` threads (checked: each item once)."""
    def slow(window):
        time.sleep(work)  # stands for I/O or a model call that releases the GIL
        return [{"offset": o} for o in window.offsets]

    group, sink = f"w{workers}", f"out.w{workers}"
    started = time.perf_counter()
    done = streamlog.streaming("bench", size=size, group=group, sink=sink, workers=workers, blocking=False,
                               url=url).apply(slow)
    elapsed = time.perf_counter() - started
    offsets = sorted(r["data"]["offset"] for r in streamlog.connect(url).stream(sink).iter())
    assert done == windows and offsets == list(range(windows * size)), (done, len(offsets))
    return elapsed


def write(section: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text()
    if SECTION in text:  # replace our own section, up to the next heading of the same or a higher level
        text = re.sub(re.escape(SECTION) + r".*?(?=\n#{1,3} |\Z)", section.rstrip("\n") + "\n", text, flags=re.S)
    else:
        anchor = "\n### Previous run"
        at = text.find(anchor)
        text = text[:at] + "\n" + section + text[at:] if at >= 0 else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--size", type=int, default=10, help="items per window")
    parser.add_argument("--work", type=float, default=0.05, help="seconds the function takes per window")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--write", action="store_true", help="write the result into docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        streamlog.connect(url).stream("bench").extend({"i": i} for i in range(args.windows * args.size))
        items = args.windows * args.size
        rows = []
        base = None
        for workers in args.workers:
            elapsed = run(url, workers, args.windows, args.size, args.work)
            base = base or elapsed
            ideal = args.windows * args.work / workers
            rows.append((workers, elapsed, items / elapsed, base / elapsed, ideal / elapsed))
            print(f"workers={workers}: {elapsed:6.2f} s  {items / elapsed:8.0f} items/s  "
                  f"{args.windows / elapsed:6.1f} windows/s  speed-up x{base / elapsed:.2f}  "
                  f"({ideal / elapsed:.0%} of ideal)", flush=True)
    overhead = (rows[0][1] - args.windows * args.work) / args.windows * 1000 if rows[0][0] == 1 else 0.0
    table = "\n".join(f"| {w} | {e:.2f} | {ips:,.0f} | {ips / args.size:.1f} | ×{up:.2f} | {eff:.0%} |"
                      for w, e, ips, up, eff in rows)
    section = f"""{SECTION}

`python scripts/bench_workers.py` (2 cores, embedded backend): {args.windows} count windows of
{args.size} items, a function that takes {args.work * 1000:.0f} ms per window (`time.sleep`: I/O or a
model call that releases the GIL) and returns one record per item to a sink stream;
`blocking=False`, each item checked delivered exactly once.

| workers | seconds | items/s | windows/s | speed-up | of ideal |
|---|---|---|---|---|---|
{table}

"Of ideal" is ({args.windows} × {args.work * 1000:.0f} ms / workers) over the measured time: what
is left is claiming, sink writes and commits, {overhead:.1f} ms a window with one worker; with
N workers it overlaps the function runs (claims on the consumer's thread, sink writes and
commits on the workers'). A function that holds the GIL (pure-Python computing) gains
nothing from threads: run replicas (processes) in the same group instead.
"""
    if args.write:
        write(section)
        print("written to docs/benchmarks.md")


if __name__ == "__main__":
    main()
