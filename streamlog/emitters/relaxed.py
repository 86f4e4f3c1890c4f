"""RelaxedTimeWindow: every ``interval`` seconds, everything pending."""

from __future__ import annotations

from ..errors import ConsumerError
from .base import Emit, Emitter, Pending, Wait


class RelaxedTimeWindow(Emitter):
    """Every ``interval`` seconds (relative to this consumer's clock), emit all pending items.

    The first window is emitted at once with whatever is pending, so a cron run
    (``blocking=False``) processes the backlog. Nothing pending at a due time: no
    window, the next one is due ``interval`` later. ``max_size`` caps a window
    (the rest follows in the next window, at once).
    """

    kind = "relaxed"

    def __init__(self, interval: float, max_size: int | None = None):
        if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
            raise ConsumerError(f"RelaxedTimeWindow interval must be a positive number of seconds, not {interval!r}")
        if max_size is not None and (not isinstance(max_size, int) or max_size < 1):
            raise ConsumerError(f"RelaxedTimeWindow max_size must be a positive integer, not {max_size!r}")
        self.interval = interval
        self.max_size = max_size
        self._t = round(interval * 1000)
        self._due: int | None = None

    def select(self, pending: Pending, now: int) -> Emit | Wait:
        if self._due is not None and now < self._due:
            return Wait(until=self._due, pending=None)
        batch = pending.items(self.max_size)
        if not batch:
            self._due = now + self._t
            return Wait(until=self._due, pending=None)
        full = self.max_size is not None and len(batch) >= self.max_size
        self._due = now if full else now + self._t
        return Emit(len(batch))
