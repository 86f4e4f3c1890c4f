"""Exactly-once stream sinks and once-per-window dead letters (issue 20), on both backends.

A consumer process SIGKILLs itself at every point between its function's return and the
window's commit (``tests/exactly_once_child.py``: after the sink's items are inserted in the
still-open SQLite transaction; on MongoDB after the key's attempt is inserted, after the
items are stored — the key's last write; on both before the seal), then a consumer of
this process drains the group. Exact accounting: every source item's record is in the sink
exactly once, the killed window's records are its first *completed* append's (the killed
attempt's when the append was durable, else the retry's), nothing is pending or open, and
the dead-letter stream holds the failed window's items exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from exactly_once_child import KILLED_SEQ, POINTS, SIZE, consume, records
from helpers import ROOT, reaped

import streamlog
from streamlog.delivery.chain import takeover
from streamlog.delivery.once import dead_letter_key, window_key
from streamlog.store.base import COMMITTED, Claim, Store

pytestmark = pytest.mark.timeout(120)

N = 4 * SIZE  # four windows; the second is the one killed
KILLED = set(range((KILLED_SEQ - 1) * SIZE, KILLED_SEQ * SIZE))
#: whether the killed attempt's sink append was durable at the point (its records stand)
DURABLE = {"sqlite-in-transaction": False, "mongo-key-reserved": False, "mongo-items-appended": True,
           "before-commit": True}


def _run_child(url: str, point: str, mode: str, out: Path) -> dict:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "exactly_once_child.py"), url, point, mode,
                             str(out)], stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    with reaped(proc):
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, f"the consumer was not killed at {point} (exit {proc.returncode}):\n{err}"
    (killed,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert killed["killed"] == point and killed["seq"] == KILLED_SEQ, killed
    return killed


def _drain(url: str, mode: str, timeout: float = 30.0) -> None:
    """Run non-blocking consumers until the group has nothing pending and nothing open
    (the killed window is taken over once its 1 s lease ran out)."""
    src = streamlog.connect(url).get("src")
    deadline = time.monotonic() + timeout
    while src.info()["pending"]["g"] or src.store.open_claims("src", "g"):
        assert time.monotonic() < deadline, f"not drained: {src.info()['groups']['g']}"
        consume(url, mode)
        time.sleep(0.05)  # poll: the lease of the killed window runs out on its own


def _sink(url: str, name: str = "out") -> list[dict]:
    client = streamlog.connect(url)
    return [r["data"] for r in client.get(name).read(0, None)] if name in client.streams() else []


def _points(backend: str) -> list[str]:
    return [p for p in POINTS if p.startswith(f"{backend}-") or not p.startswith(("sqlite-", "mongo-"))]


def _sink_scenario(url: str, point: str, tmp_path: Path) -> None:
    streamlog.connect(url).stream("src").extend([{"x": i} for i in range(N)])
    streamlog.connect(url).stream("src").group("g")
    killed = _run_child(url, point, "dead" if point == "dead-before-seal" else "sink", tmp_path / "child.jsonl")
    if point == "dead-before-seal":
        return _dead_accounting(url, killed)
    _drain(url, "sink")
    out = _sink(url)
    counts = Counter(r["o"] for r in out)
    assert set(counts) == set(range(N)) and set(counts.values()) == {1}, f"{point}: {sorted(counts.items())}"
    window = [r for r in out if r["o"] in KILLED]
    if DURABLE[point]:  # the killed attempt's append completed: its records stand, the retry added none
        assert {(r["pid"], r["attempt"]) for r in window} == {(killed["pid"], 1)}, window
    else:  # nothing of it stayed: the retry's records
        assert {r["attempt"] for r in window} == {2} and killed["pid"] not in {r["pid"] for r in window}
    assert _sink(url, "src.dead") == []


def _dead_accounting(url: str, killed: dict) -> None:
    _drain(url, "dead")
    dead = _sink(url, "src.dead")
    assert Counter(d["offset"] for d in dead) == Counter(KILLED), dead  # once per window
    # the killed attempt's dead letters stand (the retry's would say the lease expired)
    assert {(d["attempts"], d["error"]) for d in dead} == {(1, "ValueError: window 2 is bad")}
    out = Counter(r["o"] for r in _sink(url))
    assert set(out) == set(range(N)) - KILLED and set(out.values()) == {1}


@pytest.mark.parametrize("point", _points("sqlite"))
def test_sqlite_sigkill_between_return_and_commit_keeps_sink_records_exactly_once(sqlite_url, point, tmp_path):
    _sink_scenario(sqlite_url, point, tmp_path)


@pytest.mark.mongo
@pytest.mark.parametrize("point", _points("mongo"))
def test_mongo_sigkill_between_return_and_commit_keeps_sink_records_exactly_once(mongo_url, point, tmp_path):
    _sink_scenario(mongo_url, point, tmp_path)


# -- the key of a window ---------------------------------------------------------------------

def test_a_window_key_is_the_same_for_every_attempt_and_differs_between_windows(sqlite_url):
    src = streamlog.connect(sqlite_url).stream("src")
    first = Claim(stream="src", group="g", seq=7, attempt=1, lo=10, hi=14, count=5, owner="a", lease=1)
    again = takeover(first, "b", 99, 50)
    assert again.attempt == 2 and window_key(src, again) == window_key(src, first)
    others = [Claim(stream="src", group="g", seq=8, attempt=1, lo=15, hi=19, count=5),
              Claim(stream="src", group="h", seq=7, attempt=1, lo=10, hi=14, count=5)]
    assert len({window_key(src, c) for c in [first, *others]}) == 3
    src.drop()  # the same name again is another stream: its windows have other keys
    assert window_key(streamlog.connect(sqlite_url).stream("src"), first) != window_key(src, first)


def test_a_dead_letter_key_ignores_the_error_and_the_attempt_count():
    letters = [{"offset": o, "data": {"x": o}, "group": "g", "error": "E1", "attempts": 1} for o in (3, 4)]
    retried = [{**d, "error": "lease expired", "attempts": 2} for d in letters]
    assert dead_letter_key(letters) == dead_letter_key(retried)
    assert dead_letter_key(letters) != dead_letter_key([{**d, "group": "h"} for d in letters])


# -- crashes of keyed, sliding, multi-worker and run-claiming consumers (in process) ----------------------

class Crash(BaseException):
    """Stands for a SIGKILL right before a window's seal (the lease then runs out)."""


def _crash_before_commit(store, nth: int) -> dict:
    """Raise :class:`Crash` instead of the ``nth`` committing seal of this store, once."""
    original = store.commit
    state = {"calls": 0, "seq": None}
    lock = threading.Lock()

    folded = store.commit_and_claim

    def crash_here(claim, st) -> None:
        with lock:
            if st == COMMITTED and state["seq"] is None:
                state["calls"] += 1
                if state["calls"] == nth:
                    state["seq"] = (claim.group, claim.seq)
                    raise Crash(claim.seq)

    def commit(claim, st=COMMITTED, error=None):
        crash_here(claim, st)
        return original(claim, st, error)

    def commit_and_claim(claim, next_claim):  # a backlog's commit that also claims the next window
        crash_here(claim, COMMITTED)
        return folded(claim, next_claim)

    store.commit = commit
    if type(store).commit_and_claim is not Store.commit_and_claim:  # the base one calls commit
        store.commit_and_claim = commit_and_claim
    return state


def _crash_then_drain(url: str, options: dict, fn, nth: int = 2) -> dict:
    client = streamlog.connect(url)
    crash = _crash_before_commit(client.store, nth)
    try:
        with pytest.raises(Crash):
            streamlog.streaming("src", group="g", lease=0.5, blocking=False, sink="out", url=url, **options).apply(fn)
    finally:
        vars(client.store).pop("commit")  # the store's own methods again
        vars(client.store).pop("commit_and_claim", None)
    assert crash["seq"] is not None
    src = client.get("src")
    deadline = time.monotonic() + 20
    while src.info()["pending"]["g"] or client.store.open_claims("src"):
        assert time.monotonic() < deadline, src.info()["groups"]
        streamlog.streaming("src", group="g", lease=0.5, blocking=False, sink="out", url=url, **options).apply(fn)
        time.sleep(0.05)
    return crash


def _per_item(window) -> list[dict]:
    return [{"o": o, "attempt": window.attempt, "key": window.key} for o in window.offsets]


@pytest.mark.parametrize("options", [{"size": 2, "key": "k"}, {"size": 2, "workers": 3},
                                     {"size": 2, "windows_per_claim": 3}],
                         ids=["keyed", "workers", "runs"])
def test_a_crash_before_the_commit_adds_nothing_to_the_sink_keyed_and_multi_worker(sqlite_url, options):
    src = streamlog.connect(sqlite_url).stream("src")
    src.extend([{"k": "ab"[i % 2], "x": i} for i in range(24)])
    src.group("g")
    fn = _per_item
    if "workers" in options:
        def fn(window):
            time.sleep(0.01)  # windows overlap on the threads
            return _per_item(window)
    _crash_then_drain(sqlite_url, options, fn, nth=3)
    counts = Counter(r["o"] for r in _sink(sqlite_url))
    assert set(counts) == set(range(24)) and set(counts.values()) == {1}, sorted(counts.items())
    assert {r["attempt"] for r in _sink(sqlite_url)} == {1}  # the crashed attempt's records stand


def test_a_crash_before_the_commit_of_a_sliding_window_adds_nothing_to_the_sink(sqlite_url):
    src = streamlog.connect(sqlite_url).stream("src")
    src.extend([{"x": i} for i in range(20)])
    src.group("g")

    def summary(window):
        return {"seq": window.seq, "offsets": window.offsets, "attempt": window.attempt}

    _crash_then_drain(sqlite_url, {"size": 6, "step": 2}, summary, nth=2)
    out = _sink(sqlite_url)
    assert sorted(r["seq"] for r in out) == list(range(1, 11))  # every window's summary once
    assert all(r["attempt"] == 1 for r in out)
    assert [r["offsets"][-1] for r in sorted(out, key=lambda r: r["seq"])] == list(range(1, 20, 2))


def test_a_url_sink_is_not_deduplicated_but_a_stream_sink_is(sqlite_url):
    from streamlog.hooks import ConnectedSink, OnceSink

    stream = streamlog.connect(sqlite_url).stream("out")
    assert isinstance(stream, OnceSink) and not isinstance(stream, ConnectedSink)
    first = stream.extend_once("w1", [{"a": 1}], check_items=False)
    again = stream.extend_once("w1", [{"a": 2}, {"a": 3}], check_items=False)  # a retry computing other records
    assert again.replayed and again.offsets == first.offsets and [r["data"] for r in stream.read()] == [{"a": 1}]
    assert records  # (the child's function, imported for the scenarios above)
