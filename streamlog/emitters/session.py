"""SessionWindow: a window closes when no item arrived for ``gap`` seconds."""

from __future__ import annotations

from ..errors import ConsumerError
from .base import Emit, Emitter, Pending, Wait

#: pending items a session emitter loads at first; doubled while the session goes on
CHUNK = 256


class SessionWindow(Emitter):
    """Windows of activity separated by at least ``gap`` seconds of silence.

    * A session starts with the group's first pending item. The next item (in offset
      order) belongs to it unless its time is at least ``gap`` after the latest time
      in the session so far — then the session is closed *by the data* and emitted at
      once, and that item starts the next session. Times are window times: append
      times, or event times with ``time_field=`` (an item older than the session's
      latest never splits it).
    * The open session (no item after it yet) closes *by the clock* once ``gap`` has
      passed since its last item was appended (the append time, whatever the event
      time, so replayed data still closes): "no item arrived for ``gap`` seconds".
    * Every item is in exactly one window; the window's bounds are
      ``[earliest time, latest time + gap)`` (as in Spark and Flink).
    * ``max_size`` caps a window: a longer session is delivered in windows of
      ``max_size`` items, the rest continuing as a session of its own.

    The consumer sleeps until the session can close or a new item arrives.
    """

    kind = "session"

    def __init__(self, gap: float, max_size: int | None = None):
        if not isinstance(gap, (int, float)) or isinstance(gap, bool) or gap <= 0:
            raise ConsumerError(f"SessionWindow gap must be a positive number of seconds, not {gap!r}")
        if max_size is not None and (not isinstance(max_size, int) or isinstance(max_size, bool)
                                     or max_size < 1):
            raise ConsumerError(f"SessionWindow max_size must be a positive integer, not {max_size!r}")
        self.gap = gap
        self.max_size = max_size
        self._g = max(1, round(gap * 1000))

    def select(self, pending: Pending, now: int) -> Emit | Wait:
        cap = self.max_size
        chunk = CHUNK if cap is None else min(CHUNK, cap + 1)
        batch = pending.items(chunk)
        if not batch:
            return Wait(pending=1)
        first = latest = batch.times[0]
        n = 1
        while True:
            if n >= len(batch):
                if len(batch) < chunk:
                    break  # everything pending is in the open session
                chunk *= 2
                batch = pending.items(chunk)
                continue
            t = batch.times[n]
            if t - latest >= self._g:
                return Emit(n, first, latest + self._g)  # closed by the next item
            if cap is not None and n >= cap:
                return Emit(n, first, latest + self._g)
            first, latest = min(first, t), max(latest, t)
            n += 1
        if cap is not None and n >= cap:
            return Emit(n, first, latest + self._g)
        newest = pending.appended_at(n - 1)
        assert newest is not None  # the n items were read above
        deadline = newest + self._g
        if now >= deadline:
            return Emit(n, first, latest + self._g)
        return Wait(until=deadline, pending=n + 1)
