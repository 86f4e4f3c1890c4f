"""One measurement of scripts/bench_mongo.py, in a process of its own whose ``streamlog`` is
whichever checkout ``PYTHONPATH`` names (this one, or an older one for "before"), so it
uses only the public API. Reads a JSON task from argv[1], prints a JSON result line.

Tasks: ``consume`` (a non-blocking consumer drains a backlog: items/s, windows, and the
database commands it sent, by pymongo command monitoring), ``follow`` (a blocking
``size=1`` consumer reports append → function latencies of items stamped with
``time.time()``), ``idle`` (a blocking consumer waits; the parent measures its CPU).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from common import store_commands  # this folder: the script runs from it
from pymongo import monitoring


def consume(task: dict) -> dict:
    commands = store_commands()
    monitoring.register(commands)
    import streamlog

    fn = streamlog.streaming(task["stream"], size=task["size"], group=task["group"], url=task["url"],
                             blocking=False, **({"windows_per_claim": task["runs"]} if task.get("runs") else {}))
    first = {}

    def note(window):
        if not first:
            first["at"] = time.perf_counter()
            first["commands"] = len(commands.sent)

    started = time.perf_counter()
    windows = fn.apply(note)
    seconds = time.perf_counter() - started
    rest = time.perf_counter() - first.get("at", started)
    return {"windows": windows, "items": windows * task["size"], "seconds": seconds,
            "rate": windows * task["size"] / seconds if seconds else None,
            "after_first_ms": rest * 1000 / max(1, windows - 1),
            "first_ms": (first.get("at", started) - started) * 1000,
            "commands": len(commands.sent), "commands_after_first": len(commands.sent) - first.get("commands", 0),
            "names": dict(Counter(f"{name} {target.split('.')[0]}".strip() for name, target, _ in commands.sent))}


def follow(task: dict) -> dict:
    import streamlog

    latencies: list[float] = []
    fn = streamlog.streaming(task["stream"], size=1, group=task["group"], url=task["url"])

    def record(window):
        now = time.time()
        for item in window:
            latencies.append((now - item["t"]) * 1000)
        if len(latencies) >= task["n"]:
            fn.stop()

    print(json.dumps({"ready": True}), flush=True)
    fn.apply(record)
    return {"latencies": latencies}


def idle(task: dict) -> dict:
    import streamlog

    fn = streamlog.streaming(task["stream"], size=1, group=task["group"], url=task["url"])
    print(json.dumps({"ready": True}), flush=True)
    fn.apply(lambda window: None)
    return {}


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    result = {"consume": consume, "follow": follow, "idle": idle}[job["task"]](job)
    print(json.dumps(result), flush=True)
