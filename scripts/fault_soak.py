#!/usr/bin/env python
"""Fault-injection soak: the scenario of ``tests/test_faults.py`` with bigger numbers.

Producer and consumer processes run against one stream while the harness
(``tests/faultlib.py``) SIGKILLs consumers inside windows, SIGKILLs a producer
inside ``extend`` (embedded backend), and stops and restarts the MongoDB-wire
server (a FerretDB of its own, on a free port and a private state dir: it needs
``ferretdb`` on PATH or in ``$(go env GOPATH)/bin``, see
``scripts/install-ferretdb.sh``). Then it drains the consumers, stops them with
SIGTERM and prints the exact accounting: acknowledged, stored, delivered,
duplicated (and why), lost, producer retries, unacknowledged attempts that were
stored anyway, dead letters.

Usage::

    python scripts/fault_soak.py          # MongoDB (FerretDB): 2000 items, 3 outages, 3 consumer kills
    python scripts/fault_soak.py --items 5000 --outages 5 --kills 5
    python scripts/fault_soak.py --backend sqlite --items 20000 --kills 10 --producer-kills 5
    python scripts/fault_soak.py --backend both --items 3000 --seed 7 --keep

Options: ``--producers`` / ``--consumers`` (processes), ``--batch-max`` (items per
``extend``), ``--interval`` (mean seconds between a producer's calls; lower = faster),
``--size`` / ``--lease`` (consumer windows), ``--outage-min`` / ``--outage-max``
(seconds the server stays down), ``--signal KILL|TERM|alternate`` (how the server is
stopped), ``--retry-timeout`` (``STREAMLOG_RETRY_TIMEOUT`` for the workers),
``--late-kill`` (one more consumer SIGKILL at 98 % acknowledged: its window's lease
runs out after the last append, while the other consumers are idle), ``--budget``
(seconds for the whole run; default scales with ``--items``), ``--stall`` (seconds
without progress after which the drain fails, default 60), ``--keep`` (keep the work
directory with every worker's log), ``-v`` (print events as they happen).

To run the harness against another version of the library (say an exported older
commit), put it first on PYTHONPATH: the workers run whatever ``streamlog`` the
harness imported::

    git archive HEAD~3 streamlog | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python scripts/fault_soak.py --items 600

FerretDB (the MongoDB-wire test server) scans whole collections for most queries, so
consumers slow down as the stream and its claim history grow: on the MongoDB backend a
few thousand items take minutes (``--items 5000 --outages 5 --kills 5``: about 8 minutes,
most of it draining); the embedded backend runs 20,000 items in about a minute.

Exit status: 0 when every check held; 1 when anything was lost or any other
guarantee failed (the problems are listed under the table); 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from faultlib import Params, Scenario  # noqa: E402 - after the sys.path line that makes the checkout importable


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["mongo", "sqlite", "both"], default="mongo")
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--kills", type=int, default=3, help="consumer SIGKILLs")
    ap.add_argument("--late-kill", action="store_true",
                    help="one more consumer SIGKILL at 98%% acknowledged (its lease runs out after the last append)")
    ap.add_argument("--producer-kills", type=int, default=None,
                    help="producer SIGKILLs inside extend (default: 1 on sqlite, 0 on mongo)")
    ap.add_argument("--outages", type=int, default=3, help="server stops (mongo)")
    ap.add_argument("--outage-min", type=float, default=2.0)
    ap.add_argument("--outage-max", type=float, default=4.0)
    ap.add_argument("--signal", choices=["KILL", "TERM", "alternate"], default="alternate")
    ap.add_argument("--batch-max", type=int, default=8)
    ap.add_argument("--interval", type=float, default=None,
                    help="mean pause between a producer's calls (default: ~30 s of producing)")
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--lease", type=float, default=2.0)
    ap.add_argument("--work", type=float, default=0.01)
    ap.add_argument("--retry-timeout", type=float, default=30.0)
    ap.add_argument("--budget", type=float, default=None)
    ap.add_argument("--stall", type=float, default=60.0,
                    help="fail the drain after this many seconds without progress")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.items < args.producers or args.outage_min > args.outage_max:
        ap.error("need --items >= --producers and --outage-min <= --outage-max")

    backends = ["mongo", "sqlite"] if args.backend == "both" else [args.backend]
    ferretdb = None
    if "mongo" in backends:
        from conftest import _ferretdb_binary

        ferretdb = _ferretdb_binary()
        if ferretdb is None:
            print("ferretdb not found: run scripts/install-ferretdb.sh (or use --backend sqlite)", file=sys.stderr)
            return 2
    failed = False
    for backend in backends:
        calls = args.items / args.producers / ((1 + args.batch_max) / 2)
        interval = args.interval if args.interval is not None else max(0.005, 30.0 / max(1.0, calls))
        outages = args.outages if backend == "mongo" else 0
        producer_kills = args.producer_kills if args.producer_kills is not None else int(backend == "sqlite")
        # FerretDB scans whole collections for most queries, so a consumer's windows get
        # slower as the stream grows: give the MongoDB run much more time per item.
        per_item = 0.1 if backend == "mongo" else 0.02
        budget = args.budget or (120.0 + args.items * per_item + outages * (args.outage_max + 35)
                                 + args.kills * (args.lease + 5))
        params = Params(
            backend=backend, producers=args.producers, items=args.items, batch_max=args.batch_max,
            interval=interval, consumers=args.consumers, size=args.size, lease=args.lease, work=args.work,
            consumer_kills=args.kills, late_kill=args.late_kill, producer_kills=producer_kills, outages=outages,
            outage_seconds=(args.outage_min, args.outage_max), outage_signal=args.signal,
            retry_timeout=args.retry_timeout, drain_timeout=args.stall, budget=budget,
            seed=args.seed, verbose=args.verbose)
        workdir = Path(tempfile.mkdtemp(prefix=f"streamlog-soak-{backend}-"))
        print(f"== {backend}: {args.items} items, {args.producers} producers, {args.consumers} consumers, "
              f"{args.kills} consumer kills, {producer_kills} producer kills, {outages} outages "
              f"(workdir {workdir})", flush=True)
        report = Scenario(params, workdir=workdir, ferretdb=ferretdb).run()
        print(report.table(), flush=True)
        ok = not report.problems
        failed |= not ok
        print(f"== {backend}: {'OK' if ok else 'FAILED'}", flush=True)
        if args.keep or not ok:
            print(f"   logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
