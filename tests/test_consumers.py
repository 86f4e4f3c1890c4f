"""Window emitters and @streaming consumers, on every backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import threading
import time

import pytest
from helpers import run_python, wait_until

import streamlog
from streamlog.emitters import Emit, Emitter, Wait


def run_in_thread(fn_obj, consumer):
    """Run a blocking StreamingFunction in a thread; returns (thread, result dict)."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("n", fn_obj.apply(consumer)), daemon=True)
    thread.start()
    return thread, result


# -- count windows ------------------------------------------------------------


def test_count_windows_hold_exactly_size_items_in_offset_order(url):
    s = streamlog.stream("counts", url=url)
    s.extend([{"n": i} for i in range(10)])
    windows = []
    n = streamlog.streaming("counts", size=4, blocking=False, url=url).apply(windows.append)
    assert n == 2
    assert [w.offsets for w in windows] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [w.seq for w in windows] == [1, 2]
    assert [d["n"] for d in windows[1].data] == [4, 5, 6, 7]
    assert s.info()["pending"]["default"] == 2  # a partial window waits for more items
    s.extend([{"n": 10}, {"n": 11}])
    assert streamlog.streaming("counts", size=4, blocking=False, url=url).apply(windows.append) == 1
    assert windows[-1].offsets == [8, 9, 10, 11]


def test_count_window_timeout_emits_a_partial_window_once_the_oldest_waited(url):
    s = streamlog.stream("partial", url=url)
    s.extend([{"n": 1}, {"n": 2}])
    appended = s.read()[0]["timestamp"].timestamp()
    fn = streamlog.streaming("partial", size=5, timeout=0.3, blocking=False, url=url)
    windows = []
    assert fn.apply(lambda w: windows.append((time.time(), w))) == 0  # not full, nobody waited 0.3 s yet
    wait_until(lambda: fn.apply(lambda w: windows.append((time.time(), w))), timeout=10, message="the partial window")
    ((delivered, window),) = windows
    assert window.offsets == [0, 1]
    assert delivered - appended >= 0.3


def test_decorating_runs_the_consumer_and_binds_the_window_count(url):
    streamlog.stream("deco", url=url).extend([{"n": i} for i in range(6)])
    seen = []

    @streamlog.streaming("deco", size=2, blocking=False, url=url)
    def consume(window):
        seen.append(len(window))

    assert consume == 3 and seen == [2, 2, 2]


def test_window_exposes_data_frame_times_and_bounds(url):
    s = streamlog.stream("shape", url=url)
    s.extend([{"x": 1.0, "offset": "mine"}, {"x": 2.0, "offset": "also mine"}])
    windows = []
    streamlog.streaming("shape", size=2, blocking=False, url=url).apply(windows.append)
    (w,) = windows
    frame = w.frame()
    assert list(frame.index) == [0, 1] and frame.index.name == "offset"
    assert list(frame["offset"]) == ["mine", "also mine"]  # an item key named offset survives
    assert list(frame["x"]) == [1.0, 2.0]
    assert len(w) == 2 and w.data[0]["x"] == 1.0 and w.group == "default" and w.stream.name == "shape"
    assert all(t.tzinfo is not None for t in w.timestamps)
    assert w.start == w.timestamps[0] and w.end == w.timestamps[-1]


# -- fixed-time windows ---------------------------------------------------------


def test_fixed_windows_by_event_time_are_aligned_contiguous_and_include_empty_ones(url):
    s = streamlog.stream("ticks", url=url)
    base = 1_700_000_000  # event times (epoch seconds), long past: only the data's watermark counts
    s.extend([{"t": base + dt, "v": i} for i, dt in enumerate([0.1, 0.5, 1.2, 3.7, 5.9])])
    windows = []
    n = streamlog.streaming("ticks", interval=1, grace=0.5, time_field="t", blocking=False, url=url).apply(
        windows.append)
    # [0,1) [1,2) [2,3) [3,4) [4,5) are closed by the item at 5.9 (>= 5 + 0.5); [5,6) is not.
    assert n == 5
    starts = [int(w.start.timestamp()) - base for w in windows]
    assert starts == [0, 1, 2, 3, 4]
    assert [int(w.end.timestamp()) - base for w in windows] == [1, 2, 3, 4, 5]
    assert [[d["v"] for d in w.data] for w in windows] == [[0, 1], [2], [], [3], []]
    assert all(w.late == 0 for w in windows)
    # A late item (event time in an emitted window) goes into the next window, counted as late.
    s.extend([{"t": base + 2.5, "v": 5}, {"t": base + 7.0, "v": 6}])
    more = []
    streamlog.streaming("ticks", interval=1, grace=0.5, time_field="t", blocking=False, url=url).apply(more.append)
    assert [[d["v"] for d in w.data] for w in more] == [[4, 5]]  # [5,6): 5.9, then the late 2.5
    assert more[0].late == 1 and int(more[0].start.timestamp()) - base == 5


def test_fixed_windows_by_append_time_emit_every_interval(url):
    s = streamlog.stream("clock", url=url)
    windows = []
    fn = streamlog.streaming("clock", interval=0.2, grace=0.05, url=url)

    def consume(window):
        windows.append(window)
        if len(windows) >= 12:
            fn.stop()

    thread, result = run_in_thread(fn, consume)
    s.extend([{"n": 0}, {"n": 1}])
    wait_until(lambda: len(windows) >= 3, message="three windows")
    s.append({"n": 2})
    wait_until(lambda: len(windows) >= 6, message="six windows")
    s.extend([{"n": 3}, {"n": 4}])
    thread.join(20)
    assert not thread.is_alive() and result["n"] == len(windows) >= 12
    for prev, cur in zip(windows, windows[1:], strict=False):
        assert cur.start == prev.end  # contiguous
    assert all(int(w.start.timestamp() * 1000) % 200 == 0 for w in windows)  # on the epoch grid
    offsets = [o for w in windows for o in w.offsets]
    assert offsets == sorted(set(offsets)) == list(range(len(offsets)))  # each item exactly once
    assert any(len(w) == 0 for w in windows)  # empty windows are emitted too
    for w in windows:
        for t in w.timestamps:
            assert w.start <= t < w.end or w.late  # each item in the window of its time


# -- relaxed windows ------------------------------------------------------------


def test_relaxed_window_drains_everything_pending(url):
    s = streamlog.stream("relaxed", url=url)
    s.extend([{"n": i} for i in range(7)])
    windows = []
    fn = streamlog.streaming("relaxed", interval=0.2, relaxed=True, blocking=False, url=url)
    assert fn.apply(windows.append) == 1 and windows[0].offsets == list(range(7))
    fn = streamlog.streaming("relaxed", interval=0.1, relaxed=True, url=url)
    thread, result = run_in_thread(fn, windows.append)
    for batch in range(3):
        s.extend([{"n": 100 + batch}] * (batch + 2))
        wait_until(lambda batch=batch: sum(len(w) for w in windows) >= 7 + sum(range(2, batch + 3)), message="drain")
    fn.stop()
    thread.join(10)
    assert all(len(w) > 0 for w in windows)  # relaxed windows are never empty
    assert [o for w in windows for o in w.offsets] == list(range(7 + 2 + 3 + 4))


# -- failures, retries, dead letters ---------------------------------------------


def test_a_failing_window_is_retried_then_dead_lettered_and_processing_goes_on(url):
    s = streamlog.stream("flaky", url=url)
    s.extend([{"n": i} for i in range(6)])
    attempts = []

    def consume(window):
        attempts.append((window.seq, window.attempt))
        if 2 in [d["n"] for d in window.data]:
            raise ValueError("cannot handle n=2")

    n = streamlog.streaming("flaky", size=2, max_retries=2, blocking=False, url=url).apply(consume)
    assert n == 2  # windows 1 and 3 succeeded
    assert attempts == [(1, 1), (2, 1), (2, 2), (2, 3), (3, 1)]
    dead = streamlog.connect(url).get("flaky.dead").read()
    assert [d["data"] for d in dead] == [
        {"offset": o, "data": {"n": o}, "error": "ValueError: cannot handle n=2", "attempts": 3, "group": "default"}
        for o in (2, 3)
    ]
    info = s.info()
    assert info["pending"]["default"] == 0 and info["dead_letters"] == 2
    assert info["groups"]["default"]["dead"] == 2


def test_a_transient_failure_is_retried_and_nothing_is_dead_lettered(url):
    s = streamlog.stream("transient", url=url)
    s.extend([{"n": 1}])
    calls = []

    def consume(window):
        calls.append(window.attempt)
        if window.attempt == 1:
            raise RuntimeError("try again")

    assert streamlog.streaming("transient", size=1, blocking=False, url=url).apply(consume) == 1
    assert calls == [1, 2]
    assert "transient.dead" not in streamlog.connect(url).streams()


def test_sink_forwards_return_values(url):
    streamlog.stream("raw", url=url).extend([{"x": i} for i in range(6)])

    def double(window):
        if window.seq == 2:
            return None  # nothing forwarded
        return [{"x2": d["x"] * 2} for d in window.data] if window.seq == 1 else {"sum": sum(window.frame()["x"])}

    n = streamlog.streaming("raw", size=2, sink="doubled", blocking=False, url=url).apply(double)
    assert n == 3
    assert [r["data"] for r in streamlog.connect(url).get("doubled").read()] == [{"x2": 0}, {"x2": 2}, {"sum": 9}]


def test_a_bad_return_value_with_a_sink_fails_the_window(url):
    streamlog.stream("raw", url=url).append({"x": 1})
    n = streamlog.streaming("raw", size=1, sink="out", max_retries=0, blocking=False, url=url).apply(lambda w: 42)
    assert n == 0
    dead = streamlog.connect(url).get("raw.dead").read()
    assert "must return a dict" in dead[0]["data"]["error"]


# -- process death, leases, signals ----------------------------------------------

CONSUMER = textwrap.dedent("""
    import json, os, sys, time, streamlog
    name, marker, mode = sys.argv[1], sys.argv[2], sys.argv[3]

    def consume(window):
        print(json.dumps({"pid": os.getpid(), "offsets": window.offsets, "attempt": window.attempt}), flush=True)
        if mode == "hang":
            open(marker, "w").close()
            time.sleep(3600)
        if mode == "slow":
            open(marker, "w").close()
            time.sleep(1.0)
        if mode == "share":
            time.sleep(0.02)

    open(marker + ".ready", "w").close()
    n = streamlog.streaming(name, size=int(sys.argv[4]), lease=float(sys.argv[5])).apply(consume)
    print(json.dumps({"done": n}), flush=True)
""")


def test_sigkill_mid_window_redelivers_after_the_lease_expires(url, tmp_path):
    s = streamlog.stream("crash", url=url)
    s.extend([{"n": i} for i in range(3)])
    marker = str(tmp_path / "hung")
    proc = run_python(CONSUMER, url, "crash", marker, "hang", "3", "3", stdout=subprocess.PIPE)
    try:
        wait_until(lambda: os.path.exists(marker), timeout=30, message="the consumer to start the window")
        assert s.info()["groups"]["default"]["claimed"] == 3
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    windows = []
    fn = streamlog.streaming("crash", size=3, blocking=False, url=url)
    # The lease (3 s, renewed every second) is still live: nobody may take the window yet.
    assert fn.apply(windows.append) == 0
    wait_until(lambda: fn.apply(windows.append), timeout=30, message="redelivery")
    (w,) = windows
    assert (w.offsets, w.attempt, w.seq) == ([0, 1, 2], 2, 1)
    assert s.info()["pending"]["default"] == 0


def test_a_live_consumer_renews_its_lease_while_its_function_runs(url):
    s = streamlog.stream("long", url=url)
    s.extend([{"n": 1}])
    started, release = threading.Event(), threading.Event()

    def slow(window):
        started.set()
        release.wait(10)

    # A 0.6 s lease renewed every 0.2 s: under a full CI run's load a 0.3 s lease let a
    # renewal (0.1 s apart) slip past its lease once; the assertions are the same.
    slow_fn = streamlog.streaming("long", size=1, lease=0.6, url=url, blocking=False)
    thread, result = run_in_thread(slow_fn, slow)
    assert started.wait(10)
    stolen = []
    other = streamlog.streaming("long", size=1, lease=0.6, url=url, blocking=False)
    deadline = time.monotonic() + 3.0  # five lease lengths: without renewal it would be taken over
    while time.monotonic() < deadline:
        other.apply(stolen.append)
    release.set()
    thread.join(10)
    assert stolen == [] and result["n"] == 1


def test_sigterm_finishes_and_commits_the_current_window_then_exits_0(url, tmp_path):
    s = streamlog.stream("graceful", url=url)
    s.extend([{"n": i} for i in range(4)])
    marker = str(tmp_path / "busy")
    proc = run_python(CONSUMER, url, "graceful", marker, "slow", "2", "30", stdout=subprocess.PIPE, text=True)
    wait_until(lambda: os.path.exists(marker), timeout=30, message="the first window to start")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1] == {"done": 1} and lines[0]["offsets"] == [0, 1]
    group = s.info()["groups"]["default"]
    assert (group["windows"], group["pending"], group["claimed"]) == (1, 2, 0)  # committed, not abandoned


def test_two_consumer_processes_in_one_group_process_every_item_exactly_once(url, tmp_path):
    s = streamlog.stream("shared", url=url)
    markers = [str(tmp_path / f"c{i}") for i in range(2)]
    procs = [run_python(CONSUMER, url, "shared", m, "share", "5", "30", stdout=subprocess.PIPE, text=True)
             for m in markers]
    try:
        wait_until(lambda: all(os.path.exists(m + ".ready") for m in markers), timeout=30, message="consumers")
        for i in range(20):
            s.extend([{"n": i * 10 + j} for j in range(10)])
        wait_until(lambda: s.info()["pending"]["default"] == 0, timeout=60, message="all items processed")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
    seen: dict[int, list[int]] = {}
    for p in procs:
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0
        for line in out.splitlines():
            record = json.loads(line)
            if "offsets" in record:
                assert record["attempt"] == 1
                seen.setdefault(record["pid"], []).extend(record["offsets"])
    everything = sorted(o for offsets in seen.values() for o in offsets)
    assert everything == list(range(200))  # every item, none twice
    assert len(seen) == 2  # both processes took a share


# -- blocking / non-blocking control ----------------------------------------------


def test_an_idle_blocking_consumer_picks_up_new_items_and_stop_returns_the_count(url):
    s = streamlog.stream("idle", url=url)
    seen = []
    fn = streamlog.streaming("idle", size=1, url=url)
    thread, result = run_in_thread(fn, lambda w: seen.append(w.data[0]["n"]))
    for i in range(3):
        s.append({"n": i})
        wait_until(lambda i=i: len(seen) == i + 1, timeout=10, message=f"item {i}")
    fn.stop()
    thread.join(10)
    assert not thread.is_alive() and result["n"] == 3 and seen == [0, 1, 2]


def test_non_blocking_with_max_windows_bounds_a_catch_up(url):
    s = streamlog.stream("backlog", url=url)
    s.extend([{"n": i} for i in range(10)])
    fn = streamlog.streaming("backlog", size=2, blocking=False, max_windows=3, url=url)
    assert fn.apply(lambda w: None) == 3
    assert fn.apply(lambda w: None) == 2  # the rest, capped at 3 again
    assert s.info()["pending"]["default"] == 0


def test_start_latest_sees_only_new_items(url):
    s = streamlog.stream("fresh", url=url)
    s.extend([{"n": i} for i in range(3)])
    seen = []
    fn = streamlog.streaming("fresh", size=1, group="new", start="latest", blocking=False, url=url)
    assert fn.apply(seen.append) == 0
    s.append({"n": 3})
    assert fn.apply(seen.append) == 1 and seen[0].offsets == [3]


def test_a_custom_emitter_decides_windows(url):
    class Threshold(Emitter):
        """A window once the pending values add up to at least 10."""

        def select(self, pending, now):
            total = 0
            batch = pending.items(100)
            for i, item in enumerate(batch.data):
                total += item["v"]
                if total >= 10:
                    return Emit(i + 1)
            return Wait(pending=len(batch) + 1)

    s = streamlog.stream("custom", url=url)
    s.extend([{"v": v} for v in (3, 4, 5, 9, 1, 1)])
    windows = []
    assert streamlog.streaming("custom", emitter=Threshold(), blocking=False, url=url).apply(windows.append) == 2
    assert [[d["v"] for d in w.data] for w in windows] == [[3, 4, 5], [9, 1]]


@pytest.mark.parametrize("options", [
    dict(size=2, interval=1), dict(relaxed=True), dict(size=0), dict(interval=-1), dict(size=2, grace=1),
    dict(interval=1, timeout=2), dict(lease=0), dict(max_retries=-1), dict(start="tomorrow"),
    dict(emitter="count"), dict(group="a b"), dict(max_windows=0),
])
def test_bad_consumer_options_are_clear_errors(sqlite_url, options):
    with pytest.raises(streamlog.StreamlogError) as caught:
        streamlog.streaming("s", url=sqlite_url, **options)
    assert "\n" not in str(caught.value)


def test_the_embedded_file_watch_wakes_on_another_connections_write(sqlite_url):
    import sys

    from streamlog.store.watch import file_watch

    s = streamlog.stream("watched", url=sqlite_url)
    watch = file_watch(s.store.path)
    if watch is None:
        assert not sys.platform.startswith("linux"), "inotify should be available on Linux"
        return
    try:
        assert watch.wait(0.05) is False  # nothing written: times out
        other = streamlog.Client(sqlite_url)  # a separate connection, as another process has
        other.get("watched").append({"n": 1})
        assert watch.wait(5) is True
        other.close()
    finally:
        watch.close()


def test_a_polling_consumer_works_where_no_file_watch_exists(url, monkeypatch):
    s = streamlog.stream("polled", url=url)
    monkeypatch.setattr(type(s.store), "watch", lambda self, name=None: None)
    seen = []
    fn = streamlog.streaming("polled", size=2, url=url)
    thread, result = run_in_thread(fn, lambda w: seen.append(w.offsets))
    s.append({"n": 0})
    s.append({"n": 1})
    wait_until(lambda: seen, timeout=10, message="a window through polling")
    fn.stop()
    thread.join(10)
    assert seen == [[0, 1]] and result["n"] == 1
