"""Runs of count windows (``windows_per_claim=N``), on every backend.

In a backlog one claim holds up to N count windows that are already pending: one claim
write, one commit, one sink write and one learner checkpoint per run. The windows are the
ones ``windows_per_claim=1`` delivers (same ``seq`` numbers, same items); a failing window
fails its run (retried whole, dead-lettered whole); a crash in a run gives the next
consumer the same windows again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest
from helpers import ROOT, reaped, run_python, wait_until
from test_learners import FEATURES, regression_rows

import streamlog
from streamlog.consumers import OnlineLinearRegression
from streamlog.store.base import Store

pytestmark = pytest.mark.timeout(120)


def _claim_writes(store: Store) -> list[tuple[int, int, str]]:
    """Spy on ``store``: the (seq, windows, how) of every claim record it inserts — alone
    (``claim``) or with the previous record's commit (``commit_and_claim``)."""
    writes: list[tuple[int, int, str]] = []
    claim, folded = store.claim, store.commit_and_claim

    def spy_claim(c):
        writes.append((c.seq, c.windows, "claim"))
        return claim(c)

    def spy_folded(c, next_claim):
        writes.append((next_claim.seq, next_claim.windows, "commit_and_claim"))
        return folded(c, next_claim)

    store.claim, store.commit_and_claim = spy_claim, spy_folded
    return writes


def _windows(url: str, group: str, **options) -> list[tuple[int, list[int]]]:
    seen: list[tuple[int, list[int]]] = []
    streamlog.streaming("src", size=10, group=group, blocking=False, url=url, **options).apply(
        lambda w: seen.append((w.seq, w.offsets)))
    return seen


def test_runs_deliver_the_same_windows_as_single_claims_with_a_claim_per_run(url):
    src = streamlog.connect(url).stream("src")
    src.extend([{"i": i} for i in range(95)])
    one = _windows(url, "one")
    writes = _claim_writes(streamlog.connect(url).store)
    runs = _windows(url, "runs", windows_per_claim=4)
    assert runs == one and [seq for seq, _ in runs] == list(range(1, 10))
    assert [offsets for _, offsets in runs][-1] == list(range(80, 90))
    # nine ready windows: runs of 4, 4 and 1, each claim record keyed by its first window;
    # in a backlog a run's commit claims the next run in the same write
    assert writes == [(1, 4, "claim"), (5, 4, "commit_and_claim"), (9, 1, "commit_and_claim")]
    info = src.info()
    assert info["pending"]["runs"] == 5
    assert (info["groups"]["runs"]["windows"], info["groups"]["runs"]["next_offset"]) == (9, 90)

    src.extend([{"i": i} for i in range(95, 125)])  # the chain goes on after a run: windows 10, 11, 12
    assert _windows(url, "runs", windows_per_claim=4) == [(10, list(range(90, 100))),
                                                          (11, list(range(100, 110))),
                                                          (12, list(range(110, 120)))]


def test_consumers_that_choose_different_runs_on_one_head_never_both_win(url):
    from streamlog.delivery.cursor import Cursor
    from streamlog.delivery.groups import ensure_group
    from streamlog.emitters import CountWindow
    from streamlog.items import now_ms

    src = streamlog.connect(url).stream("src")
    src.extend([{"i": i} for i in range(100)])
    group = ensure_group(src, "g", "earliest")
    runs = Cursor(src, group, CountWindow(10), lease=30, max_retries=3, windows_per_claim=4, owner="runs")
    single = Cursor(src, group, CountWindow(10), lease=30, max_retries=3, owner="single")
    now = now_ms()
    single.head(now)  # both read the same (empty) chain head ...
    won = runs.claim(now)
    assert won is not None and (won.claim.seq, won.claim.windows) == (1, 4)
    assert single.claim(now) is None  # ... the second insert on it loses, whatever run it chose
    after = single.claim(now)  # and re-reads the head: the window after the run
    assert after is not None and (after.claim.seq, after.claim.lo) == (5, 40)
    assert [w.seq for w in won.windows(src)] == [1, 2, 3, 4]


SHARER = """
import os, sys, time, streamlog
name, marker, per_claim = sys.argv[1], sys.argv[2], int(sys.argv[3])
done = [0]

def consume(window):
    time.sleep(0.005)
    done[0] += 1
    if done[0] == 3:
        open(marker, "w").close()
    return [{"o": o, "seq": window.seq, "pid": os.getpid()} for o in window.offsets]

streamlog.streaming(name, size=5, lease=1, windows_per_claim=per_claim, sink="out").apply(consume)
"""


def test_processes_with_different_runs_share_a_group_and_a_sigkill_loses_and_doubles_nothing(url, tmp_path):
    src = streamlog.connect(url).stream("src")
    src.extend([{"i": i} for i in range(400)])  # a backlog of 80 windows: runs form at once
    src.group("default")
    markers = [str(tmp_path / "single"), str(tmp_path / "runs")]
    single = run_python(SHARER, url, "src", markers[0], "1")
    runs = run_python(SHARER, url, "src", markers[1], "8")
    with reaped(single), reaped(runs):
        wait_until(lambda: os.path.exists(markers[1]), timeout=30, message="the run-claiming consumer to start")
        runs.send_signal(signal.SIGKILL)  # mid-run, as like as not: its claim's lease runs out after 1 s
        runs.wait(10)
        src.extend([{"i": i} for i in range(400, 500)])
        wait_until(lambda: not src.info()["pending"]["default"] and not src.store.open_claims("src"),
                   timeout=60, message="the survivor to take over the killed run and finish")
        single.send_signal(signal.SIGTERM)
        assert single.wait(30) == 0
    out = [r["data"] for r in streamlog.connect(url).get("out").read(0, None)]
    counts = Counter(r["o"] for r in out)
    assert set(counts) == set(range(500)) and set(counts.values()) == {1}, sorted(counts.items())
    # every window number once, each over its own five offsets, whichever process ran it
    by_seq: dict[int, set[int]] = {}
    for r in out:
        by_seq.setdefault(r["seq"], set()).add(r["o"])
    assert sorted(by_seq) == list(range(1, 101))
    assert all(offsets == set(range((q - 1) * 5, q * 5)) for q, offsets in by_seq.items())


def test_a_run_never_waits_for_more_windows(url):
    src = streamlog.connect(url).stream("src")
    src.extend([{"i": i} for i in range(10)])
    seen: list[int] = []
    fn = streamlog.streaming("src", size=10, windows_per_claim=8, lease=5, url=url)
    thread_result: dict = {}
    thread = threading.Thread(target=lambda: thread_result.setdefault("n", fn.apply(lambda w: seen.append(w.seq))),
                              daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while seen != [1]:  # poll: the one ready window is delivered alone
            assert time.monotonic() < deadline, seen
            time.sleep(0.01)
        src.extend([{"i": i} for i in range(10, 30)])
        while seen != [1, 2, 3]:
            assert time.monotonic() < deadline, seen
            time.sleep(0.01)
    finally:
        fn.stop()
        thread.join(10)
    assert thread_result["n"] == 3


def test_runs_with_several_workers_deliver_every_window_once(sqlite_url):
    src = streamlog.connect(sqlite_url).stream("src")
    src.extend([{"i": i} for i in range(200)])
    seen: list[tuple[int, list[int]]] = []
    lock = threading.Lock()

    def record(window):
        with lock:
            seen.append((window.seq, window.offsets))

    n = streamlog.streaming("src", size=10, windows_per_claim=4, workers=2, blocking=False,
                            url=sqlite_url).apply(record)
    assert n == 20
    assert sorted(seen) == [(s, list(range((s - 1) * 10, s * 10))) for s in range(1, 21)]


def test_max_windows_caps_a_run(url):
    src = streamlog.connect(url).stream("src")
    src.extend([{"i": i} for i in range(100)])
    seen = _windows(url, "g", windows_per_claim=8, max_windows=3)
    assert [seq for seq, _ in seen] == [1, 2, 3]
    assert src.info()["pending"]["g"] == 70  # the fourth window was never claimed


def test_a_failing_window_retries_its_run_and_the_sink_gets_each_record_once(url):
    src = streamlog.connect(url).stream("src")
    src.extend([{"i": i} for i in range(40)])
    calls: list[tuple[int, int]] = []

    def flaky(window):
        calls.append((window.seq, window.attempt))
        if window.seq == 3 and window.attempt == 1:
            raise ValueError("not yet")
        return {"seq": window.seq, "attempt": window.attempt}

    n = streamlog.streaming("src", size=10, windows_per_claim=4, retry_delay=0, blocking=False, sink="out",
                            url=url).apply(flaky)
    assert n == 4
    # windows 1 and 2 ran in the failed attempt and again in the retry (functions: at least once)
    assert calls == [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2), (4, 2)]
    out = [r["data"] for r in streamlog.connect(url).get("out").read()]
    assert out == [{"seq": s, "attempt": 2} for s in (1, 2, 3, 4)]  # written once, after the run's last window
    assert "src.dead" not in streamlog.connect(url).streams()


def test_a_run_that_exhausts_its_retries_is_dead_lettered_whole(url):
    src = streamlog.connect(url).stream("src")
    src.extend([{"i": i} for i in range(50)])
    good: list[int] = []

    def consume(window):
        if 25 in window.offsets:
            raise ValueError("bad item 25")
        good.append(window.seq)

    n = streamlog.streaming("src", size=10, windows_per_claim=4, max_retries=0, blocking=False,
                            url=url).apply(consume)
    assert n == 1 and good[-1] == 5  # windows 1-4 were one run; window 5 the next
    dead = [d["data"] for d in streamlog.connect(url).get("src.dead").read()]
    assert [d["offset"] for d in dead] == list(range(40))  # the whole run, once
    assert {(d["error"], d["attempts"]) for d in dead} == {("ValueError: bad item 25", 1)}
    assert src.info()["pending"]["default"] == 0


class Crash(BaseException):
    """Stands for the process dying in the middle of a run (its lease then runs out)."""


def test_a_run_cut_short_by_a_crash_comes_back_as_the_same_windows(url):
    src = streamlog.connect(url).stream("src")
    src.extend([{"i": i} for i in range(60)])
    first: list[tuple[int, list[int]]] = []

    def crash_in_third(window):
        first.append((window.seq, window.offsets))
        if window.seq == 3:
            raise Crash()

    fn = streamlog.streaming("src", size=10, windows_per_claim=4, lease=0.5, blocking=False, url=url)
    with pytest.raises(Crash):
        fn.apply(crash_in_third)
    again: list[tuple[int, int, list[int]]] = []
    deadline = time.monotonic() + 20
    while src.info()["pending"]["default"] or src.store.open_claims("src"):
        assert time.monotonic() < deadline, src.info()
        streamlog.streaming("src", size=10, windows_per_claim=4, lease=0.5, blocking=False, url=url).apply(
            lambda w: again.append((w.seq, w.attempt, w.offsets)))
        time.sleep(0.05)  # poll: the crashed run's lease runs out on its own
    retried = [(seq, offsets) for seq, attempt, offsets in again if attempt == 2]
    assert retried == [(s, list(range((s - 1) * 10, s * 10))) for s in (1, 2, 3, 4)]
    assert first == retried[:3]
    assert sorted(seq for seq, _, _ in again) == [1, 2, 3, 4, 5, 6]


def test_a_learner_saves_one_checkpoint_per_run_and_learns_what_single_windows_learn(url):
    rows = regression_rows(200, seed=5)
    src = streamlog.connect(url).stream("src")
    src.extend(rows)
    client = streamlog.connect(url)
    saves: list[int] = []
    real = client.store.save_model

    def counting(name, group, model, seq, state, metrics=None):
        saves.append(seq)
        return real(name, group, model, seq, state, metrics)

    client.store.save_model = counting
    learner = OnlineLinearRegression(FEATURES, "y")
    streamlog.streaming("src", size=20, windows_per_claim=4, blocking=False, sink="out", url=url).apply(learner)
    assert saves == [4, 8, 10]  # runs of 4, 4 and 2 windows
    reference = OnlineLinearRegression(FEATURES, "y", checkpoint=False).learn(rows)
    saved = src.model("OnlineLinearRegression")
    assert saved["seq"] == 10 and saved["state"]["n_seen"] == 200 and learner.windows_ == 10
    np.testing.assert_allclose(np.r_[learner.coef_, learner.intercept_],
                               np.r_[reference.coef_, reference.intercept_], rtol=1e-9)
    records = [r["data"] for r in streamlog.connect(url).get("out").read()]
    assert [r["seq"] for r in records] == list(range(1, 11))
    # outside the runtime the learner saves per window again
    src.extend(regression_rows(20, seed=6))
    streamlog.streaming("src", size=20, blocking=False, url=url).apply(learner)
    assert saves[-1] == 11


def test_a_learner_run_that_fails_is_learned_once_on_retry(url):
    rows = regression_rows(80, seed=7)
    src = streamlog.connect(url).stream("src")
    src.extend(rows)
    learner = OnlineLinearRegression(FEATURES, "y")
    failed = []

    def flaky(window):
        if window.seq == 3 and not failed:
            failed.append(window.seq)
            learner(window)  # learned in memory, not saved: the run fails after it
            raise ValueError("after learning")
        return learner(window)

    flaky.attach = learner.attach  # still the learner, as the runtime sees it
    flaky.defer_checkpoints = learner.defer_checkpoints
    flaky.flush_checkpoint = learner.flush_checkpoint
    n = streamlog.streaming("src", size=20, windows_per_claim=4, retry_delay=0, blocking=False,
                            url=url).apply(flaky)
    assert n == 4 and failed == [3]
    reference = OnlineLinearRegression(FEATURES, "y", checkpoint=False).learn(rows)
    assert learner.n_seen_ == 80 and src.model("OnlineLinearRegression")["state"]["n_seen"] == 80
    np.testing.assert_allclose(np.r_[learner.coef_, learner.intercept_],
                               np.r_[reference.coef_, reference.intercept_], rtol=1e-9)


def test_time_windows_are_unchanged_by_windows_per_claim(sqlite_url):
    src = streamlog.connect(sqlite_url).stream("src")
    src.extend([{"i": i} for i in range(5)])
    seen: list[int] = []
    streamlog.streaming("src", interval=3600, relaxed=True, windows_per_claim=4, blocking=False,
                        url=sqlite_url).apply(lambda w: seen.append(len(w)))
    assert seen == [5]


@pytest.mark.parametrize("options, words", [
    (dict(size=2, windows_per_claim=0), "windows_per_claim must be a positive integer"),
    (dict(size=2, windows_per_claim=True), "windows_per_claim must be a positive integer"),
    (dict(size=2, windows_per_claim="4"), "windows_per_claim must be a positive integer"),
    (dict(size=2, key="k", windows_per_claim=4), "does not work with key="),
    (dict(size=4, step=2, windows_per_claim=4), "does not work with SlidingCountWindow"),
])
def test_windows_per_claim_refuses_what_it_cannot_do(sqlite_url, options, words):
    with pytest.raises(streamlog.StreamlogError) as caught:
        streamlog.streaming("s", url=sqlite_url, **options)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_cli_takes_windows_per_claim(sqlite_url, tmp_path):
    src = streamlog.connect(sqlite_url).stream("src")
    src.extend([{"i": i} for i in range(40)])
    (tmp_path / "job.py").write_text("def count(window):\n    print(window.seq, len(window), flush=True)\n")
    run = [sys.executable, "-m", "streamlog.cli", "run", "job:count", "--stream", "src", "--size", "10",
           "--once", "--url", sqlite_url]
    ok = subprocess.run([*run, "--windows-per-claim", "4"], capture_output=True, text=True, cwd=tmp_path,
                        timeout=60, env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[:4] == ["1 10", "2 10", "3 10", "4 10"]
    bad = subprocess.run([*run, "--windows-per-claim", "0"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=60, env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"})
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1 and "--windows-per-claim" in bad.stderr
