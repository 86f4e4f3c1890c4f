"""Parallel workers (``workers=N``): several windows of one group in flight in one process,
each with its own claim and lease, committed in any order, on both backends."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import wait_until
from typer.testing import CliRunner

import streamlog
from streamlog.cli import app
from streamlog.consumers import Consumer, OnlineLinearRegression
from streamlog.emitters import CountWindow


class Recorder:
    """A consumer function that records which windows ran, how many ran at once, and in
    which order they finished; ``gate(window)`` may hold a window back."""

    def __init__(self, work: float = 0.0, gate=None, fail=None):
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.runs: list[tuple[int, int, list[int]]] = []  # (seq, attempt, offsets) as they finished
        self.work = work
        self.gate = gate
        self.fail = fail

    def __call__(self, window):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if self.work:
                time.sleep(self.work)  # the slow function itself, not a synchronisation
            if self.gate is not None:
                self.gate(window)
            if self.fail is not None and self.fail(window):
                raise RuntimeError(f"window {window.seq} fails on attempt {window.attempt}")
            return [{"offset": o} for o in window.offsets]
        finally:
            with self.lock:
                self.running -= 1
                self.runs.append((window.seq, window.attempt, list(window.offsets)))


def delivered(url: str, sink: str) -> list[int]:
    return [r["data"]["offset"] for r in streamlog.connect(url).stream(sink).read(limit=None)]


def group_state(url: str, stream: str, group: str) -> dict:
    return streamlog.connect(url).stream(stream).info()["groups"][group]


def test_four_workers_run_four_windows_at_once_and_deliver_every_item_exactly_once(url):
    streamlog.stream("w", url=url).extend([{"i": i} for i in range(80)])
    # A barrier of four: each round of windows can only pass if four of them run at the same time.
    barrier = threading.Barrier(4, timeout=20)
    fn = Recorder(gate=lambda window: barrier.wait())
    n = streamlog.streaming("w", size=5, workers=4, sink="out", blocking=False, url=url).apply(fn)
    assert n == 16
    assert fn.most == 4
    assert sorted(seq for seq, _, _ in fn.runs) == list(range(1, 17))
    assert sorted(delivered(url, "out")) == list(range(80))  # every item once, none doubled
    state = group_state(url, "w", "default")
    assert (state["pending"], state["claimed"], state["failed"], state["windows"]) == (0, 0, 0, 16)


def test_a_slow_function_overlaps_with_four_workers_and_not_with_one(url):
    streamlog.stream("slow", url=url).extend([{"i": i} for i in range(40)])
    one, four = Recorder(work=0.03), Recorder(work=0.03)
    assert streamlog.streaming("slow", size=4, group="one", blocking=False, url=url).apply(one) == 10
    assert streamlog.streaming("slow", size=4, group="four", workers=4, blocking=False, url=url).apply(four) == 10
    assert one.most == 1 and [seq for seq, _, _ in one.runs] == list(range(1, 11))
    assert four.most > 1  # the runs overlapped: a slow function no longer serialises the stream
    assert sorted(o for _, _, offsets in four.runs for o in offsets) == list(range(40))


def test_windows_commit_out_of_order_and_leave_nothing_pending(url):
    stream = streamlog.stream("ooo", url=url)
    stream.extend([{"i": i} for i in range(30)])

    def hold_the_first(window):
        if window.seq == 1:  # the oldest window finishes last: wait until the others committed
            wait_until(lambda: group_state(url, "ooo", "default")["pending"] == 5, timeout=20,
                       message="windows 2..6 to commit before window 1")

    fn = Recorder(gate=hold_the_first)
    n = streamlog.streaming("ooo", size=5, workers=3, sink="out", blocking=False, url=url).apply(fn)
    assert n == 6
    assert fn.runs[-1][0] == 1  # committed last
    assert sorted(delivered(url, "out")) == list(range(30))
    state = group_state(url, "ooo", "default")
    assert (state["pending"], state["claimed"], state["windows"], state["next_offset"]) == (0, 0, 6, 30)
    assert stream.buffer() == []


def test_a_failing_window_is_retried_after_its_backoff_while_the_others_go_on(url):
    streamlog.stream("retry", url=url).extend([{"i": i} for i in range(40)])
    failed = threading.Event()

    def fail(window):
        if window.seq == 2 and window.attempt == 1:
            failed.set()
            return True
        return False

    # window 3 finishes only after window 2 failed; the retry waits out a backoff of 0.5-1 s
    fn = Recorder(fail=fail, gate=lambda window: window.seq != 3 or failed.wait(20))
    sf = streamlog.streaming("retry", size=5, workers=2, sink="out", blocking=False, retry_delay=1.0,
                             url=url)
    assert sf.apply(fn) == 8
    consumer = sf.consumer
    assert (consumer.processed, consumer.failed, consumer.dead_lettered, consumer.fenced) == (8, 1, 0, 0)
    order = [(seq, attempt) for seq, attempt, _ in fn.runs]
    assert order.count((2, 1)) == 1 and order.count((2, 2)) == 1
    # later windows finished between the failure and the retry: window 2 did not block them
    between = order[order.index((2, 1)) + 1:order.index((2, 2))]
    assert any(seq > 2 for seq, _ in between)
    assert sorted(delivered(url, "out")) == list(range(40))  # the failed attempt sank nothing
    state = group_state(url, "retry", "default")
    assert (state["pending"], state["failed"], state["dead"]) == (0, 0, 0)


def test_an_idle_blocking_claimer_retries_a_released_window_when_its_backoff_ends(sqlite_url):
    """A worker releases a window while the claiming thread sleeps in its idle wait (the
    embedded backend's sleeps last until the next periodic look, ~1 s): the release wakes
    it, so the retry comes after the backoff (≤ 0.1 s here), not after that look."""
    stream = streamlog.stream("idle-retry", url=sqlite_url)
    runs: list[tuple[int, float]] = []

    def fn(window):
        if window.attempt == 1:
            time.sleep(0.15)  # measured interval: fail once the claimer has gone back to sleep
            runs.append((window.attempt, time.monotonic()))
            raise ValueError("first attempt fails")
        runs.append((window.attempt, time.monotonic()))

    sf = streamlog.streaming("idle-retry", size=1, workers=2, retry_delay=0.1, url=sqlite_url)
    thread = threading.Thread(target=sf.apply, args=(fn,), daemon=True)
    thread.start()
    time.sleep(1.5)  # measured interval: the claimer is in its long idle wait
    stream.append({"i": 1})
    wait_until(lambda: len(runs) == 2, timeout=10, message="the retry")
    sf.stop()
    thread.join(10)
    assert not thread.is_alive()
    (first, failed_at), (second, retried_at) = runs
    assert (first, second) == (1, 2)
    assert retried_at - failed_at < 0.6, f"retried {retried_at - failed_at:.2f} s after failing: not woken"


def test_a_window_failing_every_attempt_is_dead_lettered_and_the_rest_committed(url):
    streamlog.stream("dead", url=url).extend([{"i": i} for i in range(20)])
    fn = Recorder(fail=lambda window: window.seq == 3)
    sf = streamlog.streaming("dead", size=4, workers=3, sink="out", blocking=False, max_retries=1,
                             retry_delay=0, url=url)
    assert sf.apply(fn) == 4
    assert (sf.consumer.failed, sf.consumer.dead_lettered, sf.consumer.dead_windows) == (2, 4, 1)
    assert sorted(delivered(url, "out")) == [o for o in range(20) if o not in range(8, 12)]
    dead = streamlog.connect(url).stream("dead.dead").read(limit=None)
    assert [d["data"]["offset"] for d in dead] == [8, 9, 10, 11]
    assert group_state(url, "dead", "default")["pending"] == 0


def test_stop_with_windows_in_flight_commits_them_and_claims_no_more(url):
    streamlog.stream("stop", url=url).extend([{"i": i} for i in range(50)])
    go = threading.Event()
    fn = Recorder(gate=lambda window: go.wait(20))
    sf = streamlog.streaming("stop", size=5, workers=4, sink="out", url=url)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("n", sf.apply(fn)), daemon=True)
    thread.start()
    wait_until(lambda: fn.running == 4, message="four windows in flight")
    assert group_state(url, "stop", "default")["claimed"] == 20
    sf.stop()
    go.set()
    thread.join(20)
    assert not thread.is_alive() and result["n"] == 4
    assert sorted(delivered(url, "out")) == list(range(20))
    state = group_state(url, "stop", "default")
    assert (state["pending"], state["claimed"], state["windows"]) == (30, 0, 4)


def test_max_windows_counts_the_windows_in_flight(url):
    streamlog.stream("max", url=url).extend([{"i": i} for i in range(40)])
    fn = Recorder(work=0.01)
    assert streamlog.streaming("max", size=4, workers=4, max_windows=6, sink="out", blocking=False,
                               url=url).apply(fn) == 6
    assert sorted(delivered(url, "out")) == list(range(24))
    assert group_state(url, "max", "default")["pending"] == 16


def test_blocking_workers_pick_up_items_appended_while_they_run(url):
    stream = streamlog.stream("live", url=url)
    fn = Recorder(work=0.01)
    sf = streamlog.streaming("live", size=5, workers=3, sink="out", url=url)
    thread = threading.Thread(target=sf.apply, args=(fn,), daemon=True)
    thread.start()
    for i in range(6):
        stream.extend([{"i": i * 5 + j} for j in range(5)])
    wait_until(lambda: len(fn.runs) == 6, message="six windows")
    sf.stop()
    thread.join(20)
    assert not thread.is_alive()
    assert sorted(delivered(url, "out")) == list(range(30))
    assert sf.consumer.processed == 6


def test_learners_and_bad_values_refuse_workers(url):
    streamlog.stream("ml", url=url).extend([{"x": 1.0, "y": 2.0}])
    model = OnlineLinearRegression(["x"], "y")
    with pytest.raises(streamlog.ConsumerError, match="workers=2"):
        streamlog.streaming("ml", size=1, workers=2, blocking=False, url=url).apply(model)
    assert group_state(url, "ml", "default")["windows"] == 0  # nothing was claimed
    assert model.n_seen_ == 0
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(streamlog.ConsumerError, match="workers must be a positive integer"):
            streamlog.streaming("ml", size=1, workers=bad, url=url)
    stream = streamlog.connect(url).stream("ml")
    with pytest.raises(streamlog.ConsumerError, match="workers"):
        Consumer(stream, model, CountWindow(1), workers=4)


def test_an_exception_escaping_a_worker_ends_the_run_after_the_windows_in_flight(url):
    """SystemExit from the function is not a window failure (as with one worker): run()
    raises it, once the other windows in flight have committed; that window stays claimed
    until its lease lapses and another consumer retries it."""
    streamlog.stream("exit", url=url).extend([{"i": i} for i in range(20)])
    started = threading.Barrier(2, timeout=20)

    def fn(window):
        if window.seq <= 2:
            started.wait()  # windows 1 and 2 run together
        if window.seq == 2:
            raise SystemExit(3)
        if window.seq == 1:  # finish once the consumer is stopping: no window claimed after it
            wait_until(lambda: sf.consumer.stopping, message="the worker's exception to stop the consumer")
        return [{"offset": o} for o in window.offsets]

    sf = streamlog.streaming("exit", size=5, workers=2, sink="out", blocking=False, url=url)
    with pytest.raises(SystemExit):
        sf.apply(fn)
    assert sf.consumer.processed == 1
    assert delivered(url, "out") == [0, 1, 2, 3, 4]
    state = group_state(url, "exit", "default")
    assert (state["claimed"], state["windows"]) == (5, 2)


def test_cli_run_workers(sqlite_url, tmp_path):
    module = tmp_path / "jobs.py"
    module.write_text(
        "from streamlog.consumers import OnlineLinearRegression\n"
        "def copy(window):\n"
        "    return [{'offset': o} for o in window.offsets]\n"
        "model = OnlineLinearRegression(['x'], 'y')\n")
    streamlog.stream("s", url=sqlite_url).extend([{"x": float(i), "y": 2.0 * i} for i in range(12)])
    runner = CliRunner()
    result = runner.invoke(app, ["run", f"{module}:copy", "-s", "s", "--size", "3", "--workers", "3", "--once",
                                 "--sink", "out", "--url", sqlite_url])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith("4 windows processed")
    assert sorted(delivered(sqlite_url, "out")) == list(range(12))
    for extra in ([], ["--verbose"]):
        result = runner.invoke(app, ["run", f"{module}:model", "-s", "s", "--size", "3", "--workers", "2", "--once",
                                     "--group", "ml", "--url", sqlite_url, *extra])
        assert result.exit_code != 0
        assert "streamlog: error:" in result.stderr and "workers=2" in result.stderr


def test_the_leases_of_every_window_in_flight_are_renewed(url):
    """Three windows run for over three leases at once; nobody (not even this consumer's own
    reclaim scan, every lease/4) takes any of them over: each commits on attempt 1."""
    streamlog.stream("lease", url=url).extend([{"i": i} for i in range(9)])
    # longer than three leases; a lease of 0.6 s leaves a renewal (every 0.2 s) 0.4 s to land even
    # when FerretDB answers slowly on a loaded 2-core machine (0.3 s let one lapse in a full CI run)
    fn = Recorder(work=2.0)
    sf = streamlog.streaming("lease", size=3, workers=3, lease=0.6, sink="out", blocking=False, url=url)
    assert sf.apply(fn) == 3
    assert fn.most == 3
    assert sorted(attempt for _, attempt, _ in fn.runs) == [1, 1, 1]
    assert (sf.consumer.fenced, sf.consumer.failed) == (0, 0)
    assert sorted(delivered(url, "out")) == list(range(9))
