#!/usr/bin/env python
"""streamlog on MongoDB-wire servers: what a window costs, how fast a consumer drains, how
quickly an append reaches a waiting function, what an idle consumer burns, how many round
trips a window takes, extend vs the raw driver's insert_many — on FerretDB v2 + DocumentDB
(the production-shaped server) with FerretDB v1 beside it — and what a round trip saved is
worth over a 1 ms-each-way network hop, this checkout against an older one (``--before``).

    python scripts/bench_mongo.py --v2-url mongodb://127.0.0.1:27400 --before bee587a

FerretDB v2: ``../shared/mongo-wire/documentdb.sh start`` prints its URL. FerretDB v1: a
private one is started (scripts/install-ferretdb.sh installs it) unless --v1-url is given.
Every measurement runs in a child process (scripts/benchlib/mongo_worker.py) whose
``streamlog`` is this checkout or, for "before", a git worktree of ``--before``; the two
are interleaved within each repetition. Writes bench-results/bench_mongo.json and prints
Markdown tables (docs/benchmarks.md → "MongoDB at production shape").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.common import ROOT, FerretDB, find_ferretdb, machine_info, make_items, median, percentile  # noqa: E402 - after the sys.path line
from benchlib.proxy import DelayProxy  # noqa: E402 - after the sys.path line

WORKER = ROOT / "scripts" / "benchlib" / "mongo_worker.py"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def worker(task: dict, library: Path, wait_ready: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(library))
    proc = subprocess.Popen([sys.executable, str(WORKER), json.dumps(task)], env=env, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    if wait_ready:
        line = proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            proc.kill()
            raise RuntimeError(f"worker {task['task']} did not start")
    return proc


def result_of(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"worker exited with {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def fill(stream, total: int, start: int = 0) -> None:
    done = start
    while done < total:
        k = min(10_000, total - done)
        stream.extend(make_items(k, 1, done))
        done += k


def database(base: str) -> str:
    return f"{base.rstrip('/')}/bench{uuid.uuid4().hex[:8]}"


def drop(url: str) -> None:
    import pymongo

    base, name = url.rsplit("/", 1)
    client = pymongo.MongoClient(base)
    client.drop_database(name)
    client.close()


# -- measurements -----------------------------------------------------------------------


def window_cost(base: str, sizes: list[int], windows: int, reps: int) -> list[dict]:
    """ms per window (CountWindow(100), claim + commit, read ahead amortised) and the first
    window's time, with ``size`` items already stored; a fresh group each repetition."""
    import streamlog

    url = database(base)
    stream = streamlog.stream("cost", url=url)
    rows, stored = [], 0
    try:
        for size in sizes:
            fill(stream, size, stored)
            stored = size
            runs = []
            for rep in range(reps):
                group = f"g{size}_{rep}"
                stream.group(group, start=size - windows * 100)
                runs.append(result_of(worker({"task": "consume", "url": url, "stream": "cost", "size": 100,
                                              "group": group}, ROOT)))
            rows.append({"stored": size, "window_ms": [r["after_first_ms"] for r in runs],
                         "first_ms": [r["first_ms"] for r in runs],
                         "commands_per_window": [r["commands_after_first"] / max(1, r["windows"] - 1) for r in runs],
                         "names": runs[-1]["names"]})
            log(f"  {size:,} stored: {median(rows[-1]['window_ms']):.2f} ms/window, "
                f"{median(rows[-1]['commands_per_window']):.2f} commands/window")
    finally:
        drop(url)
    return rows


def consume_rate(base: str, libraries: dict[str, Path], sizes: list[int], backlog: int, reps: int,
                 runs: dict[str, int] | None = None) -> dict:
    """items/s of a non-blocking consumer over a backlog, per window size and library,
    interleaved within each repetition (``runs``: a label's ``windows_per_claim``)."""
    import streamlog

    url = database(base)
    stream = streamlog.stream("drain", url=url)
    fill(stream, backlog)
    out: dict = {}
    try:
        for rep in range(reps):
            for size in sizes:
                for label, library in libraries.items():
                    group = f"{label}_{size}_{rep}"
                    stream.group(group, start="earliest")
                    r = result_of(worker({"task": "consume", "url": url, "stream": "drain", "size": size,
                                          "group": group, "runs": (runs or {}).get(label)}, library))
                    out.setdefault(f"{label} {size}", []).append(r["rate"])
                    out.setdefault(f"{label} {size} steady", []).append(size * 1000 / r["after_first_ms"])
                    out.setdefault(f"{label} {size} commands", []).append(r["commands"] / max(1, r["windows"]))
            log(f"  rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in out.items() if k.count(" ") == 1))
    finally:
        drop(url)
    return out


def latency(base: str, n: int, reps: int) -> dict:
    """append → function start of an idle blocking size=1 consumer; one item every 20–50 ms."""
    import random

    import streamlog

    rnd = random.Random(7)
    values: list[float] = []
    for _ in range(reps):
        url = database(base)
        stream = streamlog.stream("lat", url=url)
        stream.group("g", start="latest")
        proc = worker({"task": "follow", "url": url, "stream": "lat", "group": "g", "n": n}, ROOT, wait_ready=True)
        try:
            time.sleep(1.5)  # measured condition: the consumer idle past its first second
            for i in range(n):
                time.sleep(rnd.uniform(0.02, 0.05))
                stream.append({"i": i, "t": time.time()})
            values += result_of(proc, 120)["latencies"]
        finally:
            proc.kill()
            drop(url)
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "n": len(values)}


def idle_cpu(base: str, seconds: float, reps: int) -> list[float]:
    import psutil

    import streamlog

    out = []
    for _ in range(reps):
        url = database(base)
        streamlog.stream("idle", url=url).group("g", start="latest")
        proc = worker({"task": "idle", "url": url, "stream": "idle", "group": "g"}, ROOT, wait_ready=True)
        try:
            time.sleep(10.0)  # measured condition: past the back-off (3 ms doubling each idle second to 500 ms)
            p = psutil.Process(proc.pid)
            c0, w0 = p.cpu_times(), time.perf_counter()
            time.sleep(seconds)
            c1, w1 = p.cpu_times(), time.perf_counter()
            out.append((c1.user + c1.system - c0.user - c0.system) / (w1 - w0) * 100)
        finally:
            proc.kill()
            proc.wait()
            drop(url)
    return out


def extend_vs_insert_many(base: str, n: int, reps: int) -> dict:
    """``extend(n)`` vs pymongo's ``insert_many`` of the same documents (offset ``_id``,
    time, item, batch token), built before the clock starts; interleaved; items/s."""
    import random
    from datetime import datetime, timezone

    import pymongo

    import streamlog

    url = database(base)
    stream = streamlog.stream("ext", url=url)
    raw = pymongo.MongoClient(base)[url.rsplit("/", 1)[1]]["raw"]
    ours, theirs, next_id = [], [], 0
    try:
        stream.extend(make_items(10, 2))  # first contact, indexes
        raw.insert_one({"_id": -1})
        for rep in range(reps):
            items = make_items(n, 3, rep * n)
            t = time.perf_counter()
            stream.extend(items)
            ours.append(n / (time.perf_counter() - t))
            now = datetime.now(timezone.utc)
            token = random.getrandbits(62)  # streamlog's batch token: the very documents it stores
            docs = [{"_id": next_id + i, "t": now, "d": item, "b": token}
                    for i, item in enumerate(make_items(n, 3, rep * n))]
            next_id += n
            t = time.perf_counter()
            raw.insert_many(docs, ordered=True)
            theirs.append(n / (time.perf_counter() - t))
    finally:
        drop(url)
    return {"streamlog": ours, "insert_many": theirs, "ratio": [a / b for a, b in zip(ours, theirs, strict=True)]}


def before_checkout(ref: str) -> Path:
    path = ROOT / "bench-results" / f"before-{ref}"
    if not (path / "streamlog").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(path), ref],
                       check=True, capture_output=True)
    return path


def stats(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "?"
    fmt = (lambda v: f"{v:,.0f}") if max(values) >= 100 else (lambda v: f"{v:.2f}")
    return f"{fmt(min(values))} / **{fmt(median(values))}** / {fmt(max(values))}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--v2-url", default="mongodb://127.0.0.1:27400", help="FerretDB v2 + DocumentDB")
    ap.add_argument("--v1-url", help="a FerretDB v1 (default: start a private one)")
    ap.add_argument("--before", default="bee587a", help="git ref of the library measured as 'before'")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--delay-ms", type=float, default=1.0, help="added latency each way (the proxy)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: small sizes, one repetition")
    ap.add_argument("--runs", type=int, metavar="N",
                    help="only compare windows_per_claim=1 with N on FerretDB v2, direct and through the proxy")
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "bench_mongo.json"))
    args = ap.parse_args(argv)
    results: dict = {"machine": machine_info(), "args": vars(args)}
    if args.runs:
        return compare_runs(args, results)
    q = args.quick
    sizes = [1_000, 3_000, 5_000] if q else [1_000, 20_000, 100_000]
    if q:
        args.reps = 1
    ferret = None
    v1 = args.v1_url
    if not v1:
        ferret = FerretDB(find_ferretdb(None))
        v1 = ferret.url
    servers = {"FerretDB v2.7 + DocumentDB": args.v2_url, "FerretDB v1.24 (SQLite)": v1}
    try:
        for name, base in servers.items():
            log(f"{name}: {base}")
            r = results.setdefault(name, {})
            r["window_cost"] = window_cost(base, sizes, 10, 1 if q else 3)
            r["consume"] = consume_rate(base, {"after": ROOT}, [100], 2_000 if q else 10_000, args.reps)
            r["latency"] = latency(base, 20 if q else 100, 1 if q else 2)
            log(f"  latency p50 {r['latency']['p50']:.2f} ms, p99 {r['latency']['p99']:.2f} ms")
            r["idle"] = idle_cpu(base, 2.0 if q else 10.0, 1 if q else 2)
            log(f"  idle {stats(r['idle'])} % of a core")
            r["extend"] = extend_vs_insert_many(base, 1_000, max(15, 3 * args.reps))
            log(f"  extend(1,000) / insert_many: {stats(r['extend']['ratio'])}")
        log(f"network: {args.delay_ms:g} ms each way to FerretDB v2, before ({args.before}) vs after")
        host, port = args.v2_url.split("//", 1)[1].rstrip("/").split(":")
        proxy = DelayProxy((host, int(port)), args.delay_ms / 1000).start()
        try:
            libraries = {"before": before_checkout(args.before), "after": ROOT}
            results["network"] = consume_rate(f"mongodb://127.0.0.1:{proxy.port}", libraries, [10, 100],
                                              500 if q else 2_000, args.reps)
        finally:
            proxy.stop()
    finally:
        if ferret is not None:
            ferret.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    results["sizes"] = sizes
    print(render(results, servers))
    return 0


def compare_runs(args, results: dict) -> int:
    """``--runs N``: items/s over a backlog of 2,000 (windows of 10) and 10,000 (windows of
    100) with ``windows_per_claim`` 1 and N, interleaved, on FerretDB v2 directly and with
    ``--delay-ms`` added each way; commands per window by command monitoring."""
    labels = {"1": 1, str(args.runs): args.runs}
    libraries = {label: ROOT for label in labels}
    host, port = args.v2_url.split("//", 1)[1].rstrip("/").split(":")
    proxy = DelayProxy((host, int(port)), args.delay_ms / 1000).start()
    try:
        for where, base in (("direct", args.v2_url), ("proxy", f"mongodb://127.0.0.1:{proxy.port}")):
            for size, backlog in ((10, 2_000), (100, 10_000)):
                log(f"{where}, windows of {size}, backlog {backlog:,}")
                results[f"{where} {size}"] = consume_rate(base, libraries, [size], backlog, args.reps, labels)
    finally:
        proxy.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"| FerretDB v2 | window size | windows_per_claim | items/s, min / median / max of {args.reps} | "
          "commands per window (median) |")
    print("|---|---:|---:|---:|---:|")
    for key, out in results.items():
        if " " not in key or key.split()[0] not in ("direct", "proxy"):
            continue
        where, size = key.split()
        for label in labels:
            where_text = "direct" if where == "direct" else f"{args.delay_ms:g} ms each way"
            print(f"| {where_text} | {size} | {label} | {stats(out[f'{label} {size}'])} | "
                  f"{median(out[f'{label} {size} commands']):.2f} |")
    return 0


def render(results: dict, servers: dict) -> str:
    lines = ["| | " + " | ".join(servers) + " |", "|---|" + "---|" * len(servers)]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(results[s]) for s in servers) + " |")

    for i, stored in enumerate(results["sizes"]):
        row(f"ms per window, {stored:,} stored (min / median / max)",
            lambda r, i=i: stats(r["window_cost"][i]["window_ms"]))
    row(f"first window (setup + read), {results['sizes'][-1]:,} stored, ms",
        lambda r: stats(r["window_cost"][-1]["first_ms"]))
    row("round trips per window (steady state)", lambda r: stats(r["window_cost"][0]["commands_per_window"]))
    row("CountWindow(100) over a 10,000 backlog, items/s", lambda r: stats(r["consume"]["after 100"]))
    row("… the same after its first window (steady state), items/s", lambda r: stats(r["consume"]["after 100 steady"]))
    row("round trips per window, whole drain (setup and closes included)",
        lambda r: stats(r["consume"]["after 100 commands"]))
    row("append → function p50 / p99 ms (idle consumer)",
        lambda r: f"{r['latency']['p50']:.2f} / {r['latency']['p99']:.2f}")
    row("idle blocking consumer, % of a core", lambda r: stats(r["idle"]))
    row("extend(1,000) ÷ insert_many(1,000)", lambda r: stats(r["extend"]["ratio"]))
    net = results.get("network", {})
    lines += ["", "| items/s, 1 ms each way | before | after | round trips per window before → after |",
              "|---|---|---|---|"]
    for size in (10, 100):
        before, after = net.get(f"before {size}", []), net.get(f"after {size}", [])
        trips = [median(net.get(f"{label} {size} commands", [])) for label in ("before", "after")]
        lines.append(f"| windows of {size} | {stats(before)} | {stats(after)} | {trips[0]:.2f} → {trips[1]:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
