#!/usr/bin/env python
"""Items/s of a 3-stage pipeline run by ``streamlog up`` on the embedded backend, end to end.

    python scripts/bench_pipeline.py                       # 100,000 items, windows of 100 and 1000
    python scripts/bench_pipeline.py --items 20000 --size 500 --reps 1
    python scripts/bench_pipeline.py --size 10 --windows-per-claim 1 --windows-per-claim 16

The pipeline (in a temporary directory, its own SQLite file)::

    numbers ──stage1 (pass-through)──▶ s2 ──stage2 (pass-through)──▶ s3 ──stage3 (sum)

Each measurement starts ``streamlog up`` (the real CLI, one process per stage), waits
until every stage is consuming, then appends N items in batches of 1000 from this process
and times until stage 3 has committed its window holding item N-1 (its group's next
offset is N). Items/s = N / that time: every item is read, windowed, passed to a Python
function, appended to the next stream (stages 1 and 2) and committed three times. The
runner is then stopped with SIGTERM. Prints a Markdown table (median of ``--reps`` runs).
``--windows-per-claim N`` (repeatable) gives every stage ``windows_per_claim = N``; the
settings alternate within each repetition.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import streamlog  # noqa: E402 - after the sys.path line that makes the checkout importable
from streamlog.delivery.groups import find_group, group_state  # noqa: E402 - after the sys.path line that makes the checkout importable

STAGES = '''\
def forward(window):
    return window.data


def total(window):
    sum(d["x"] for d in window.data)
'''


def app(directory: Path, size: int, per_claim: int) -> Path:
    (directory / "pipe.py").write_text(STAGES)
    path = directory / "app.toml"
    path.write_text(textwrap.dedent(f"""\
        [stages.stage1]
        stream = "numbers"
        function = "pipe:forward"
        size = {size}
        windows_per_claim = {per_claim}
        sink = "s2"

        [stages.stage2]
        stream = "s2"
        function = "pipe:forward"
        size = {size}
        windows_per_claim = {per_claim}
        sink = "s3"

        [stages.stage3]
        stream = "s3"
        function = "pipe:total"
        size = {size}
        windows_per_claim = {per_claim}
        """))
    return path


def next_offset(stream_name: str, group: str, url: str) -> int:
    client = streamlog.connect(url)
    if stream_name not in client.streams():
        return -1
    stream = client.get(stream_name)
    found = find_group(stream, group)
    return -1 if found is None else group_state(stream, found)["next_offset"]


def one_run(n: int, size: int, per_claim: int = 1) -> float:
    with tempfile.TemporaryDirectory(prefix="streamlog-bench-pipeline-") as tmp:
        directory = Path(tmp)
        url = f"sqlite:///{directory}/bench.db"
        path = app(directory, size, per_claim)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        runner = subprocess.Popen([sys.executable, "-m", "streamlog.cli", "up", str(path), "--url", url,
                                   "--status-every", "0"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while min(next_offset(s, g, url) for s, g in (("numbers", "stage1"), ("s2", "stage2"),
                                                          ("s3", "stage3"))) < 0:
                if time.monotonic() > deadline or runner.poll() is not None:
                    raise SystemExit(f"the pipeline did not start: {runner.stderr.read() if runner.stderr else ''}")
                time.sleep(0.05)
            numbers = streamlog.connect(url).stream("numbers")
            items = [{"x": i, "sensor": f"s-{i % 16:02d}", "value": i * 0.5} for i in range(n)]
            started = time.perf_counter()
            for i in range(0, n, 1000):
                numbers.extend(items[i:i + 1000])
            appended = time.perf_counter()
            while next_offset("s3", "stage3", url) < n:
                if runner.poll() is not None:
                    raise SystemExit(f"the runner stopped: {runner.stderr.read()}")
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
            print(f"  size {size}, windows_per_claim {per_claim}: {n:,} items through 3 stages in {elapsed:.2f} s "
                  f"(append alone {appended - started:.2f} s) = {n / elapsed:,.0f} items/s", flush=True)
            return n / elapsed
        finally:
            runner.send_signal(signal.SIGTERM)
            try:
                runner.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.communicate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--size", type=int, action="append", help="window size (repeatable; default 100 and 1000)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--windows-per-claim", type=int, action="append",
                        help="every stage's windows_per_claim (repeatable; default 1)")
    args = parser.parse_args()
    sizes = args.size or [100, 1000]
    settings = [(size, k) for size in sizes for k in (args.windows_per_claim or [1])]
    runs: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
    for _ in range(args.reps):
        for size, k in settings:  # alternating: the machine's drift touches every setting alike
            runs[(size, k)].append(one_run(args.items, size, k))
    print(f"\n| window size | windows_per_claim | items/s through 3 stages ({args.items:,} items), "
          f"min / median / max of {args.reps} |")
    print("|---:|---:|---:|")
    for (size, k), rates in runs.items():
        print(f"| {size} | {k} | {min(rates):,.0f} / **{statistics.median(rates):,.0f}** / {max(rates):,.0f} |")


if __name__ == "__main__":
    main()
