"""``workers=N``: up to N claimed windows run and committed on threads of one consumer."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable

from ..errors import ConsumerError
from .windows import Claimed


def check_workers(workers: Any) -> int:
    """``workers`` as a validated int (1 or more), else a :class:`ConsumerError`."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConsumerError(f"workers must be a positive integer, not {workers!r}")
    return workers


class WorkerPool:
    """Up to ``n`` claimed windows in flight on daemon threads (a consumer with ``workers > 1``).

    The consumer's loop claims; :meth:`submit` hands a claimed window to a thread, which runs
    ``process(claimed)`` (function, sink, commit or release). Daemon threads: a second
    Ctrl-C ends the process without waiting for them (their leases lapse, as with one worker).
    The first exception a thread lets out is kept in ``error``; ``on_error`` is called.
    """

    def __init__(self, n: int, process: Callable[[Claimed], None], on_error: Callable[[], None]):
        self.n = n
        self._process = process
        self._on_error = on_error
        self._cond = threading.Condition()
        self._queue: deque[Claimed] = deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self.in_flight = 0  # claimed windows handed over and not finished
        self.windows = 0  # how many windows those deliver (``max_windows`` counts them)
        self.error: BaseException | None = None

    def submit(self, claimed: Claimed) -> None:
        with self._cond:
            self._queue.append(claimed)
            self.in_flight += 1
            self.windows += max(1, claimed.claim.windows)
            if self._idle < len(self._queue) and len(self._threads) < self.n:
                thread = threading.Thread(target=self._work, name=f"streamlog-worker-{len(self._threads) + 1}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cond.notify()

    def full(self) -> bool:
        return self.in_flight >= self.n

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until a window finishes (or ``timeout`` seconds pass)."""
        with self._cond:
            if self.in_flight:
                self._cond.wait(timeout)

    def close(self, drain: bool) -> None:
        """Stop the threads; with ``drain``, first let them finish every window handed over."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if drain:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                while not self._queue and not self._closed:
                    self._cond.wait()
                self._idle -= 1
                if not self._queue:
                    return
                claimed = self._queue.popleft()
            try:
                self._process(claimed)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer's loop, which raises it
                with self._cond:
                    if self.error is None:
                        self.error = exc
                self._on_error()
            finally:
                with self._cond:
                    self.in_flight -= 1
                    self.windows -= max(1, claimed.claim.windows)
                    self._cond.notify_all()
