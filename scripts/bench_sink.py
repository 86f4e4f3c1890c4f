#!/usr/bin/env python
"""The cost of exactly-once stream sinks (issue 20): a window's sink append with and
without its once-key, on both backends, and its MongoDB round trips.

    python scripts/bench_sink.py                      # SQLite, and FerretDB if installed
    python scripts/bench_sink.py --records 10 --reps 7

Per backend it times, interleaved, ``Stream.extend(records)`` (the at-least-once sink
path before) and ``Stream.extend_once(window_key, records, check_items=False)`` (the
path a consumer's stream sink takes now), one call per "window", and reports ms per
window (median of the repetitions, min–max). On MongoDB it also counts the commands
each call sends (pymongo command monitoring): the round trips.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import common  # noqa: E402 - after the sys.path line that makes the checkout importable
from benchlib.common import FerretDB, find_ferretdb, make_items, store_commands  # noqa: E402 - after the sys.path line


def measure(url: str, records: int, windows: int, reps: int, listener=None) -> dict:
    import streamlog

    client = streamlog.connect(url)
    rows = {"extend": [], "extend_once": []}
    trips: dict = {}
    for rep in range(reps):
        plain = client.stream(f"sink_plain_{uuid.uuid4().hex[:6]}")
        once = client.stream(f"sink_once_{uuid.uuid4().hex[:6]}")
        batches = [make_items(records, rep * windows + w) for w in range(windows)]
        plain.extend(batches[0])  # warm both (offset caches, indexes)
        once.extend_once(f"warm:{rep}", batches[0], check_items=False)
        for side in (("extend", "extend_once") if rep % 2 == 0 else ("extend_once", "extend")):
            t0 = time.perf_counter()
            for w, batch in enumerate(batches):
                if side == "extend":
                    plain.extend(batch)
                else:
                    once.extend_once(f"sink:{w}:{rep}", batch, check_items=False)
            rows[side].append((time.perf_counter() - t0) / windows * 1000)
        if listener is not None and rep == 0:  # each right after a call that verified the cached offset
            plain.extend(batches[0])
            listener.sent.clear()
            plain.extend(batches[0])
            trips["extend"] = dict(Counter(name for name, _, _ in listener.sent))
            once.extend_once("count:warm", batches[0], check_items=False)
            listener.sent.clear()
            once.extend_once(f"count:{rep}", batches[0], check_items=False)
            trips["extend_once"] = dict(Counter(name for name, _, _ in listener.sent))
            listener.sent.clear()
            once.extend_once(f"count:{rep}", batches[0], check_items=False)
            trips["replay"] = dict(Counter(name for name, _, _ in listener.sent))
    out = {side: {"median": statistics.median(v), "min": min(v), "max": max(v)} for side, v in rows.items()}
    out["round_trips"] = trips
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10, help="sink records per window (default 10)")
    ap.add_argument("--windows", type=int, default=300, help="windows per repetition (default 300)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mongo-url", help="an existing MongoDB-wire server (else a private FerretDB, if installed)")
    args = ap.parse_args(argv)
    common.install_signal_handlers()
    import pymongo.monitoring

    listener = store_commands()
    pymongo.monitoring.register(listener)  # before any client exists
    targets = [("sqlite", f"sqlite:///{common.tempdir('streamlog-bench-sink-')}/sink.db")]
    ferret = None
    try:
        base = args.mongo_url
        if base is None and (binary := find_ferretdb()) is not None:
            ferret = FerretDB(binary)
            base = ferret.url
        if base:
            targets.append(("mongo", f"{base}/sinkbench_{uuid.uuid4().hex[:6]}"))
        print("| backend | records/window | extend ms/window | extend_once ms/window | "
              "round trips extend → extend_once |\n|---|---|---|---|---|")
        for kind, url in targets:
            r = measure(url, args.records, args.windows if kind == "sqlite" else args.windows // 3, args.reps,
                        listener if kind == "mongo" else None)
            trips = r["round_trips"]
            text = "n/a (one transaction each)"
            if trips:
                text = " → ".join(f"{sum(t.values())} ({', '.join(f'{k}×{v}' for k, v in t.items())})"
                                  for t in (trips["extend"], trips["extend_once"]))
                text += f"; a replay: {sum(trips['replay'].values())}"
            cells = [f"{r[s]['median']:.3f} ({r[s]['min']:.3f}–{r[s]['max']:.3f})" for s in ("extend", "extend_once")]
            print(f"| {kind} | {args.records} | {cells[0]} | {cells[1]} | {text} |")
    finally:
        if ferret is not None:
            common.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
