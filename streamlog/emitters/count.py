"""CountWindow: windows of exactly ``size`` items."""

from __future__ import annotations

from ..errors import ConsumerError
from .base import Emit, Emitter, Pending, Wait


class CountWindow(Emitter):
    """Emit the next ``size`` pending items as soon as ``size`` are pending.

    With ``timeout`` (seconds), a partial window of the items pending so far is emitted
    once the oldest of them has waited ``timeout`` since it was appended, so a batch that
    never fills still gets processed. Windows never hold more than ``size`` items.
    """

    kind = "count"

    def __init__(self, size: int = 1, timeout: float | None = None):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConsumerError(f"CountWindow size must be a positive integer, not {size!r}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ConsumerError(f"CountWindow timeout must be a positive number of seconds, not {timeout!r}")
        self.size = size
        self.timeout = timeout

    def select(self, pending: Pending, now: int) -> Emit | Wait:
        batch = pending.items(self.size)
        if len(batch) >= self.size:
            return Emit(self.size)
        if self.timeout is None:
            return Wait(pending=self.size)
        if not batch:
            return Wait(pending=1)  # the first item starts the timeout clock
        # The oldest item's append time, not its event time: the timeout bounds how long it waits here.
        oldest = pending.appended_at(0)
        assert oldest is not None  # the batch holds it
        deadline = oldest + round(self.timeout * 1000)
        if now >= deadline:
            return Emit(len(batch))
        return Wait(until=deadline, pending=self.size)
