"""The consumer loop: claim → run → commit, with leases, retries and graceful stop."""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable

from ..claims import Claimed, Cursor, Waiting
from ..groups import ensure_group
from ..emitters.base import Emitter
from ..errors import ConsumerError
from ..items import now_ms
from ..names import dead_letter_stream

if TYPE_CHECKING:  # pragma: no cover
    from ..stream import Stream

log = logging.getLogger("streamlog")

#: how often a consumer looks for windows whose lease expired (seconds, at most)
RECLAIM_EVERY = 1.0
#: an idle consumer probes at least this often even when the change token says nothing
#: changed (seconds): a safety net under the token and the file watch
FULL_PROBE_EVERY = 1.0
#: after this long without new items a polling consumer backs off to ``idle_poll`` (seconds)
IDLE_AFTER = 1.0
#: a sleeping consumer checks for stop() at least this often (seconds)
STOP_CHECK = 0.1


class Renewer:
    """Renews the lease of the window being processed, from a background thread.

    ``stop()`` returns only once no renewal is in flight, so a renewal can never
    land after the commit that follows it.
    """

    def __init__(self, cursor: Cursor):
        self.cursor = cursor
        self.interval = cursor.lease_ms / 3000
        self._claimed: Claimed | None = None
        self._cond = threading.Condition()
        self._write = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self, claimed: Claimed) -> None:
        with self._cond:
            self._claimed = claimed
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamlog-lease", daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._claimed = None
            self._cond.notify()
        with self._write:  # wait out a renewal in flight
            pass

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._claimed = None
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._claimed is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                claimed = self._claimed
                self._cond.wait(self.interval)
                if self._claimed is not claimed or claimed is None:
                    continue
                self._write.acquire()
            try:
                self.cursor.renew(claimed, now_ms())
            except Exception as exc:  # the commit will tell; a missed renewal is not fatal
                log.warning("could not renew the lease of window #%d: %s", claimed.claim.seq, exc)
            finally:
                self._write.release()


def _as_items(result: Any) -> list[dict]:
    if isinstance(result, dict):
        return [result]
    if hasattr(result, "to_dict") and hasattr(result, "columns"):
        return result.to_dict("records")
    if isinstance(result, (list, tuple)) and all(isinstance(r, dict) for r in result):
        return list(result)
    raise ConsumerError(
        f"a consumer with sink= must return a dict, a list of dicts, a DataFrame or None, "
        f"not {type(result).__name__}")


class Consumer:
    """Runs ``fn`` on the windows ``emitter`` cuts from ``stream`` for ``group``.

    * ``blocking=True``: runs until :meth:`stop`, SIGINT or SIGTERM; the window in
      progress is finished and committed first. Idle, it probes for new items with
      a back-off from 1 ms to the backend's ``max_poll`` (5 ms SQLite, 10 ms MongoDB).
    * ``blocking=False``: processes every window ready now (at most ``max_windows``)
      and returns.

    :meth:`run` returns the number of windows processed successfully.
    """

    def __init__(self, stream: "Stream", fn: Callable, emitter: Emitter, *, group: str = "default",
                 start: str | int = "earliest", sink: "Stream | None" = None, blocking: bool = True,
                 lease: float = 30.0, max_retries: int = 3, max_windows: int | None = None,
                 time_field: str | None = None, poll: float | None = None,
                 retry_delay: float = 0.5, retry_max_delay: float = 30.0):
        if not callable(fn):
            raise ConsumerError(f"the consumer must be callable, not {type(fn).__name__}")
        self.stream = stream
        self.fn = fn
        self.emitter = emitter
        self.group_name = group
        self.start = start
        self.sink = sink
        self.blocking = blocking
        self.lease = lease
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.max_windows = max_windows
        self.time_field = time_field
        self.max_poll = poll if poll is not None else stream.store.max_poll
        self.idle_poll = max(self.max_poll, poll if poll is not None else stream.store.idle_poll)
        self.processed = 0
        self.failed = 0
        #: items moved to the dead-letter stream by this run, and in how many windows
        self.dead_lettered = 0
        self.dead_windows = 0
        #: where dead letters go: ``<stream>.dead``
        self.dead_stream = dead_letter_stream(stream.name)
        #: windows whose commit was fenced off: another attempt took them over
        self.fenced = 0
        self._retry_at = 0  # ms: the window this consumer released is retried from then
        self._stop = threading.Event()

    # -- control --------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the current window, commit it and return. Thread-safe."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _install_signals(self) -> dict:
        if not self.blocking or threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum, frame):
            if self._stop.is_set():  # a second signal: stop now
                for sig, old in previous.items():
                    signal.signal(sig, old)
                raise KeyboardInterrupt
            log.info("signal %d: finishing the current window, then stopping", signum)
            self._stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        group = ensure_group(self.stream, self.group_name, self.start)
        attach = getattr(self.fn, "attach", None)
        if callable(attach):  # learners resume their checkpoint before the first window
            attach(self.stream, group.name)
        cursor = Cursor(self.stream, group, self.emitter, lease=self.lease,
                        max_retries=self.max_retries, time_field=self.time_field)
        self.cursor = cursor
        renewer = Renewer(cursor)
        watch = self.stream.store.watch() if self.blocking else None
        previous = self._install_signals()
        next_reclaim = 0.0
        try:
            while not self._stop.is_set():
                left = None if self.max_windows is None else self.max_windows - self.processed
                if left is not None and left <= 0:
                    break
                now = now_ms()
                if self._retry_at:
                    # Retry our failed window after its backoff, before any later window:
                    # windows keep their offset order. (Reclaimable once lease < now.)
                    if self._retry_at >= now:
                        self._stop.wait((self._retry_at - now + 1) / 1000)
                        continue
                    self._retry_at = 0
                    next_reclaim = 0.0
                result: Claimed | Waiting | None = None
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + min(RECLAIM_EVERY, self.lease / 4)
                    result = cursor.reclaim(now)
                if result is None:
                    result = cursor.claim(now, left)
                if result is None:
                    continue  # lost a race for the next window: try again at once
                if isinstance(result, Waiting):
                    if not self.blocking:
                        break
                    self._wait(result, watch)
                    continue
                if not self._process(cursor, renewer, result):
                    next_reclaim = 0.0  # released for retry: pick it up again after the backoff
        finally:
            renewer.close()
            if watch is not None:
                watch.close()
            for sig, old in previous.items():
                signal.signal(sig, old)
        return self.processed

    def backoff(self, attempt: int) -> float:
        """Seconds before retrying a window whose attempt ``attempt`` failed: exponential
        (``retry_delay · 2^(attempt-1)``, at most ``retry_max_delay``) with jitter (× 0.5–1)."""
        if self.retry_delay <= 0:
            return 0.0
        return min(self.retry_max_delay, self.retry_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def _dead_letter(self, cursor: Cursor, claimed: Claimed, error: str, attempts: int | None = None) -> None:
        if cursor.dead_letter(claimed, error, attempts):
            self.dead_lettered += len(claimed.batch)
            self.dead_windows += 1
        else:
            self.fenced += 1

    def _process(self, cursor: Cursor, renewer: Renewer, claimed: Claimed) -> bool:
        if not cursor.allowed(claimed.claim.attempt):
            # Taken over after the last allowed attempt died with its process: do not run it again.
            self._dead_letter(cursor, claimed, claimed.previous_error or "too many attempts",
                              attempts=claimed.claim.attempt - 1)
            return True
        renewer.start(claimed)
        done = 0
        try:
            for window in claimed.windows(self.stream):
                result = self.fn(window)
                if self.sink is not None and result is not None:
                    self.sink.extend(_as_items(result))
                done += 1
        except Exception as exc:
            renewer.stop()
            error = f"{type(exc).__name__}: {exc}"
            self.failed += 1
            c = claimed.claim
            if not cursor.allowed(c.attempt + 1):
                log.error("window %s/%s #%d failed on attempt %d of %d:\n%s", c.stream, c.group, c.seq,
                          c.attempt, self.max_retries + 1, traceback.format_exc())
                self._dead_letter(cursor, claimed, error)
                return True
            delay = self.backoff(c.attempt)
            log.warning("window %s/%s #%d failed on attempt %d of %d (retry in %.2f s): %s", c.stream,
                        c.group, c.seq, c.attempt, self.max_retries + 1, delay, error)
            retry_at = now_ms() + round(delay * 1000)
            cursor.release(claimed, error, retry_at)
            self._retry_at = retry_at
            return False
        except BaseException:
            renewer.stop()  # KeyboardInterrupt/SystemExit: the lease lapses, another consumer retries
            raise
        renewer.stop()
        if cursor.commit(claimed):
            self.processed += done
        else:
            self.fenced += 1
        return True

    def _wait(self, waiting: Waiting, watch) -> None:
        """Sleep until the emitter's deadline, or until enough new items are pending.

        With a file watch (embedded backend on Linux) the consumer sleeps until another
        process writes the database. Otherwise it probes with a back-off from 1 ms to the
        store's ``max_poll`` (10 ms on MongoDB); once nothing has arrived for a second the
        cap doubles every idle second up to ``idle_poll`` (100 ms): every probe costs the
        client a driver round trip, which is what an idle consumer's CPU is made of.
        """
        store = self.stream.store
        wait = waiting.wait
        want = wait.pending if wait.pending is not None else (1 if wait.until is None else None)
        seen = waiting.seen
        version = store.version()
        started = time.monotonic()
        next_full = started + FULL_PROBE_EVERY
        reclaim_every = min(RECLAIM_EVERY, self.lease / 4)
        next_reclaim = started + reclaim_every
        interval = 0.001
        while not self._stop.is_set():
            now = now_ms()
            if wait.until is not None and now >= wait.until:
                return
            if time.monotonic() >= next_reclaim:
                # A window whose consumer died must be taken over even while no new item
                # comes: look for expired claims as often as the main loop does.
                next_reclaim = time.monotonic() + reclaim_every
                if self.cursor.reclaimable(now):
                    return
            if want is not None:
                full = time.monotonic() >= next_full
                if full:
                    next_full = time.monotonic() + FULL_PROBE_EVERY
                changed = True
                if version is not None:
                    current = store.version()
                    changed, version = current != version, current
                if changed or full:
                    ready, newer = self.cursor.probe(waiting.after, seen, want)
                    if ready:
                        return
                    if newer != seen:
                        seen, started, interval = newer, time.monotonic(), 0.001
            left = None if wait.until is None else max(0.0, (wait.until - now) / 1000)
            if watch is not None or want is None:
                # Sleep until a write (or the deadline); wake at least every STOP_CHECK to
                # notice stop() and to run the periodic full probe.
                timeout = STOP_CHECK if left is None else min(left, STOP_CHECK)
                if watch is not None and want is not None:
                    watch.wait(min(timeout, max(0.0, next_full - time.monotonic())))
                else:
                    self._stop.wait(timeout)
                continue
            # The cap doubles with every idle second, from max_poll up to idle_poll.
            idle = time.monotonic() - started
            cap = self.max_poll if idle < IDLE_AFTER else min(self.idle_poll, self.max_poll * 2 ** idle)
            time.sleep(interval if left is None else min(interval, left))
            interval = min(interval * 2, cap)
