"""Sliding (count and time) and session windows.

Unit tests drive the emitters as the cursor does — ``select`` on a :class:`Pending` view
of an in-memory log with an integer clock, the claim it yields, the emitter's
``lookback``, :func:`read_history` and ``Claimed.windows()`` — and check each window's
exact contents, bounds, ``history`` and ``late`` (no database, no wall clock).
End-to-end tests run real consumers on both backends, and kill one with SIGKILL in the
middle of a sliding window: the window redelivered to another consumer is the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap

import pytest
from helpers import reaped, run_python, wait_until

import streamlog
from streamlog.consumers.streaming import StreamingFunction
from streamlog.delivery.history import read_history
from streamlog.delivery.windows import Claimed
from streamlog.emitters import Emit, Lookback, Pending, SessionWindow, SlidingCountWindow, SlidingTimeWindow, Wait
from streamlog.errors import ConsumerError
from streamlog.store.base import ACTIVE, Batch, Claim


class Log:
    """An in-memory stream of ``(offset, append time ms[, event time ms])`` items."""

    def __init__(self, first: int = 0):
        self.next = first
        self.items: dict[int, tuple[int, int | None]] = {}
        self.reads = 0

    def add(self, *times: int, event: int | None = None) -> None:
        for t in times:
            self.items[self.next] = (t, event)
            self.next += 1

    def trim(self, before: int) -> None:
        for offset in [o for o in self.items if o < before]:
            del self.items[offset]

    def read(self, lo: int, hi: int | None, limit: int | None = None) -> Batch:
        self.reads += 1
        offsets = [o for o in sorted(self.items) if o >= lo and (hi is None or o <= hi)][:limit]
        return Batch(offsets, [self.items[o][0] for o in offsets], [{"n": o} for o in offsets])

    def event_times(self, batch: Batch) -> list[int]:
        return [self.items[o][1] for o in batch.offsets]


class Driver:
    """Claims windows like :class:`streamlog.delivery.cursor.Cursor`, minus the store: each Emit
    becomes the next claim of the chain, whose delivered windows are recorded."""

    def __init__(self, emitter, log: Log, start: int = 0, event_time: bool = False):
        self.emitter, self.log, self.floor = emitter, log, start
        self.event_times = log.event_times if event_time else None
        self.times = self.event_times or (lambda batch: batch.times)
        self.after, self.previous_end, self.seq = start - 1, None, 0
        self.claims: list[Claimed] = []
        self.windows: list = []
        self.waits: list[Wait] = []

    def claimed(self, claim: Claim) -> Claimed:
        """What a cursor delivers for ``claim`` (on first delivery or a takeover)."""
        batch = self.log.read(claim.lo, claim.hi) if claim.hi >= claim.lo else Batch()
        result = Claimed(claim, batch, self.times(batch))
        lookback = self.emitter.lookback(claim)
        if lookback is not None:
            result.lookback = lookback
            result.history, result.history_times = read_history(
                claim, lookback, self.floor, len(batch), self.log.read, self.times)
        return result

    def run(self, *clock: int) -> list:
        """Claim every window ready at each time of ``clock``; return the new windows."""
        before = len(self.windows)
        for now in clock:
            while True:
                pending = Pending(self.after, self.previous_end, lambda s, n: self.log.read(s, None, n),
                                  self.event_times)
                decision = self.emitter.select(pending, now)
                if isinstance(decision, Wait):
                    self.waits.append(decision)
                    break
                self.seq += 1
                hi = self.after + decision.count
                claim = Claim(stream="s", group="g", seq=self.seq, attempt=1, lo=self.after + 1, hi=hi,
                              count=decision.count, start=decision.start, end=decision.end,
                              windows=decision.windows, owner="me", lease=now + 1000, state=ACTIVE, error=None,
                              created=now)
                self.after, self.previous_end = hi, decision.end
                claimed = self.claimed(claim)
                self.claims.append(claimed)
                self.windows.extend(claimed.windows(None))
        return self.windows[before:]


def shape(windows) -> list[tuple]:
    """Each window as (offsets, history, start ms, end ms, late)."""
    return [(w.offsets, w.history, w._start, w._end, w.late) for w in windows]


# -- SlidingCountWindow --------------------------------------------------------------------------


def test_sliding_count_windows_hold_the_last_size_items_every_step_new_ones():
    log = Log()
    log.add(*range(0, 900, 100))  # offsets 0..8, times 0, 100, … 800
    d = Driver(SlidingCountWindow(4, 2), log)
    got = d.run(0)
    # partial windows at the start (as Spark Streaming), then the last 4 items every 2 new ones
    assert [(w.offsets, w.history) for w in got] == [
        ([0, 1], 0), ([0, 1, 2, 3], 2), ([2, 3, 4, 5], 2), ([4, 5, 6, 7], 2)]
    # only the new items are claimed: the chain covers every offset exactly once
    assert [(c.claim.lo, c.claim.hi) for c in d.claims] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert d.waits[-1] == Wait(pending=2)  # offset 8 waits for a second new item
    assert [(w._start, w._end) for w in got][2] == (200, 500)  # first and last item time
    assert [d["n"] for d in got[3].data] == [4, 5, 6, 7]
    log.add(900)
    assert [(w.offsets, w.history) for w in d.run(0)] == [([6, 7, 8, 9], 2)]


def test_sliding_count_size_need_not_be_a_multiple_of_step():
    log = Log()
    log.add(*[0] * 8)
    assert [(w.offsets, w.history) for w in Driver(SlidingCountWindow(5, 2), log).run(0)] == [
        ([0, 1], 0), ([0, 1, 2, 3], 2), ([1, 2, 3, 4, 5], 3), ([3, 4, 5, 6, 7], 3)]
    assert [w.offsets for w in Driver(SlidingCountWindow(3, 3), log).run(0)] == [[0, 1, 2], [3, 4, 5]]


def test_sliding_count_history_never_reaches_before_the_groups_start():
    log = Log()
    log.add(*[0] * 10)
    d = Driver(SlidingCountWindow(4, 2), log, start=5)  # e.g. a group created with start="latest"
    assert [(w.offsets, w.history) for w in d.run(0)] == [([5, 6], 0), ([5, 6, 7, 8], 2)]


def test_sliding_count_history_is_what_the_log_still_holds_after_a_trim():
    log = Log()
    log.add(*[0] * 6)
    d = Driver(SlidingCountWindow(4, 2), log)
    d.run(0)
    log.trim(before=3)
    claim = d.claims[-1].claim  # offsets 4..5, history 2..3: offset 2 is gone
    assert [(w.offsets, w.history) for w in d.claimed(claim).windows(None)] == [([3, 4, 5], 1)]


def test_a_redelivered_sliding_count_window_is_the_same():
    log = Log()
    log.add(*range(8))
    d = Driver(SlidingCountWindow(4, 2), log)
    first = shape(d.run(0))
    log.add(100, 200)  # newer items do not change an earlier window
    again = [w for c in d.claims for w in d.claimed(c.claim).windows(None)]
    assert shape(again) == first


def test_sliding_count_options_are_checked():
    for size, step in [(4, 5), (0, 1), (4, 0), (4, 1.5), (True, 1), ("4", 2)]:
        with pytest.raises(ConsumerError):
            SlidingCountWindow(size, step)
    assert SlidingCountWindow(3).step == 1
    assert SlidingCountWindow(4, 4).lookback(Claim(stream="s", group="g", seq=1, attempt=1, lo=0, hi=3,
                                                           count=4)) is None
    assert SlidingCountWindow(4, 2).lookback(Claim(stream="s", group="g", seq=2, attempt=1, lo=2, hi=3,
                                                           count=2)) == Lookback(first=0)


# -- SlidingTimeWindow ---------------------------------------------------------------------------


def test_sliding_time_windows_hold_the_last_interval_every_step():
    log = Log()
    log.add(100, 1100, 1500, 2100, 3200, 4100)
    d = Driver(SlidingTimeWindow(interval=3, every=1, grace=0), log)
    assert d.run(999) == []
    assert d.waits[-1] == Wait(until=1000, pending=None)
    assert shape(d.run(1000, 2000, 3000, 4000, 5000)) == [
        ([0], 0, -2000, 1000, 0),
        ([0, 1, 2], 1, -1000, 2000, 0),
        ([0, 1, 2, 3], 3, 0, 3000, 0),
        ([1, 2, 3, 4], 3, 1000, 4000, 0),   # item 0 (t=100) slid out
        ([3, 4, 5], 2, 2000, 5000, 0),
    ]
    # the claims cover the new items only, like fixed windows of length `every`
    assert [(c.claim.lo, c.claim.hi, c.claim.start, c.claim.end) for c in d.claims] == [
        (0, 0, 0, 1000), (1, 2, 1000, 2000), (3, 3, 2000, 3000), (4, 4, 3000, 4000), (5, 5, 4000, 5000)]
    # quiet steps are still windows: their contents slide out one step at a time
    assert shape(d.run(8000)) == [([4, 5], 2, 3000, 6000, 0), ([5], 1, 4000, 7000, 0), ([], 0, 5000, 8000, 0)]


def test_sliding_time_windows_claimed_together_after_a_quiet_spell_each_slide():
    log = Log()
    log.add(100, 5100)
    d = Driver(SlidingTimeWindow(interval=3, every=1, grace=0), log)
    got = d.run(6000)
    assert [(c.claim.lo, c.claim.hi, c.claim.windows) for c in d.claims] == [(0, 0, 5), (1, 1, 1)]
    assert shape(got) == [
        ([0], 0, -2000, 1000, 0), ([0], 1, -1000, 2000, 0), ([0], 1, 0, 3000, 0),
        ([], 0, 1000, 4000, 0), ([], 0, 2000, 5000, 0), ([1], 0, 3000, 6000, 0)]


def test_a_late_item_is_delivered_new_once_then_is_history_while_in_range():
    log = Log()
    log.add(100, 1200)
    d = Driver(SlidingTimeWindow(interval=3, every=1, grace=0), log)
    d.run(2000)
    log.add(1500)  # offset 2: its step [1000, 2000) was already emitted
    log.add(3500)
    log.add(500)   # offset 4: late, and older than the next window's start
    got = shape(d.run(3000, 4000, 5000))
    assert got == [
        ([0, 1, 2], 2, 0, 3000, 1),          # 2 is new and late
        ([1, 2, 3, 4], 2, 1000, 4000, 1),    # 2 is history now; 4 is new (late) though 500 < 1000
        ([3], 1, 2000, 5000, 0),             # 2 (t=1500) slid out; 4 (t=500) is out of range
    ]


def test_sliding_time_windows_on_event_time():
    log = Log()
    for append, event in [(9000, 100), (9001, 1100), (9002, 900), (9003, 2600), (9004, 4000)]:
        log.add(append, event=event)
    d = Driver(SlidingTimeWindow(interval=2, every=1, grace=0), log, event_time=True)
    # event time: the data's watermark closes steps (the item at 4000 closes up to [3000, 4000))
    assert shape(d.run(0)) == [
        ([0], 0, -1000, 1000, 0),
        ([0, 1, 2], 1, 0, 2000, 1),      # 2 (event 900) is late for the step [1000, 2000)
        ([1, 3], 1, 1000, 3000, 0),      # 2 (900) is out of [1000, 3000)
        ([3], 1, 2000, 4000, 0)]         # the step [3000, 4000) is empty: claimed with [2000, 3000)


def test_sliding_time_history_stops_at_an_item_an_interval_older_than_the_window():
    """The look-back reads back in offset order and stops at the first item more than
    ``interval`` older than the window's start: a deterministic rule, so an item that far
    out of order hides the older offsets behind it from later windows' history."""
    log = Log()
    log.add(10_000, 10_500)        # offsets 0, 1: in range of the window [10 000, 13 000)
    log.add(6_000)                 # offset 2: 4 s out of order (> interval), claimed late
    log.add(11_000, 12_000)        # offsets 3, 4
    d = Driver(SlidingTimeWindow(interval=3, every=1, grace=0), log)
    d.run(13_000)
    last = d.windows[-1]
    assert (last._start, last._end) == (10_000, 13_000)
    assert (last.offsets, last.history) == ([3, 4], 1)  # 0 and 1 are behind offset 2
    # one less second out of order and the look-back steps over it
    log2 = Log()
    log2.add(10_000, 10_500, 8_000, 11_000, 12_000)
    d2 = Driver(SlidingTimeWindow(interval=3, every=1, grace=0), log2)
    d2.run(13_000)
    assert d2.windows[-1].offsets == [0, 1, 3, 4]


def test_sliding_time_look_back_reads_long_histories_in_a_few_chunks():
    log = Log()
    log.add(*range(0, 10_000, 2))   # 5000 items over 10 s
    d = Driver(SlidingTimeWindow(interval=8, every=1, grace=0), log)
    d.run(10_000)
    claim = d.claims[-1].claim      # the step [9000, 10 000)
    log.reads = 0
    (w,) = d.claimed(claim).windows(None)
    assert (w._start, w._end) == (2_000, 10_000)
    assert w.offsets == list(range(1_000, 5_000)) and w.history == 3_500
    assert log.reads == 2  # the claim, then one chunk sized from the claim's own item rate
    # an empty step has no rate to go by: the look-back doubles its chunks back to the floor
    d.run(11_000)
    (w,) = d.windows[-1:]
    assert (w.offsets, w.history, w._start) == (list(range(1_500, 5_000)), 3_500, 3_000)


def test_sliding_time_interval_equal_to_every_is_a_fixed_window_without_history():
    log = Log()
    log.add(100, 1100, 1500)
    d = Driver(SlidingTimeWindow(interval=1, every=1, grace=0), log)
    assert shape(d.run(2000)) == [([0], 0, 0, 1000, 0), ([1, 2], 0, 1000, 2000, 0)]


def test_sliding_time_options_are_checked():
    for interval, every, grace in [(1, 2, 0), (0, 1, 0), (3, 0, 0), (3, 1, -1), ("3", 1, 0), (3, True, 0)]:
        with pytest.raises(ConsumerError):
            SlidingTimeWindow(interval, every, grace)


# -- SessionWindow -------------------------------------------------------------------------------


def test_sessions_close_on_a_gap_between_items_or_after_gap_without_one():
    log = Log()
    log.add(0, 500, 1000, 3000, 4500)   # 3000 - 1000 = gap: a new session
    w = SessionWindow(gap=2)
    p = lambda after: Pending(after, None, lambda s, n: log.read(s, None, n))  # noqa: E731 - a one-line helper local to this test
    assert w.select(p(-1), 1000) == Emit(3, 0, 3000)        # closed by the data: bounds [first, last + gap)
    assert w.select(p(2), 6499) == Wait(until=6500, pending=3)  # open: until gap after its last append
    assert w.select(p(2), 6500) == Emit(2, 3000, 6500)
    assert w.select(p(4), 0) == Wait(until=None, pending=1)


def test_a_session_continues_while_items_come_less_than_gap_apart():
    log = Log()
    log.add(0, 1999, 3998)
    d = Driver(SessionWindow(gap=2), log)
    assert d.run(5997) == []
    assert d.waits[-1] == Wait(until=5998, pending=4)  # woken by the deadline or a 4th item
    log.add(5997)
    assert d.run(5997) == [] and d.waits[-1] == Wait(until=7997, pending=5)
    assert shape(d.run(7997)) == [([0, 1, 2, 3], 0, 0, 7997, 0)]


def test_event_time_sessions_split_on_event_times_and_close_by_append_time():
    log = Log()
    for append, event in [(50_000, 1000), (50_001, 500), (50_002, 2400), (50_003, 5000)]:
        log.add(append, event=event)
    d = Driver(SessionWindow(gap=2), log, event_time=True)
    # 500 is older than the session's latest (1000): it never splits it; 5000 - 2400 >= gap
    assert shape(d.run(0)) == [([0, 1, 2], 0, 500, 4400, 0)]
    assert d.waits[-1] == Wait(until=52_003, pending=2)  # the open session: gap after its append
    assert shape(d.run(52_003)) == [([3], 0, 5000, 7000, 0)]


def test_session_max_size_splits_a_long_session():
    log = Log()
    log.add(0, 100, 200, 300, 400)
    d = Driver(SessionWindow(gap=1, max_size=2), log)
    assert [w.offsets for w in d.run(0)] == [[0, 1], [2, 3]]
    assert [w.offsets for w in d.run(1400)] == [[4]]


def test_session_options_are_checked():
    for gap, max_size in [(0, None), (-1, None), (True, None), (1, 0), (1, 1.5)]:
        with pytest.raises(ConsumerError):
            SessionWindow(gap, max_size)


# -- streaming(...) options --------------------------------------------------------------------


def test_streaming_options_map_to_the_new_kinds(sqlite_url):
    def emitter(**options):
        return StreamingFunction("s", url=sqlite_url, **options).emitter

    assert repr(emitter(size=4, step=2)) == "SlidingCountWindow(size=4, step=2)"
    assert repr(emitter(interval=300, every=10)) == "SlidingTimeWindow(interval=300, every=10, grace=0.5)"
    assert repr(emitter(interval=3, every=1, grace=0)) == "SlidingTimeWindow(interval=3, every=1, grace=0)"
    assert repr(emitter(gap=30, max_size=100)) == "SessionWindow(gap=30, max_size=100)"
    bad = [dict(step=2), dict(every=1), dict(size=4, every=1), dict(interval=3, step=1),
           dict(size=4, step=2, timeout=1), dict(interval=3, every=1, relaxed=True), dict(gap=1, size=2),
           dict(gap=1, interval=2), dict(gap=1, grace=1), dict(size=4, step=2, max_size=3),
           dict(size=2, step=3), dict(interval=1, every=2)]
    for options in bad:
        with pytest.raises(ConsumerError):
            emitter(**options)


# -- end to end, on both backends ------------------------------------------------------------


def test_sliding_count_windows_end_to_end(url):
    s = streamlog.stream("slide", url=url)
    s.extend([{"n": i} for i in range(9)])
    windows = []
    assert streamlog.streaming("slide", size=4, step=2, blocking=False, url=url).apply(windows.append) == 4
    assert [([d["n"] for d in w.data], w.history) for w in windows] == [
        ([0, 1], 0), ([0, 1, 2, 3], 2), ([2, 3, 4, 5], 2), ([4, 5, 6, 7], 2)]
    assert [w.seq for w in windows] == [1, 2, 3, 4]
    assert s.info()["pending"]["default"] == 1  # offset 8: only new items are claimed and committed
    s.append({"n": 9})
    more = []
    assert streamlog.streaming("slide", size=4, step=2, blocking=False, url=url).apply(more.append) == 1
    assert (more[0].offsets, more[0].history) == ([6, 7, 8, 9], 2)


def test_sliding_time_windows_end_to_end_on_event_time(url):
    base = 1_700_000_000  # a whole second: steps of 1 s are aligned on it
    s = streamlog.stream("slidet", url=url)
    s.extend([{"ts": base + t, "v": v} for v, t in enumerate([0.1, 1.1, 1.5, 2.1, 3.2, 4.1, 6.5])])
    windows = []
    fn = streamlog.streaming("slidet", interval=3, every=1, grace=0, time_field="ts", blocking=False, url=url)
    assert fn.apply(windows.append) == 6
    assert [([d["v"] for d in w.data], w.history, w.late) for w in windows] == [
        ([0], 0, 0), ([0, 1, 2], 1, 0), ([0, 1, 2, 3], 3, 0), ([1, 2, 3, 4], 3, 0), ([3, 4, 5], 2, 0),
        ([4, 5], 2, 0)]  # [3, 6): no new item in its step
    assert [(w.start.timestamp() - base, w.end.timestamp() - base) for w in windows] == [
        (-2, 1), (-1, 2), (0, 3), (1, 4), (2, 5), (3, 6)]
    assert s.info()["pending"]["default"] == 1  # v=6 waits for the watermark to pass its step


def test_session_windows_end_to_end(url):
    base = 1_700_000_000
    s = streamlog.stream("sessions", url=url)
    s.extend([{"ts": base + t, "v": v} for v, t in enumerate([0, 1, 2.5, 10, 11, 30])])
    windows = []
    fn = streamlog.streaming("sessions", gap=5, time_field="ts", blocking=False, url=url)
    assert fn.apply(windows.append) == 2  # the session at 30 stays open: appended less than 5 s ago
    assert [[d["v"] for d in w.data] for w in windows] == [[0, 1, 2], [3, 4]]
    assert [(w.start.timestamp() - base, w.end.timestamp() - base) for w in windows] == [(0, 7.5), (10, 16)]
    # append-time sessions: one extend is one instant, so one session once the gap passed
    s2 = streamlog.stream("clicks", url=url)
    s2.extend([{"v": v} for v in range(3)])
    got = []
    fn2 = streamlog.streaming("clicks", gap=0.2, blocking=False, url=url)
    wait_until(lambda: fn2.apply(got.append), message="the session to close")
    assert [w.offsets for w in got] == [[0, 1, 2]]


CONSUMER = textwrap.dedent("""
    import json, sys, time, streamlog
    name, marker, kind, hang = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def consume(window):
        print(json.dumps({"seq": window.seq, "attempt": window.attempt, "offsets": window.offsets,
                          "history": window.history, "data": window.data}), flush=True)
        if window.seq == hang:
            open(marker, "w").close()
            time.sleep(3600)

    options = dict(size=4, step=2) if kind == "count" else dict(interval=3, every=1, grace=0, time_field="ts")
    streamlog.streaming(name, lease=1.0, **options).apply(consume)
""")


@pytest.mark.parametrize("kind", ["count", "time"])
def test_a_sliding_window_redelivered_after_sigkill_is_the_same(url, tmp_path, kind):
    base = 1_700_000_000
    s = streamlog.stream("crash", url=url)
    s.extend([{"ts": base + t, "v": v} for v, t in enumerate([0.1, 1.1, 1.5, 2.1, 3.2, 4.1, 6.5, 7.5])])
    marker = str(tmp_path / "hung")
    proc = run_python(CONSUMER, url, "crash", marker, kind, "3", stdout=subprocess.PIPE, text=True)
    with reaped(proc):
        wait_until(lambda: os.path.exists(marker) or proc.poll() is not None, timeout=30,
                   message="the consumer to start window #3")
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    first = [json.loads(line) for line in proc.stdout.read().splitlines()]
    proc.stdout.close()
    assert [w["seq"] for w in first] == [1, 2, 3]
    hung = first[-1]
    assert hung["history"] > 0
    windows = []
    options = dict(size=4, step=2) if kind == "count" else dict(interval=3, every=1, grace=0, time_field="ts")
    fn = streamlog.streaming("crash", lease=1.0, blocking=False, url=url, **options)
    # later windows may come first (the lease of #3 is still live for up to a second)
    redelivered = lambda: fn.apply(windows.append) >= 0 and [w for w in windows if w.seq == 3]  # noqa: E731 - a one-line helper local to this test
    (again,) = wait_until(redelivered, timeout=30, message="the redelivery of window #3")
    assert again.attempt == 2
    assert (again.offsets, again.history, again.data) == (hung["offsets"], hung["history"], hung["data"])


# -- streamlog run ------------------------------------------------------------------------------


def test_streamlog_run_with_step_every_and_gap(sqlite_url, tmp_path):
    from typer.testing import CliRunner

    from streamlog.cli import app

    (tmp_path / "jobs.py").write_text(
        "import json\n\ndef show(window):\n    print(json.dumps([window.offsets, window.history]))\n")
    streamlog.stream("s", url=sqlite_url).extend([{"ts": 1_700_000_000 + i * 0.5} for i in range(6)])

    def run(*args: str):
        return CliRunner().invoke(app, ["run", f"{tmp_path}/jobs.py:show", "-s", "s", "--once",
                                        "--url", sqlite_url, *args])

    result = run("--size", "3", "--step", "1", "--group", "count")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()[:-1]] == [
        [[0], 0], [[0, 1], 1], [[0, 1, 2], 2], [[1, 2, 3], 2], [[2, 3, 4], 2], [[3, 4, 5], 2]]
    result = run("--interval", "2", "--every", "1", "--time-field", "ts", "--group", "time")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()[:-1]] == [
        [[0, 1], 0], [[0, 1, 2, 3], 2]]  # [2, 3) waits for an item at or after 3.5 s (grace)
    result = run("--gap", "30", "--time-field", "ts", "--group", "session")
    assert result.exit_code == 0 and result.stdout.startswith("0 windows processed"), result.output
    for args, message in [(["--size", "3", "--gap", "1"], "exactly one of"),
                          (["--interval", "3", "--step", "1"], "--step needs --size"),
                          (["--interval", "3", "--relaxed", "--every", "1"], "--every needs --interval"),
                          (["--size", "2", "--step", "3"], "must not exceed size")]:
        result = run(*args)
        assert result.exit_code != 0 and message in result.stderr, (args, result.output)
