"""One background thread that renews the leases of every window in flight."""

from __future__ import annotations

import logging
import threading
import time

from ..items import now_ms
from .cursor import DeliveryCursor
from .windows import Claimed

log = logging.getLogger("streamlog")


class Renewer:
    """Renews the leases of the windows being processed, from one background thread.

    Each window's lease is renewed every third of the lease while it is registered
    (:meth:`start`). ``stop(claimed)`` returns only once no renewal of that window is in
    flight, so a renewal can never land after the commit that follows it.
    """

    def __init__(self, cursor: DeliveryCursor):
        self.cursor = cursor
        self.interval = cursor.lease_ms / 3000
        self._due: dict[int, tuple[float, Claimed]] = {}  # id(claimed) → (next renewal, claimed)
        self._cond = threading.Condition()
        self._write = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        # When the thread wakes next (monotonic): a window registered later than that needs
        # no wake-up — with windows done one after another, no thread switch per window.
        self._wakes_at = 0.0

    def start(self, claimed: Claimed) -> None:
        with self._cond:
            due = time.monotonic() + self.interval
            self._due[id(claimed)] = (due, claimed)
            if self._thread is None:
                self._wakes_at = due
                self._thread = threading.Thread(target=self._run, name="streamlog-lease", daemon=True)
                self._thread.start()
            elif due < self._wakes_at:
                self._cond.notify()

    def stop(self, claimed: Claimed) -> None:
        with self._cond:  # no wake-up: the thread finds nothing due and sleeps on
            self._due.pop(id(claimed), None)
        with self._write:  # wait out a renewal in flight
            pass

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._due.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = time.monotonic()
                    # With nothing registered, sleep one interval (a window registered meanwhile
                    # is due no earlier than that).
                    soonest = min((d for d, _ in self._due.values()), default=now + self.interval)
                    if soonest <= now:
                        break
                    self._wakes_at = soonest
                    self._cond.wait(soonest - now)
                if self._closed:
                    return
                now = time.monotonic()
                due = [c for d, c in self._due.values() if d <= now]
            for claimed in due:
                with self._cond:
                    # Checked and locked together: stop() either removed it first, or waits below.
                    entry = self._due.get(id(claimed))
                    if entry is None or entry[1] is not claimed:
                        continue
                    self._due[id(claimed)] = (now + self.interval, claimed)
                    self._write.acquire()
                try:
                    self.cursor.renew(claimed, now_ms())
                except Exception as exc:  # the commit will tell; a missed renewal is not fatal
                    log.warning("could not renew the lease of window #%d: %s", claimed.claim.seq, exc)
                finally:
                    self._write.release()
