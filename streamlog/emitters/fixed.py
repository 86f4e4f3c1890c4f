"""FixedTimeWindow: aligned, contiguous time windows, empty ones included."""

from __future__ import annotations

from ..errors import ConsumerError
from .base import Emit, Emitter, Pending, Wait

#: at most this many consecutive empty windows are claimed in one go
MAX_EMPTY_RUN = 1000


class FixedTimeWindow(Emitter):
    """Windows ``[k·T, (k+1)·T)`` on the UTC epoch grid, ``T = interval`` seconds.

    * A window is emitted once ``end + grace`` has passed: by the consumer's wall clock
      for append times; with event times (``time_field=``), once an item with an event
      time at or after ``end + grace`` has arrived (the data's own watermark — so
      replaying old data emits its windows at once, and no empty windows are invented
      between the data's end and now).
    * Windows are contiguous: after a group's first window every interval gets a
      window, empty or not. The first window is the one holding the group's first
      pending item or, when nothing was pending as this consumer started, the one
      holding that moment (so an idle stream gets its empty windows from then on).
    * An item is in exactly one window: the window holds the pending items, in offset
      order, up to the first one whose time is at or after ``end``.
    * An item that arrives after its window was emitted is delivered in the next
      window emitted and counted in that window's ``late``.

    ``grace`` (seconds, default 0.5) absorbs clock skew between producers and the
    consumer and the time an append takes to land.
    """

    kind = "fixed"

    def __init__(self, interval: float, grace: float = 0.5):
        if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
            raise ConsumerError(f"FixedTimeWindow interval must be a positive number of seconds, not {interval!r}")
        if not isinstance(grace, (int, float)) or grace < 0:
            raise ConsumerError(f"FixedTimeWindow grace must be a non-negative number of seconds, not {grace!r}")
        self.interval = interval
        self.grace = grace
        self._t = max(1, round(interval * 1000))
        self._g = round(grace * 1000)
        self._origin: int | None = None  # first window's start when the group began idle

    def select(self, pending: Pending, now: int) -> Emit | Wait:
        t = self._t
        if pending.previous_end is not None:
            start = pending.previous_end
        else:
            first = pending.time_at(0)
            if first is None and self._origin is None and not pending.event_time:
                self._origin = now // t * t  # not `now` each time: that window never closes
            starts = [first // t * t] if first is not None else []
            if self._origin is not None:
                starts.append(self._origin)
            if not starts:
                return Wait(pending=1)  # event time, nothing pending: the data sets the clock
            start = min(starts)
        end = start + t
        if pending.event_time:
            beyond = pending.before(end + self._g)  # items before the watermark we need
            watermark = pending.time_at(beyond)
            if watermark is None:
                return Wait(pending=beyond + 1)
        else:
            watermark = now
            if now < end + self._g:
                return Wait(until=end + self._g, pending=None)
        count = pending.before(end)
        # Claim the following empty windows too: those that are closed and end
        # before the next pending item's window.
        closed_until = (watermark - self._g) // t * t
        following = pending.time_at(count)
        last_end = closed_until if following is None else min(closed_until, following // t * t)
        extra = max(0, min(MAX_EMPTY_RUN - 1, (last_end - end) // t))
        return Emit(count, start, end + extra * t, windows=1 + extra)
