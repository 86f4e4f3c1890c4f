"""Sliding windows: each window holds the last N items / T seconds as of its step.

Only the *new* items of a step are claimed and committed, so every item is still
claimed exactly once and the group's position moves as with tumbling windows. The
rest of a window — its history — is re-read from the log by offset range when the
window is delivered (see :class:`~streamlog.emitters.base.Lookback`): a function of
the claim alone, so a redelivered window (after a crash, on another consumer) holds
exactly the same items. ``window.history`` counts the leading items that are not new;
``window.data[window.history:]`` are the items delivered for the first time.
"""

from __future__ import annotations

from ..errors import ConsumerError
from ..store.base import Claim
from .base import Emit, Emitter, Lookback, Pending, Wait
from .fixed import FixedTimeWindow


def _positive_int(kind: str, option: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConsumerError(f"{kind} {option} must be a positive integer, not {value!r}")
    return value


def _positive_seconds(kind: str, option: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConsumerError(f"{kind} {option} must be a positive number of seconds, not {value!r}")
    return value


class SlidingCountWindow(Emitter):
    """Every ``step`` new items, a window of the last ``size`` items.

    * A window is emitted once ``step`` items are pending; it claims exactly those
      ``step`` items and holds them preceded by the ``size - step`` items before them
      (offsets ``hi - size + 1 … hi``), re-read from the log.
    * The first windows of a group are partial (as in Spark Streaming): with
      ``size=4, step=2`` the first window holds 2 items, the following ones 4.
    * History never reaches before the group's first offset (a ``start="latest"``
      group does not see older items), and holds what the log still stores: after a
      trim it is shorter.
    * ``step <= size`` (a larger step would claim items no window shows); ``size`` need
      not be a multiple of ``step``. ``step == size`` is a plain ``CountWindow(size)``.
    """

    kind = "sliding-count"

    def __init__(self, size: int, step: int = 1):
        _positive_int("SlidingCountWindow", "size", size)
        _positive_int("SlidingCountWindow", "step", step)
        if step > size:
            raise ConsumerError(f"SlidingCountWindow step ({step}) must not exceed size ({size}): "
                                "items between windows would never be delivered")
        self.size = size
        self.step = step

    def select(self, pending: Pending, now: int) -> Emit | Wait:
        if len(pending.items(self.step)) >= self.step:
            return Emit(self.step)
        return Wait(pending=self.step)

    def lookback(self, claim: Claim) -> Lookback | None:
        first = claim.hi - self.size + 1
        return Lookback(first=first) if first < claim.lo else None


class SlidingTimeWindow(Emitter):
    """Every ``every`` seconds, a window of the last ``interval`` seconds.

    * Steps are :class:`FixedTimeWindow` slices of length ``every`` on the UTC epoch
      grid, emitted once ``end + grace`` has passed (with event time: once the data's
      watermark passed it), contiguous, empty ones included. A step claims the pending
      items whose time is before its end, exactly as a fixed-time window does.
    * The window of the step ending at ``end`` has the bounds ``[end - interval, end)``
      and holds, in offset order, the earlier items with a time in those bounds
      (history, re-read from the log) followed by the step's new items.
    * New items are always delivered: an item that arrives after its step was emitted
      is in the next window, counted in ``window.late``, even when its time is before
      that window's start. Later windows hold it as history when its time is in their
      bounds.
    * History is read back from the step's first offset in offset order and stops at
      the first item more than ``interval`` older than the window's start, so an item
      out of order by more than ``interval`` with its offset neighbours can be missing
      from later windows' history. It never reaches before the group's first offset
      and holds what the log still stores.
    * The first windows of a group are partial (less than ``interval`` of data).
    * ``every <= interval``; ``interval`` need not be a multiple of ``every``.
    """

    kind = "sliding-time"

    def __init__(self, interval: float, every: float, grace: float = 0.5):
        _positive_seconds("SlidingTimeWindow", "interval", interval)
        _positive_seconds("SlidingTimeWindow", "every", every)
        if every > interval:
            raise ConsumerError(f"SlidingTimeWindow every ({every!r} s) must not exceed interval "
                                f"({interval!r} s): items between windows would never be delivered")
        self._steps = FixedTimeWindow(every, grace)  # validates grace
        self.interval = interval
        self.every = every
        self.grace = grace
        self._span = max(1, round(interval * 1000))

    def select(self, pending: Pending, now: int) -> Emit | Wait:
        return self._steps.select(pending, now)

    def lookback(self, claim: Claim) -> Lookback:
        assert claim.start is not None and claim.end is not None  # a time window's claim has both
        step = (claim.end - claim.start) // claim.windows
        since = claim.start + step - self._span  # the first window's start
        if since >= claim.start:  # interval == every: the windows are the steps themselves
            return Lookback(span=self._span)
        return Lookback(span=self._span, stop=since - self._span)
