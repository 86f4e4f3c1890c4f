#!/usr/bin/env python
"""streamlog benchmark suite: streamlog against the raw drivers and against minibatch,
and how its costs grow with the stream.

    python scripts/bench.py                 # everything, both backends (~5 min on 2 cores)
    python scripts/bench.py --quick         # smoke run (~1 min)
    python scripts/bench.py --backends sqlite --only append,growth
    python scripts/bench.py --mongo-url mongodb://127.0.0.1:27017   # an existing server
    python scripts/bench.py --backends sqlite --only writes --reps 7   # writes vs raw sqlite3
    python scripts/bench.py --backends sqlite --only redis --reps 7    # vs Redis Streams (redis-py + hiredis)

The MongoDB backend runs against --mongo-url, or else a private FerretDB that the script
starts on 127.0.0.1 (scripts/install-ferretdb.sh installs it). minibatch runs in its own
virtualenv (created with pip on first use, default bench-results/.venv-minibatch) against
the same server. Prints a table and writes bench-results/bench.json (+ bench.md, the
tables as Markdown). Numbers are medians of --reps runs; ratios are medians of per-run
ratios, with streamlog and the raw driver interleaved within each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import common  # noqa: E402 - after the sys.path line that makes the checkout importable
from benchlib.common import ROOT, FerretDB, find_ferretdb, machine_info  # noqa: E402 - after the sys.path line that makes the checkout importable
from benchlib.redis_streams import bench_redis  # noqa: E402 - after the sys.path line that makes the checkout importable

WORKLOADS = ("append", "writes", "consume", "redis", "latency", "idle", "growth", "roundtrips", "memory", "minibatch")
EXTRA_WORKLOADS = ("pollsweep",)  # not in the default run

TARGETS = {
    "append_ratio": 0.70,
    "writes_ratio": 0.90,  # the "writes" section: embedded append/extend vs raw sqlite3, median of ≥ 5 runs
    "extend_ratio": 0.70,
    "count100_embedded": 20_000,
    "count100_vs_minibatch": 10.0,
    "count100_vs_redis": 3.0,  # embedded CountWindow(100) consume ÷ Redis Streams XREADGROUP+XACK, median of ≥ 5
    "latency_p50_sqlite_ms": 10.0,
    "latency_p50_mongo_ms": 25.0,
    "idle_cpu_pct": 2.0,
    "growth_factor": 1.5,
    "memory_growth": 0.05,  # RSS after all items within 5 % of RSS after the first fifth
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,mongo", help="comma-separated: sqlite, mongo (default both)")
    ap.add_argument("--only", default=",".join(WORKLOADS),
                    help=f"workloads to run (default all of {','.join(WORKLOADS)}); also: {','.join(EXTRA_WORKLOADS)} "
                         "(idle CPU and latency for each --polls value)")
    ap.add_argument("--polls", default="sqlite=5,10,20;mongo=10,25,50",
                    help="pollsweep: idle back-off caps in ms per backend (streaming(poll=...))")
    ap.add_argument("--mongo-url", help="an existing MongoDB-wire server (no database; one is made per run)")
    ap.add_argument("--ferretdb", action="store_true",
                    help="start a private FerretDB on 127.0.0.1 (the default when --mongo-url is not given)")
    ap.add_argument("--ferretdb-bin", help="path of the ferretdb binary (default: PATH, then $(go env GOPATH)/bin)")
    ap.add_argument("--sqlite-dir", help="directory for the embedded databases (default: a temporary one, removed)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 3; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="a fast smoke run with small sizes")
    ap.add_argument("--growth-sizes", help="items already in the stream, embedded (default 10000,100000,1000000)")
    ap.add_argument("--mongo-sizes", help="items already in the stream for round trips (default 1000,10000)")
    ap.add_argument("--memory-items", type=int, help="items the memory consumer processes (default 1000000)")
    ap.add_argument("--consume-items", type=int, help="backlog for consume throughput, embedded (default 50000)")
    ap.add_argument("--redis-items", type=int,
                    help="items per repetition of the Redis comparison (default 100000: ten chunks of 10,000)")
    ap.add_argument("--mongo-consume-items", type=int, help="backlog for consume throughput, MongoDB (default 1000)")
    ap.add_argument("--latency-items", type=int, help="items per latency run (default 200)")
    ap.add_argument("--idle-seconds", type=float, help="idle CPU measurement window (default 5)")
    ap.add_argument("--minibatch-venv", default=str(ROOT / "bench-results" / ".venv-minibatch"))
    ap.add_argument("--minibatch-spec", default="minibatch", help="pip requirement for minibatch (default: latest)")
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "bench.json"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    for b in args.backends:
        if b not in ("sqlite", "mongo"):
            ap.error(f"unknown backend {b!r}")
    for w in args.only:
        if w not in WORKLOADS + EXTRA_WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    q = args.quick

    def ints(text, default):
        return [int(float(x)) for x in text.split(",")] if text else default

    args.reps = args.reps or (1 if q else 3)
    args.growth_sizes = ints(args.growth_sizes, [1_000, 10_000] if q else [10_000, 100_000, 1_000_000])
    args.mongo_sizes = ints(args.mongo_sizes, [100, 1_000] if q else [1_000, 10_000])
    args.memory_items = args.memory_items or (50_000 if q else 1_000_000)
    args.consume_items = args.consume_items or (5_000 if q else 50_000)
    args.mongo_consume_items = args.mongo_consume_items or (300 if q else 1_000)
    args.redis_items = args.redis_items or (5_000 if q else 100_000)
    args.latency_items = args.latency_items or (30 if q else 200)
    args.idle_seconds = args.idle_seconds or (2.0 if q else 5.0)
    args.append_sizes = {
        "sqlite": {"append": 600 if q else 3_000, "extend100": 2_000 if q else 30_000,
                   "extend10000": 20_000 if q else 60_000},
        "mongo": {"append": 120 if q else 600, "extend100": 1_000 if q else 6_000,
                  "extend10000": 20_000},
    }
    args.growth_batches = 10 if q else 30
    polls = {}
    for part in args.polls.split(";"):
        kind, _, values = part.partition("=")
        polls[kind.strip()] = [float(v) / 1000 for v in values.split(",") if v.strip()]
    args.polls = polls
    args.minibatch = {"append_n": 100 if q else 500, "count_n": args.mongo_consume_items,
                      "latency_n": args.latency_items, "idle": args.idle_seconds}
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# minibatch


def ensure_minibatch(venv: Path, spec: str) -> Path:
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import minibatch, mongoengine"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    log(f"creating the minibatch virtualenv at {venv} (pip install {spec}) …")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", spec], check=True, timeout=600)
    subprocess.run(check, check=True)
    return python


def run_minibatch(args, base_url: str) -> dict:
    python = ensure_minibatch(Path(args.minibatch_venv), args.minibatch_spec)
    out = Path(common.tempdir("streamlog-bench-mb-")) / "minibatch.json"
    mb = args.minibatch
    cmd = [str(python), str(ROOT / "scripts" / "bench_minibatch.py"), "--url", base_url, "--out", str(out),
           "--reps", str(args.reps), "--append-n", str(mb["append_n"]), "--count-n", str(mb["count_n"]),
           "--latency-n", str(mb["latency_n"]), "--idle", str(mb["idle"])]
    proc = common.register(subprocess.Popen(cmd))
    try:
        proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        log("  minibatch: timed out after 900 s")
    finally:
        common.stop_process(proc)
    result = json.loads(out.read_text()) if out.exists() else {"error": "no result file"}
    result["command"] = " ".join(cmd[1:])
    return result


# ---------------------------------------------------------------------------
# targets and the table


def _status(ok):
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def evaluate(results: dict) -> list[dict]:
    """Each target of the issue: value, threshold, met/missed."""
    out = []
    b = results.get("backends", {})
    for kind in ("sqlite", "mongo"):
        app = b.get(kind, {}).get("append")
        if app:
            for label, key in (("append", "append_ratio"), ("extend100", "extend_ratio"),
                               ("extend10000", "extend_ratio")):
                r = app[label]["ratio"]
                out.append({"target": f"{kind}: {label} ≥ {TARGETS[key]:.0%} of raw", "value": f"{r:.0%}",
                            "status": _status(r >= TARGETS[key])})
    cons = b.get("sqlite", {}).get("consume")
    if cons:
        r = cons["count100_x1"]["rate"]
        out.append({"target": f"sqlite: CountWindow(100) ≥ {TARGETS['count100_embedded']:,} items/s",
                    "value": f"{r:,.0f}/s" if r else "?", "status": _status(r and r >= TARGETS["count100_embedded"])})
    mcons, mb = b.get("mongo", {}).get("consume"), results.get("minibatch")
    if mcons and mb and mb.get("count100"):
        r, m = mcons["count100_x1"]["rate"], mb["count100"]["rate"]
        x = r / m if r and m else None
        out.append({"target": f"mongo: CountWindow(100) ≥ {TARGETS['count100_vs_minibatch']:.0f}× minibatch",
                    "value": f"{x:,.0f}× ({r:,.0f} vs {m:,.1f}/s)" if x else "?",
                    "status": _status(x and x >= TARGETS["count100_vs_minibatch"])})
    for kind, key in (("sqlite", "latency_p50_sqlite_ms"), ("mongo", "latency_p50_mongo_ms")):
        lat = b.get(kind, {}).get("latency")
        if lat and lat["p50"] is not None:
            out.append({"target": f"{kind}: latency p50 ≤ {TARGETS[key]:g} ms", "value": f"{lat['p50']:.1f} ms",
                        "status": _status(lat["p50"] <= TARGETS[key])})
    for kind in ("sqlite", "mongo"):
        idle = b.get(kind, {}).get("idle")
        if idle:
            out.append({"target": f"{kind}: idle consumer ≤ {TARGETS['idle_cpu_pct']:g} % of a core",
                        "value": f"{idle['cpu_pct']:.2f} %",
                        "status": _status(idle["cpu_pct"] <= TARGETS["idle_cpu_pct"])})
    growth = b.get("sqlite", {}).get("growth")
    if growth and len(growth["sizes"]) >= 2:
        lo, hi = growth["sizes"][0], growth["sizes"][-1]
        for key, label in (("window_ms", "claim+commit per window"), ("batch_ms", "extend per batch")):
            f = hi[key] / lo[key]
            out.append({"target": f"sqlite: {label} at {hi['size']:,} ≤ {TARGETS['growth_factor']}× at {lo['size']:,}",
                        "value": f"{f:.2f}× ({lo[key]:.3f} → {hi[key]:.3f} ms)",
                        "status": _status(f <= TARGETS["growth_factor"])})
    rt = b.get("mongo", {}).get("roundtrips")
    if rt:
        for key, label in (("per_extend_median", "extend"), ("per_window_median", "window")):
            values = [row[key] for row in rt["sizes"]]
            out.append({"target": f"mongo: round trips per {label} constant across sizes",
                        "value": " / ".join(f"{v:g}" for v in values) + " at " +
                                 " / ".join(f"{row['size']:,}" for row in rt["sizes"]),
                        "status": _status(len(set(values)) == 1)})
    mem = b.get("sqlite", {}).get("memory")
    if mem and len(mem["samples"]) >= 3:
        first, last = mem["samples"][1], mem["samples"][-1]
        g = last["rss"] / first["rss"] - 1
        out.append({"target": "sqlite: consumer RSS does not grow with items processed",
                    "value": f"{first['rss'] / 2**20:.1f} MiB at {first['items']:,} → {last['rss'] / 2**20:.1f} MiB "
                             f"at {last['items']:,} ({g:+.1%}); peak {mem['peak'] / 2**20:.1f} MiB",
                    "status": _status(g <= TARGETS["memory_growth"])})
    out += writes_targets(results) + redis_targets(results)
    return out


def _range(runs: list[dict] | None, key: str, fmt) -> str:
    """``min – max`` of ``key`` over a measurement's repetitions (how far a rerun may land)."""
    values = [r[key] for r in runs or [] if r.get(key) is not None]
    return f"{fmt(min(values))} – {fmt(max(values))}" if len(values) > 1 else ""


def tables(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table: medians of the repetitions, with their range."""
    out = []
    b = results.get("backends", {})
    rows = []
    for kind, r in b.items():
        for label in ("append", "extend100", "extend10000"):
            if "append" in r:
                a = r["append"][label]
                rows.append([kind, {"append": "append (1 item)", "extend100": "extend (100)",
                                    "extend10000": "extend (10,000)"}[label],
                             f"{a['streamlog']:,.0f}", f"{a['raw']:,.0f}", f"{a['ratio']:.0%}",
                             _range(a.get("runs"), "ratio", lambda x: f"{x:.0%}")])
    if rows:
        out.append(("Append: items/s, streamlog vs the raw driver (same run, interleaved); medians",
                    ["backend", "workload", "streamlog", "raw driver", "ratio", "ratio min – max"], rows))
    rows = []
    mb = results.get("minibatch") or {}
    for kind, r in b.items():
        if "consume" in r:
            for key, label in (("count100_x1", "CountWindow(100), 1 consumer"),
                               ("count100_x2", "CountWindow(100), 2 consumers"),
                               ("relaxed_x1", "RelaxedTimeWindow(0.5 s), 1 consumer"),
                               ("relaxed_x2", "RelaxedTimeWindow(0.5 s), 2 consumers")):
                c = r["consume"][key]
                other = ""
                if kind == "mongo" and key == "count100_x1" and mb.get("count100"):
                    other = f"{mb['count100']['rate']:,.1f}"
                rows.append([kind, label, f"{c['items']:,}", f"{c['rate']:,.0f}" if c["rate"] else "?",
                             _range(c.get("runs"), "rate", lambda x: f"{x:,.0f}"), other])
    if rows:
        out.append(("Consume: items/s over a backlog, no-op function; median of the repetitions",
                    ["backend", "emitter", "backlog", "streamlog", "min – max", "minibatch"], rows))
    rows = []
    for kind, r in b.items():
        lat, idle = r.get("latency"), r.get("idle")
        if lat or idle:
            rows.append([f"streamlog {kind}",
                         f"{lat['p50']:.1f}" if lat and lat["p50"] is not None else "",
                         f"{lat['p99']:.1f}" if lat and lat["p99"] is not None else "",
                         (f"{idle['cpu_pct']:.2f} ({_range(idle.get('runs'), 'cpu_pct', lambda x: f'{x:.2f}')})"
                          if idle else ""),
                         f"{idle['server_cpu_pct']:.2f}" if idle and idle.get("server_cpu_pct") is not None else ""])
    if mb.get("latency"):
        lat = mb["latency"]
        rows.append([f"minibatch {mb.get('versions', {}).get('minibatch', '?')} (mongo)",
                     f"{lat['p50']:.1f}" if lat["p50"] is not None else "?",
                     f"{lat['p99']:.1f}" if lat["p99"] is not None else "?",
                     f"{lat['idle_cpu_pct']:.2f}" if lat.get("idle_cpu_pct") is not None else "", ""])
    if rows:
        out.append(("Latency append → function start (size=1, idle consumer), and idle CPU",
                    ["", "p50 ms", "p99 ms", "idle CPU % (consumer)", "idle CPU % (server)"], rows))
    if mb.get("append"):
        rows = [["minibatch append (insert_one)", f"{mb['append']['rate']:,.0f}"],
                ["minibatch append, batchsize=100 (insert_many)", f"{mb['append_batch100']['rate']:,.0f}"]]
        m = b.get("mongo", {}).get("append")
        if m:
            rows += [["streamlog append (mongo)", f"{m['append']['streamlog']:,.0f}"],
                     ["streamlog extend(100) (mongo)", f"{m['extend100']['streamlog']:,.0f}"]]
        out.append(("Append on the same server: items/s", ["", "items/s"], rows))
    rows = []
    for kind, r in b.items():
        for row in (r.get("pollsweep") or {}).get("rows", []):
            rows.append([kind, f"{row['poll_ms']:g}", f"{row['p50']:.1f}" if row["p50"] is not None else "?",
                         f"{row['p99']:.1f}" if row["p99"] is not None else "?", f"{row['cpu_pct']:.2f}",
                         f"{row['server_cpu_pct']:.2f}" if row.get("server_cpu_pct") is not None else ""])
    if rows:
        out.append(("Idle back-off cap (streaming(poll=…)): latency vs idle CPU",
                    ["backend", "poll cap ms", "p50 ms", "p99 ms", "idle CPU %", "server CPU %"], rows))
    g = b.get("sqlite", {}).get("growth")
    if g:
        rows = [[f"{row['size']:,}", f"{row['batch_ms']:.3f}", f"{row['window_ms']:.3f}"] for row in g["sizes"]]
        out.append(("Growth (embedded): ms per extend(100) and per window (claim + commit), by items already stored",
                    ["items in stream", "extend(100) ms", "window ms"], rows))
    rt = b.get("mongo", {}).get("roundtrips")
    if rt:
        rows = [[f"{row['size']:,}", f"{row['per_extend_median']:g} (max {row['per_extend_max']})",
                 f"{row['per_window_median']:g} (max {row['per_window_max']})",
                 f"{row['reclaim_scans_per_s']:.2f}" if row.get("reclaim_scans_per_s") is not None else "",
                 "; ".join(row["window_commands"])] for row in rt["sizes"]]
        out.append(("Round trips (MongoDB backend, pymongo command monitoring); the reclaim scan for expired "
                    "leases runs at most once a second and is counted apart",
                    ["items in stream", "per extend(100)", "per window", "reclaim scans/s", "commands of a window"],
                    rows))
    mem = b.get("sqlite", {}).get("memory")
    if mem:
        rows = [[f"{s['items']:,}", f"{s['rss'] / 2**20:.1f}", f"{s['peak'] / 2**20:.1f}"] for s in mem["samples"]]
        out.append(("Memory: consumer process RSS while processing items (embedded, windows of 100)",
                    ["items processed", "RSS MiB", "peak RSS MiB"], rows))
    out += writes_tables(results) + redis_tables(results)
    targets = results.get("targets")
    if targets:
        out.append(("Targets", ["target", "value", "status"],
                    [[t["target"], t["value"], t["status"]] for t in targets]))
    return out


def render_text(tbls) -> str:
    lines = []
    for title, header, rows in tbls:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
        lines.append(f"\n{title}")
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        lines.append("  ".join("-" * w for w in widths))
        for row in rows:
            lines.append("  ".join(str(c).rjust(w) if i and c and c[0].isdigit() else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def render_markdown(tbls) -> str:
    parts = []
    for title, header, rows in tbls:
        parts.append(f"**{title}**\n")
        parts.append("| " + " | ".join(header) + " |")
        parts.append("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            parts.append("| " + " | ".join(str(c) for c in row) + " |")
        parts.append("")
    return "\n".join(parts)


# ---------------------------------------------------------------------------
# writes vs raw sqlite3 (embedded backend)

#: (label, items per call, items per repetition)
WRITES = (("append", 1, 5_000), ("extend100", 100, 50_000), ("extend10000", 10_000, 100_000))
WRITES_LABELS = {"append": "stream.append(item)", "extend100": "stream.extend(100 items)",
                 "extend10000": "stream.extend(10,000 items)"}


def bench_writes(backend, reps: int, quick: bool, seed: int, log) -> dict:
    """items/s of ``stream.append`` / ``extend(100)`` / ``extend(10,000)`` on the embedded
    backend against raw sqlite3 doing the same inserts (benchlib's ``RawSQLite``: the same
    table schema and pragmas — WAL, ``synchronous=NORMAL`` — in the same directory): the
    "append" workload's interleaved repetitions (``bench_append``: a fresh stream and table
    each, the same items for both sides, chunks alternating which goes first), without
    its time budget, reported as min / median / max over the repetitions of each side's
    rate and of the per-repetition ratio."""
    from benchlib import workloads

    sizes = {label: total // 5 if quick else total for label, _, total in WRITES}
    measured = workloads.bench_append(backend, reps, sizes, seed, float("inf"), log)
    return {label: {"batch": r["batch"], "items": sizes[label], "runs": r["runs"], **{
        key: {"min": min(run[key] for run in r["runs"]), "median": common.median([run[key] for run in r["runs"]]),
              "max": max(run[key] for run in r["runs"])} for key in ("streamlog", "raw", "ratio")}}
        for label, r in measured.items()}


def writes_tables(results: dict) -> list:
    w = results.get("backends", {}).get("sqlite", {}).get("writes")
    if not w:
        return []
    rows = []
    for label, r in w.items():
        rows.append([WRITES_LABELS[label], str(len(r["runs"])),
                     f"{r['streamlog']['median']:,.0f}", f"{r['raw']['median']:,.0f}",
                     f"{r['ratio']['min']:.0%} / {r['ratio']['median']:.0%} / {r['ratio']['max']:.0%}"])
    return [("Writes vs raw sqlite3 (embedded, same schema and pragmas, interleaved): items/s, median of the runs; "
             "ratio min / median / max", ["workload", "runs", "streamlog", "raw sqlite3", "ratio"], rows)]


def writes_targets(results: dict) -> list[dict]:
    w = results.get("backends", {}).get("sqlite", {}).get("writes") or {}
    return [{"target": f"sqlite: {WRITES_LABELS[label]} ≥ {TARGETS['writes_ratio']:.0%} of raw sqlite3 (median)",
             "value": f"{r['ratio']['median']:.0%}", "status": _status(r["ratio"]["median"] >= TARGETS["writes_ratio"])}
            for label, r in w.items()]


# ---------------------------------------------------------------------------
# against Redis Streams (embedded backend; benchlib/redis_streams.py)


def redis_tables(results: dict) -> list:
    r = results.get("backends", {}).get("sqlite", {}).get("redis")
    if not r or r.get("skipped"):
        return []
    rows = [[label, str(len(r["runs"])), f"{r[f'streamlog_{key}']['median']:,.0f}",
             f"{r[f'redis_{key}']['median']:,.0f}",
             " / ".join(f"{r[f'{key}_ratio'][m]:.2f}×" for m in ("min", "median", "max"))]
            for label, key in (("CountWindow(100) consume, no-op function", "consume"),
                               ("… batched: windows_per_claim=16 vs XREADGROUP COUNT 1600 + one XACK", "batched"),
                               ("extend(100) vs pipelined XADD × 100", "extend"))]
    return [(f"streamlog (embedded) vs Redis {r['redis_version']} Streams through redis-py {r['redis_py']} + hiredis: "
             "items/s, median of the runs; ratio min / median / max", ["workload", "runs", "streamlog", "Redis",
                                                                     "ratio"], rows)]


def redis_targets(results: dict) -> list[dict]:
    r = results.get("backends", {}).get("sqlite", {}).get("redis")
    if not r or r.get("skipped"):
        return []
    x = r["consume_ratio"]["median"]
    return [{"target": f"sqlite: CountWindow(100) consume ≥ {TARGETS['count100_vs_redis']:g}× Redis Streams (median)",
             "value": f"{x:.2f}×", "status": _status(x >= TARGETS["count100_vs_redis"])}]


# ---------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    common.install_signal_handlers()
    results: dict = {"machine": machine_info(), "args": {k: v for k, v in vars(args).items()},
                     "targets_defined": TARGETS, "backends": {}, "errors": []}
    run_id = uuid.uuid4().hex[:8]
    started = time.monotonic()
    ferret = None
    backends = []
    try:
        from benchlib import workloads as W

        if "sqlite" in args.backends:
            directory = args.sqlite_dir or common.tempdir("streamlog-bench-sqlite-")
            os.makedirs(directory, exist_ok=True)
            backends.append(W.SQLiteBackend(os.path.abspath(directory)))
        mongo_base = None
        if "mongo" in args.backends or "minibatch" in args.only:
            if args.mongo_url and not args.ferretdb:
                mongo_base = args.mongo_url
                results["server"] = {"kind": "given", "url": mongo_base}
            else:
                binary = find_ferretdb(args.ferretdb_bin)
                if binary is None:
                    log("FerretDB not found (scripts/install-ferretdb.sh, or --mongo-url): skipping MongoDB workloads")
                    results["errors"].append("ferretdb not found")
                else:
                    ferret = FerretDB(binary)
                    mongo_base = ferret.url
                    results["server"] = {"kind": "ferretdb", "version": ferret.version(), "url": ferret.url,
                                         "handler": "sqlite"}
                    log(f"FerretDB {results['server']['version']} at {ferret.url}")
            if mongo_base and "mongo" in args.backends:
                backends.append(W.MongoBackend(mongo_base, run_id, ferret.pid if ferret else None))

        def step(kind, name, fn):
            if name not in args.only:
                return
            t0 = time.monotonic()
            log(f"[{kind}] {name} …")
            try:
                results["backends"].setdefault(kind, {})[name] = fn()
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - keep going, report it
                results["errors"].append(f"{kind} {name}: {type(exc).__name__}: {exc}")
                log(f"  FAILED: {traceback.format_exc()}")
            log(f"  ({time.monotonic() - t0:.0f} s)")

        for be in backends:
            k = be.kind
            sizes = args.append_sizes[k]
            budget = 60.0
            step(k, "append", lambda be=be, sizes=sizes, budget=budget:
                 W.bench_append(be, args.reps, sizes, args.seed, budget, log))
            n = args.consume_items if k == "sqlite" else args.mongo_consume_items
            step(k, "consume", lambda be=be, n=n: W.bench_consume(be, args.reps, n, args.seed, 300.0, log))
            step(k, "latency", lambda be=be: W.bench_latency(be, args.reps, args.latency_items, log))
            step(k, "idle", lambda be=be: W.bench_idle(be, args.reps, args.idle_seconds, log))
            step(k, "pollsweep", lambda be=be, k=k: W.bench_pollsweep(be, args.reps, args.latency_items,
                                                                      args.idle_seconds, args.polls.get(k, []), log))
            if k == "sqlite":
                step(k, "writes", lambda be=be: bench_writes(be, max(5, args.reps), args.quick, args.seed, log))
                step(k, "redis", lambda be=be: bench_redis(be.dir, max(5, args.reps), args.redis_items, args.seed, log))
                step(k, "growth", lambda be=be: W.bench_growth(be, args.reps, args.growth_sizes, args.growth_batches,
                                                               args.seed, log))
                growth_url = results["backends"].get("sqlite", {}).get("growth", {}).get("url")
                step(k, "memory", lambda be=be, growth_url=growth_url:
                     W.bench_memory(be, args.memory_items, args.seed, 900.0, log, growth_url))
            else:
                step(k, "roundtrips", lambda be=be: W.bench_roundtrips(be, args.mongo_sizes, 10, args.seed, 600.0, log))
        if "minibatch" in args.only and mongo_base:
            log("[minibatch] …")
            t0 = time.monotonic()
            try:
                results["minibatch"] = run_minibatch(args, mongo_base)
                if results["minibatch"].get("error"):
                    results["errors"].append(f"minibatch: {results['minibatch']['error']}")
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure is reported and the run goes on
                results["errors"].append(f"minibatch: {type(exc).__name__}: {exc}")
                log(f"  FAILED: {traceback.format_exc()}")
            log(f"  ({time.monotonic() - t0:.0f} s)")
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        results["errors"].append("interrupted")
    finally:
        for be in backends:
            be.close()
        common.cleanup()
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = time.monotonic() - started
    results["targets"] = evaluate(results)
    tbls = tables(results)
    log(render_text(tbls))
    if results["errors"]:
        log("\nerrors: " + "; ".join(results["errors"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    out.with_suffix(".md").write_text(render_markdown(tbls))
    log(f"\nwrote {out} and {out.with_suffix('.md')} ({results['seconds']:.0f} s)")
    return 1 if "interrupted" in results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
