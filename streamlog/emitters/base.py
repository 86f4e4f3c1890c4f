"""The emitter protocol: decide when the next window is ready and what it holds.

An emitter never touches the store. The consumer runtime shows it the group's
pending items through a :class:`Pending` view (loaded lazily, in offset order) and
asks :meth:`Emitter.select` for a decision:

* :class:`Emit` — the next window is the first ``count`` pending items (``count`` may
  be 0 for an empty time window), optionally with explicit time bounds;
* :class:`Wait` — nothing is ready; wake me at ``until`` (ms) or once ``pending``
  items are waiting, whichever comes first.

The runtime then claims exactly that window for the group (so a window is always a
contiguous run of offsets: every item is in exactly one window), runs the consumer
and commits. Times are integer milliseconds since the Unix epoch, UTC; an item's
time is its append time, or its event time when the consumer has ``time_field=``.

A custom strategy is a subclass with a ``select`` method::

    class UntilBigEnough(Emitter):
        '''A window once the pending items' "bytes" add up to 1 MB.'''

        def select(self, pending, now):
            total = 0
            batch = pending.items(10_000)
            for i, item in enumerate(batch.data):
                total += item.get("bytes", 0)
                if total >= 1_000_000:
                    return Emit(i + 1)
            return Wait(pending=len(batch) + 1)

    streamlog.streaming("uploads", emitter=UntilBigEnough()).apply(handle)

Sliding windows deliver more than they claim: an emitter may also implement
:meth:`Emitter.lookback`, which tells the cursor which items *before* a claim its
windows re-read from the log (see :class:`Lookback`). The claim — and so every
guarantee above — still covers only the new items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..store.base import Batch, Claim


@dataclass(frozen=True, slots=True)
class Emit:
    """The next window: the first ``count`` pending items.

    ``start``/``end`` (ms) are the window's bounds when it has them (fixed-time
    and session windows); otherwise the window's bounds are its first and last item times.
    ``windows > 1`` claims a run of that many consecutive fixed-time windows of
    equal length in one go: the items all belong to the first, the rest are empty.
    """

    count: int
    start: int | None = None
    end: int | None = None
    windows: int = 1


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing is ready. Wake at ``until`` (ms since epoch) or once at least ``pending``
    items are pending, whichever comes first; with neither, wake on any new item."""

    until: int | None = None
    pending: int | None = 1


@dataclass(frozen=True, slots=True)
class Lookback:
    """The history a claim's windows re-read from the log, before the claim's own items.

    A pure function of the claim (and the emitter's settings), so every attempt of a
    window — after a crash, on another consumer — re-reads the same items:

    * ``first`` (count kind): the items at offsets ``first … claim.lo - 1``;
    * ``span`` (time kind): each of the claim's windows ``[end - span, end)`` holds the
      items with a time in that range; the history is read back from ``claim.lo - 1`` in
      offset order and stops at the first item whose time is before ``stop``.

    Either way the look-back goes no further back than the group's first offset, and
    holds only what the log still stores (a trimmed history is shorter).
    """

    first: int | None = None
    span: int | None = None
    stop: int | None = None


class Pending:
    """The items a group has not claimed yet, in offset order, loaded on demand.

    ``after`` is the last offset the group has claimed; ``previous_end`` the end (ms)
    of the group's previous time window, or None before its first one; ``event_time``
    tells whether item times are event times (``time_field=``) rather than append times.
    """

    def __init__(self, after: int, previous_end: int | None, load: Callable[[int, int | None], Batch],
                 times: Callable[[Batch], list[int]] | None = None):
        self.after = after
        self.previous_end = previous_end
        self.event_time = times is not None
        self._load = load
        self._times = times
        self._batch = Batch()
        self._event_times: list[int] = []
        self._complete = False

    def items(self, limit: int | None = None) -> Batch:
        """The first ``limit`` pending items (all of them when None); fewer if fewer wait.

        The batch's ``times`` are the items' window times (event time when configured).
        """
        have = len(self._batch)
        if not self._complete and (limit is None or have < limit):
            start = self._batch.offsets[-1] + 1 if have else self.after + 1
            more = self._load(start, None if limit is None else limit - have)
            if limit is None or len(more) < limit - have:
                self._complete = True
            self._batch.extend(more)
            self._event_times.extend(self._times(more) if self._times else more.times)
        batch = self._batch if limit is None or limit >= len(self._batch) else self._batch.head(limit)
        return Batch(batch.offsets, self._event_times[: len(batch)], batch.data)

    @property
    def seen(self) -> int:
        """The last offset loaded so far (``after`` when none was)."""
        return self._batch.offsets[-1] if len(self._batch) else self.after

    def take(self, count: int) -> tuple[Batch, list[int]]:
        """The first ``count`` items with their append times, and their window times."""
        self.items(count)
        return self._batch.head(count), self._event_times[:count]

    def drop(self, count: int) -> None:
        """Forget the first ``count`` items (taken for a count window of a run): the
        emitter's next look starts after them, as it would after that window's claim."""
        self.items(count)
        batch = self._batch
        self.after = batch.offsets[count - 1]
        self.previous_end = None  # a count window leaves no end behind
        for column in (batch.offsets, batch.times, batch.data, self._event_times):
            del column[:count]

    def before(self, end: int, chunk: int = 256) -> int:
        """How many pending items, from the front, have a time before ``end``
        (the prefix stops at the first item at or after ``end``)."""
        n = 0
        while True:
            batch = self.items(n + chunk)
            times = batch.times
            while n < len(times):
                if times[n] >= end:
                    return n
                n += 1
            if self._complete and n >= len(self._batch):
                return n
            chunk *= 2

    def appended_at(self, index: int) -> int | None:
        """The append time of the ``index``-th pending item (whatever its event time)."""
        self.items(index + 1)
        return self._batch.times[index] if len(self._batch) > index else None

    def time_at(self, index: int) -> int | None:
        """The time of the ``index``-th pending item, or None if there are fewer."""
        batch = self.items(index + 1)
        return batch.times[index] if len(batch) > index else None


class Emitter:
    """Base class of window strategies; subclasses implement :meth:`select`."""

    #: the kind of windows, for messages and ``info``
    kind = "custom"

    def select(self, pending: Pending, now: int) -> Emit | Wait:  # pragma: no cover - abstract
        raise NotImplementedError

    def lookback(self, claim: Claim) -> Lookback | None:
        """The history ``claim``'s windows re-read from the log; None (the default) for
        windows that hold exactly the claimed items."""
        return None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
