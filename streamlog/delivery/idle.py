"""Idle waiting: how a consumer with nothing to claim notices new items, a deadline, a
window to take over or a retry that fell due — quickly, without burning CPU.

With a watch — a file watch (embedded backend on Linux), or a tailable cursor on the
producers' wake-up signals (MongoDB-wire servers that keep one open, see
:mod:`streamlog.store.mongo_wakeups`) — the consumer sleeps until a producer writes, and
probes only then (and once a second as a safety net). Otherwise it probes with a back-off from 1 ms to the store's
``max_poll``, then on the idle schedule of :mod:`streamlog.polling` (shared with the HTTP
server's followers): every probe costs the client a driver round trip, which is what an
idle consumer's CPU is made of.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..items import now_ms
from ..polling import FULL_PROBE_EVERY, IDLE_AFTER, poll_cap
from ..store.base import Store, Watch
from .cursor import DeliveryCursor, Waiting

#: how often a consumer looks for windows whose lease expired (seconds, at most)
RECLAIM_EVERY = 1.0
#: … once it has waited a quiet second (each look is a round trip: idle CPU)
IDLE_RECLAIM_EVERY = 2.0
#: a sleeping consumer checks for stop() at least this often (seconds)
STOP_CHECK = 0.1


class IdleWait:
    """Sleeps a consumer until there may be work (see the module doc).

    ``next_retry()`` is when (ms) the next window the consumer released is due for its
    retry (0: none). A wait ends at once on :meth:`interrupt` (call it after setting
    ``stop`` or scheduling a retry): it sleeps until the next thing due — a deadline, the
    periodic probe, the scan for expired leases — instead of waking to check, unless its
    watch cannot be interrupted (a server's tailable cursor), which it then wakes from at
    least every ``STOP_CHECK``."""

    def __init__(self, cursor: DeliveryCursor, store: Store, watch: Watch | None, stop: threading.Event, *,
                 lease: float, max_poll: float, idle_poll: float, next_retry: Callable[[], int]):
        self.cursor = cursor
        self.store = store
        self.watch = watch
        self.stop = stop
        self._nudge = threading.Event()
        self.reclaim_every = min(RECLAIM_EVERY, lease / 4)
        # after a quiet second the scan for expired leases runs half as often (a takeover
        # waits for a lease to run out anyway: at most one more second on top of it)
        self.reclaim_idle = min(IDLE_RECLAIM_EVERY, lease / 4)
        self.max_poll = max_poll
        self.idle_poll = idle_poll
        self.next_retry = next_retry

    def interrupt(self) -> None:
        """End the current wait (if any) at once: it looks again at what is due."""
        self._nudge.set()
        if self.watch is not None:
            self.watch.interrupt()

    def _nap(self, timeout: float) -> None:
        self._nudge.wait(timeout)
        self._nudge.clear()

    def wait(self, waiting: Waiting) -> None:
        """Sleep until the emitter's deadline, until enough new items are pending, until a
        window waits to be taken over or a released one is due, or until stopped."""
        store, watch = self.store, self.watch
        wait = waiting.wait
        want = wait.pending if wait.pending is not None else (1 if wait.until is None else None)
        seen = waiting.seen
        version = store.version()
        started = time.monotonic()
        next_full = started + FULL_PROBE_EVERY
        next_reclaim = started + self.reclaim_every
        interval = 0.001
        woke = True  # probe once before the first sleep
        while not self.stop.is_set():
            now = now_ms()
            if wait.until is not None and now >= wait.until:
                return
            retry_at = self.next_retry()
            if retry_at and retry_at < now:
                return  # a window a worker (or a key) released is due for its retry
            if time.monotonic() >= next_reclaim:
                # A window whose consumer died must be taken over even while no new item
                # comes: look for expired claims as often as the main loop does.
                quiet = time.monotonic() - started >= IDLE_AFTER
                next_reclaim = time.monotonic() + (self.reclaim_idle if quiet else self.reclaim_every)
                if self.cursor.reclaimable(now):
                    return
            if want is not None:
                full = time.monotonic() >= next_full
                if full:
                    next_full = time.monotonic() + FULL_PROBE_EVERY
                changed = woke  # without a watch: always (polling)
                if version is not None:
                    current = store.version()
                    changed, version = current != version, current
                if changed or full:
                    ready, newer = self.cursor.probe(waiting.after, seen, want)
                    if ready:
                        return
                    if newer != seen:
                        seen, started, interval = newer, time.monotonic(), 0.001
            # seconds to the deadline or the released window's retry, whichever comes first
            due = [t for t in (wait.until, retry_at + 1 if retry_at else None) if t is not None]
            left = max(0.0, (min(due) - now) / 1000) if due else None
            # A file watch wakes at once; a server's tailable cursor may take a while to
            # answer (FerretDB v1: 15–40 ms), so while news keeps coming the MongoDB
            # consumer polls and leans on the watch once it has been idle a second.
            push = watch is not None and (version is not None or time.monotonic() - started >= IDLE_AFTER)
            if push or want is None:
                # Sleep until a write, the deadline or the next periodic look (full probe,
                # expired leases). A watch that cannot be interrupted is woken from at least
                # every STOP_CHECK to notice stop(); a server's watch is a round trip per
                # wait, so there it waits as long as a poll would.
                sleeper = watch if push and want is not None else None
                if sleeper is None or sleeper.interruptible:
                    look = next_reclaim if want is None else min(next_reclaim, next_full)
                    timeout = max(0.0, look - time.monotonic())
                else:
                    timeout = STOP_CHECK if version is not None else max(STOP_CHECK, self.idle_poll)
                    timeout = min(timeout, max(0.0, next_full - time.monotonic()))
                if left is not None:
                    timeout = min(left, timeout)
                if sleeper is not None:
                    woke = sleeper.wait(timeout)
                else:
                    self._nap(timeout)
                continue
            woke = True
            # The cap doubles with every idle second, from max_poll up to idle_poll.
            idle = time.monotonic() - started
            cap = poll_cap(self.max_poll, self.idle_poll, idle)
            self._nap(interval if left is None else min(interval, left))
            interval = min(interval * 2, cap)
