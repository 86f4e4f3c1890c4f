"""Window emitters' decisions, unit by unit: no database, no wall clock.

Each emitter's ``select(pending, now)`` is shown a hand-built :class:`Pending` view over
an in-memory list of ``(offset, time_ms)`` items, with an integer clock, and its exact
:class:`Emit` / :class:`Wait` decision is checked at the boundaries DESIGN.md's
"Windows" section defines:

* CountWindow(size=N, timeout=None): exactly N items once N are pending (or fewer,
  once the oldest has waited ``timeout`` s);
* FixedTimeWindow(interval=T, grace): windows ``[k·T, (k+1)·T)`` on the UTC epoch grid,
  emitted once ``end + grace`` has passed, contiguous, empty windows included; an item
  is in exactly one window; a late item goes into the next window;
* RelaxedTimeWindow(interval=T): every T seconds, everything pending.
"""

from __future__ import annotations

import pytest

from streamlog.emitters import CountWindow, Emit, FixedTimeWindow, Pending, RelaxedTimeWindow, Wait
from streamlog.emitters.fixed import MAX_EMPTY_RUN
from streamlog.errors import ConsumerError
from streamlog.store.base import Batch


class Log:
    """An in-memory stream: ``(offset, time_ms)`` items, optionally with event times."""

    def __init__(self, times: list[int] = (), first: int = 0, event: list[int] | None = None):
        self.items = [(first + i, t) for i, t in enumerate(times)]
        self.event = None if event is None else dict(zip((o for o, _ in self.items), event, strict=True))
        self.loads: list[tuple[int, int | None]] = []

    def add(self, time: int, event: int | None = None) -> int:
        offset = self.items[-1][0] + 1 if self.items else 0
        self.items.append((offset, time))
        if event is not None:
            self.event[offset] = event
        return offset

    def load(self, start: int, limit: int | None) -> Batch:
        self.loads.append((start, limit))
        rows = [(o, t) for o, t in self.items if o >= start]
        if limit is not None:
            rows = rows[:limit]
        return Batch([o for o, _ in rows], [t for _, t in rows], [{"offset": o} for o, _ in rows])

    def pending(self, after: int | None = None, previous_end: int | None = None) -> Pending:
        if after is None:
            after = self.items[0][0] - 1 if self.items else -1
        times = None if self.event is None else (lambda batch: [self.event[o] for o in batch.offsets])
        return Pending(after, previous_end, self.load, times)


def pending(times: list[int] = (), after: int = -1, previous_end: int | None = None, **kw) -> Pending:
    """Pending items at offsets ``after + 1 …`` with the given times."""
    return Log(times, first=after + 1, **kw).pending(after, previous_end)


class Runner:
    """Drives an emitter as the runtime does: at each time of a clock, select and claim
    windows (the offsets after the last claimed one) until the emitter waits."""

    def __init__(self, emitter, log: Log):
        self.emitter, self.log = emitter, log
        self.after, self.previous_end = -1, None
        self.emitted: list[tuple[Emit, list[int]]] = []

    def run(self, clock) -> None:
        for now in clock:
            while True:
                decision = self.emitter.select(Pending(self.after, self.previous_end, self.log.load), now)
                if isinstance(decision, Wait):
                    break
                window = [o for o, _ in self.log.items if o > self.after][: decision.count]
                assert len(window) == decision.count
                self.emitted.append((decision, window))
                self.after = window[-1] if window else self.after
                if decision.end is not None:
                    self.previous_end = decision.end


# -- Pending ---------------------------------------------------------------------------------


def test_pending_view_loads_lazily_in_offset_order():
    log = Log([100, 200, 300, 400], first=5)
    view = log.pending(after=6)
    assert view.items(1) == Batch([7], [300], [{"offset": 7}])
    assert view.seen == 7
    assert view.items() == Batch([7, 8], [300, 400], [{"offset": 7}, {"offset": 8}])
    assert view.time_at(1) == 400 and view.time_at(2) is None
    assert view.before(400) == 1 and view.before(401) == 2 and view.before(0) == 0
    assert log.pending(after=8).items() == Batch()
    assert log.pending(after=8).seen == 8


def test_pending_view_with_event_times():
    log = Log([1000, 1001, 1002], event=[50, 40, 60])
    view = log.pending()
    assert view.event_time is True
    assert view.items().times == [50, 40, 60]
    batch, times = view.take(2)
    assert (batch.times, times) == ([1000, 1001], [50, 40])


# -- CountWindow -------------------------------------------------------------------------------


def test_count_window_emits_exactly_size_items():
    w = CountWindow(3)
    assert w.select(pending([]), 0) == Wait(until=None, pending=3)
    assert w.select(pending([10, 20]), 10**9) == Wait(until=None, pending=3)
    assert w.select(pending([10, 20, 30]), 0) == Emit(3)
    assert w.select(pending([10] * 7), 0) == Emit(3, None, None, 1)
    assert CountWindow().select(pending([5]), 0) == Emit(1)


def test_count_window_reads_no_more_than_size_items():
    log = Log([0] * 100)
    assert CountWindow(4).select(log.pending(), 0) == Emit(4)
    assert log.loads == [(0, 4)]


def test_count_window_timeout_emits_fewer_once_the_oldest_has_waited():
    w = CountWindow(3, timeout=2)
    view = [1_000, 1_500]
    assert w.select(pending(view), 1_000) == Wait(until=3_000, pending=3)
    assert w.select(pending(view), 2_999) == Wait(until=3_000, pending=3)
    assert w.select(pending(view), 3_000) == Emit(2)
    assert w.select(pending(view), 50_000) == Emit(2)
    # never more than size, timeout or not
    assert w.select(pending([1_000] * 5), 50_000) == Emit(3)
    assert CountWindow(3, timeout=0.25).select(pending([1_000]), 1_249) == Wait(until=1_250, pending=3)
    assert CountWindow(3, timeout=0.25).select(pending([1_000]), 1_250) == Emit(1)


def test_count_window_timeout_starts_when_the_first_item_arrives():
    """DESIGN: "or fewer, once the oldest has waited timeout s". With nothing pending the
    emitter must ask to be woken by the first item (so its timeout can start), not only
    once ``size`` items are pending: a runtime that honours ``Wait(pending=size)`` would
    otherwise never deliver a lone item."""
    assert CountWindow(3, timeout=2).select(pending([]), 0) == Wait(until=None, pending=1)


def test_count_window_timeout_counts_from_the_append_time_with_event_times():
    """DESIGN: the oldest item has *waited* ``timeout``: since it was appended, whatever its
    event time (count.py says so too: "the oldest item's append time, not its event time")."""
    w = CountWindow(3, timeout=2)
    old_events = pending([10_000, 10_100], event=[0, 5])  # replayed data: event times long ago
    assert w.select(old_events, 10_500) == Wait(until=12_000, pending=3)
    assert w.select(pending([10_000, 10_100], event=[0, 5]), 12_000) == Emit(2)


def test_count_window_arguments():
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ConsumerError):
            CountWindow(bad)
    for bad in (0, -1, "1"):
        with pytest.raises(ConsumerError):
            CountWindow(3, timeout=bad)


# -- FixedTimeWindow -------------------------------------------------------------------------


def test_fixed_window_is_aligned_to_the_epoch_grid_and_waits_for_grace():
    w = FixedTimeWindow(1, grace=0.5)  # T = 1000 ms, grace 500 ms
    view = [10_100, 10_999, 11_000, 11_400]
    assert w.select(pending(view), 10_999) == Wait(until=11_500, pending=None)
    assert w.select(pending(view), 11_499) == Wait(until=11_500, pending=None)
    # [10 000, 11 000): 11 000 itself belongs to the next window
    assert w.select(pending(view), 11_500) == Emit(2, 10_000, 11_000, 1)
    assert w.select(pending(view[2:], after=1, previous_end=11_000), 11_500) == Wait(until=12_500, pending=None)
    assert w.select(pending(view[2:], after=1, previous_end=11_000), 12_500) == Emit(2, 11_000, 12_000, 1)


def test_fixed_window_grid_for_other_intervals():
    minute = 60_000
    base = 1_700_000_000_000 // minute * minute
    w = FixedTimeWindow(60, grace=1)
    assert w.select(pending([base + 59_999]), base + minute + 1_000) == Emit(1, base, base + minute, 1)
    assert w.select(pending([base + 59_999]), base + minute + 999) == Wait(until=base + minute + 1_000, pending=None)
    quarter = FixedTimeWindow(0.25, grace=0)
    assert quarter.select(pending([1_260, 1_499, 1_500]), 1_500) == Emit(2, 1_250, 1_500, 1)
    assert quarter.select(pending([1_260, 1_499, 1_500]), 1_499) == Wait(until=1_500, pending=None)


def test_fixed_window_default_grace_is_at_most_a_second():
    w = FixedTimeWindow(10)
    assert 0 <= w.grace <= 1
    g = round(w.grace * 1000)
    assert w.select(pending([10_000]), 20_000 + g - 1) == Wait(until=20_000 + g, pending=None)
    assert w.select(pending([10_000]), 20_000 + g) == Emit(1, 10_000, 20_000, 1)


def test_fixed_window_emits_empty_windows():
    w = FixedTimeWindow(1, grace=0.5)
    assert w.select(pending([], after=4, previous_end=11_000), 12_499) == Wait(until=12_500, pending=None)
    assert w.select(pending([], after=4, previous_end=11_000), 12_500) == Emit(0, 11_000, 12_000, 1)
    # an item of a later window does not fill this one
    assert w.select(pending([12_000], after=4, previous_end=11_000), 12_500) == Emit(0, 11_000, 12_000, 1)


def test_fixed_window_claims_a_run_of_empty_windows_after_a_gap():
    w = FixedTimeWindow(1, grace=0.5)
    # nothing pending: every closed window up to now - grace
    assert w.select(pending([], after=4, previous_end=10_000), 13_499) == Emit(0, 10_000, 12_000, 2)
    assert w.select(pending([], after=4, previous_end=10_000), 13_500) == Emit(0, 10_000, 13_000, 3)
    # up to the window of the next pending item
    view = pending([14_200], after=4, previous_end=10_000)
    assert w.select(view, 99_000) == Emit(0, 10_000, 14_000, 4)
    assert w.select(pending([14_200], after=4, previous_end=14_000), 15_500) == Emit(1, 14_000, 15_000, 1)
    # … and the closed empty windows after it
    assert w.select(pending([14_200], after=4, previous_end=14_000), 99_000) == Emit(1, 14_000, 98_000, 84)
    # items of the first window, then the empty windows of the gap, in one claim
    assert w.select(pending([10_100, 10_200, 13_500]), 20_000) == Emit(2, 10_000, 13_000, 3)
    # a run is capped
    assert w.select(pending([], previous_end=0), 10**9) == Emit(0, 0, MAX_EMPTY_RUN * 1_000, MAX_EMPTY_RUN)


def test_fixed_window_late_items_go_into_the_next_window():
    w = FixedTimeWindow(1, grace=0.5)
    # the head window ended at 12 000; 11 800 landed after it was emitted
    view = [11_800, 12_300, 13_100]
    assert w.select(pending(view, after=6, previous_end=12_000), 13_499) == Wait(until=13_500, pending=None)
    assert w.select(pending(view, after=6, previous_end=12_000), 13_500) == Emit(2, 12_000, 13_000, 1)
    assert w.select(pending([9_000], after=6, previous_end=12_000), 13_500) == Emit(1, 12_000, 13_000, 1)
    # in offset order: an early time behind a later item waits for the later item's window
    assert w.select(pending([12_300, 13_100, 12_400], after=6, previous_end=12_000), 14_600) == \
        Emit(1, 12_000, 13_000, 1)
    assert w.select(pending([13_100, 12_400], after=7, previous_end=13_000), 14_600) == Emit(2, 13_000, 14_000, 1)


def test_fixed_window_emits_windows_from_the_group_start_on_an_idle_stream():
    """DESIGN: windows are contiguous, empty windows included. A consumer that starts
    on an idle stream at 10 300 sees no item; once ``[10 000, 11 000)`` has closed
    (11 500) it is owed that empty window. The emitter must not slide its first window
    forward with the clock (the window holding ``now`` is never closed at ``now``)."""
    w = FixedTimeWindow(1, grace=0.5)
    assert w.select(pending([]), 10_300) == Wait(until=11_500, pending=None)
    decision = w.select(pending([]), 11_500)
    assert decision == Emit(0, 10_000, 11_000, 1)


def test_fixed_window_every_item_in_exactly_one_window():
    """A run with gaps, out-of-order and late items: the windows tile the grid, every item
    is in exactly one, in offset order, and none in a window that ends before its time."""
    log = Log([10_100, 10_200, 10_900, 13_300, 13_200, 12_100, 16_000, 16_999])
    runner = Runner(FixedTimeWindow(1, grace=0.5), log)
    runner.run([10_000, 10_250, 11_499, 11_500, 11_750, 13_500, 13_750])
    log.add(12_900)  # lands after [12 000, 13 000) was emitted: late
    runner.run([14_500, 16_600, 17_250, 17_500, 18_500])
    emitted = runner.emitted
    assert [(e.start, e.end, e.windows, window) for e, window in emitted] == [
        (10_000, 11_000, 1, [0, 1, 2]),
        (11_000, 13_000, 2, []),  # a run of two empty windows, claimed at once
        (13_000, 14_000, 1, [3, 4, 5]),  # 12 100 is behind 13 300 in offset order: next window
        (14_000, 16_000, 2, []),
        (16_000, 17_000, 1, [6, 7, 8]),  # 12 900 (late) goes into the next window
        (17_000, 18_000, 1, []),
    ]
    assert all(e.count == len(window) for e, window in emitted)
    assert [e.start for e, _ in emitted[1:]] == [e.end for e, _ in emitted[:-1]]  # contiguous
    assert all(e.end - e.start == e.windows * 1_000 for e, _ in emitted)
    assert all(e.start % 1_000 == 0 for e, _ in emitted)
    assert [o for _, window in emitted for o in window] == list(range(9))  # each once, in order
    times = dict(log.items)
    assert all(times[o] < e.start + 1_000 for e, window in emitted for o in window)


def test_fixed_window_with_event_times_uses_the_data_as_its_clock():
    w = FixedTimeWindow(1, grace=0.5)
    # append times are all "now"; event times drive the windows
    assert w.select(pending([0, 0, 0], event=[10_100, 10_600, 11_700]), 0) == Emit(2, 10_000, 11_000, 1)
    assert w.select(pending([0, 0, 0], event=[10_100, 10_600, 11_400]), 10**12) == Wait(until=None, pending=4)
    # a gap in the data: empty windows up to the next item's window, none invented after it
    assert w.select(pending([0, 0], event=[10_100, 13_600]), 0) == Emit(1, 10_000, 13_000, 3)
    assert w.select(pending([0], after=0, previous_end=13_000, event=[13_600]), 10**12) == Wait(until=None, pending=2)


def test_fixed_window_arguments():
    for bad in (0, -1, True, "1"):
        with pytest.raises(ConsumerError):
            FixedTimeWindow(bad)
    with pytest.raises(ConsumerError):
        FixedTimeWindow(1, grace=-0.1)


# -- RelaxedTimeWindow -----------------------------------------------------------------------


def test_relaxed_window_every_interval_everything_pending():
    w = RelaxedTimeWindow(2)  # T = 2000 ms
    assert w.select(pending([100, 200, 900]), 1_000) == Emit(3)  # the first one at once: the backlog
    assert w.select(pending([1_100], after=2), 1_000) == Wait(until=3_000, pending=None)
    assert w.select(pending([1_100, 2_000], after=2), 2_999) == Wait(until=3_000, pending=None)
    assert w.select(pending([1_100, 2_000, 2_999], after=2), 3_000) == Emit(3)
    # nothing pending at a due time: no window; the next one is due T later
    assert w.select(pending([], after=5), 5_000) == Wait(until=7_000, pending=None)
    assert w.select(pending([5_001], after=5), 6_000) == Wait(until=7_000, pending=None)
    assert w.select(pending([5_001], after=5), 7_000) == Emit(1)
    assert w.select(pending([], after=6), 7_001) == Wait(until=9_000, pending=None)


def test_relaxed_window_nothing_pending_at_first():
    w = RelaxedTimeWindow(0.5)
    assert w.select(pending([]), 1_000) == Wait(until=1_500, pending=None)
    assert w.select(pending([1_100]), 1_499) == Wait(until=1_500, pending=None)
    assert w.select(pending([1_100]), 1_500) == Emit(1)


def test_relaxed_window_max_size_caps_a_window_and_the_rest_follows_at_once():
    w = RelaxedTimeWindow(2, max_size=3)
    times = [100] * 7
    assert w.select(pending(times), 1_000) == Emit(3)
    assert w.select(pending(times[3:], after=2), 1_000) == Emit(3)
    assert w.select(pending(times[6:], after=5), 1_000) == Emit(1)
    assert w.select(pending([], after=6), 1_000) == Wait(until=3_000, pending=None)
    # exactly max_size: the next (maybe empty) look is at once
    w = RelaxedTimeWindow(2, max_size=3)
    assert w.select(pending([1, 2, 3]), 1_000) == Emit(3)
    assert w.select(pending([], after=2), 1_000) == Wait(until=3_000, pending=None)


def test_relaxed_window_reads_no_more_than_max_size():
    log = Log([0] * 50)
    assert RelaxedTimeWindow(1, max_size=10).select(log.pending(), 0) == Emit(10)
    assert log.loads == [(0, 10)]


def test_relaxed_window_arguments():
    for bad in (0, -2, True, "1"):
        with pytest.raises(ConsumerError):
            RelaxedTimeWindow(bad)
    for bad in (0, -1, 2.5):
        with pytest.raises(ConsumerError):
            RelaxedTimeWindow(1, max_size=bad)
