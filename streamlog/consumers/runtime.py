"""The consumer loop: claim → run → commit, with leases, retries and graceful stop."""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from ..claims import Claimed, Cursor, Waiting
from ..groups import ensure_group
from ..emitters.base import Emitter
from ..errors import ConsumerError
from ..items import now_ms
from ..keyed import KeyedCursor, check_key
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


def poll_cap(max_poll: float, idle_poll: float, idle: float) -> float:
    """The longest sleep (s) between two polls after ``idle`` seconds without news:
    ``max_poll`` for the first ``IDLE_AFTER`` seconds, then doubling every idle second up
    to ``idle_poll`` (every poll is a round trip, which is what idle CPU is made of)."""
    return max_poll if idle < IDLE_AFTER else min(idle_poll, max_poll * 2 ** idle)


class Renewer:
    """Renews the leases of the windows being processed, from one background thread.

    Each window's lease is renewed every third of the lease while it is registered
    (:meth:`start`). ``stop(claimed)`` returns only once no renewal of that window is in
    flight, so a renewal can never land after the commit that follows it.
    """

    def __init__(self, cursor: Cursor):
        self.cursor = cursor
        self.interval = cursor.lease_ms / 3000
        self._due: dict[int, tuple[float, Claimed]] = {}  # id(claimed) → (next renewal, claimed)
        self._cond = threading.Condition()
        self._write = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self, claimed: Claimed) -> None:
        with self._cond:
            self._due[id(claimed)] = (time.monotonic() + self.interval, claimed)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamlog-lease", daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self, claimed: Claimed) -> None:
        with self._cond:
            self._due.pop(id(claimed), None)
            self._cond.notify()
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
                    soonest = min((d for d, _ in self._due.values()), default=None)
                    if soonest is not None and soonest <= time.monotonic():
                        break
                    self._cond.wait(None if soonest is None else soonest - time.monotonic())
                if self._closed:
                    return
                now = time.monotonic()
                due = [c for d, c in self._due.values() if d <= now]
            for claimed in due:
                with self._cond:
                    # Checked and locked together: stop() either removed it first, or waits below.
                    if self._due.get(id(claimed), (0.0, None))[1] is not claimed:
                        continue
                    self._due[id(claimed)] = (now + self.interval, claimed)
                    self._write.acquire()
                try:
                    self.cursor.renew(claimed, now_ms())
                except Exception as exc:  # the commit will tell; a missed renewal is not fatal
                    log.warning("could not renew the lease of window #%d: %s", claimed.claim.seq, exc)
                finally:
                    self._write.release()


def _say(text: str) -> None:
    """Write ``text`` to stderr from a signal handler: straight to the file descriptor, as
    the handler may run while the main thread is inside a write to ``sys.stderr``."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # replaced by an object without a descriptor
        fd = None
    try:
        if fd is None:
            sys.stderr.write(text)
        else:
            os.write(fd, text.encode("utf-8", "replace"))
    except (OSError, ValueError, RuntimeError):  # stderr closed or busy: the stop happens anyway
        pass


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


def check_workers(workers: Any) -> int:
    """``workers`` as a validated int (1 or more), else a :class:`ConsumerError`."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConsumerError(f"workers must be a positive integer, not {workers!r}")
    return workers


class _Workers:
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


class Consumer:
    """Runs ``fn`` on the windows ``emitter`` cuts from ``stream`` for ``group``.

    * ``blocking=True``: runs until :meth:`stop`, SIGINT or SIGTERM; the windows in
      progress are finished and committed first. Idle, it probes for new items with
      a back-off from 1 ms to the backend's ``max_poll`` (5 ms SQLite, 10 ms MongoDB).
    * ``blocking=False``: processes every window ready now (at most ``max_windows``)
      and returns.
    * ``workers=N`` (default 1): up to N windows of the group in flight at once, each run
      on its own thread with its own claim and lease, committed as each finishes. With
      one worker, windows are run and committed one after another in offset order, and a
      failed window is retried (after its backoff) before any later one. With N > 1,
      windows are *claimed* in offset order but may finish and commit in any order, and a
      failed window is retried after its backoff while the others go on; every item is
      still delivered in exactly one window, committed once (at least once across
      crashes, as always). Learners keep sequential state and refuse ``workers > 1``.

    Hooks the function may have: ``fn.attach(stream, group)`` (learners: resume, before the
    cursor exists), ``fn.on_start(consumer)`` (before the first window is claimed, with the
    signal handlers in place: may wait while ``consumer.stopping`` is False, or call
    ``consumer.stop()``), ``fn.sequential = True`` (refuse ``workers > 1``).

    :meth:`run` returns the number of windows processed successfully.
    """

    def __init__(self, stream: "Stream", fn: Callable, emitter: Emitter, *, group: str = "default",
                 start: str | int = "earliest", sink: "Stream | None" = None, blocking: bool = True,
                 lease: float = 30.0, max_retries: int = 3, max_windows: int | None = None,
                 time_field: str | None = None, poll: float | None = None,
                 retry_delay: float = 0.5, retry_max_delay: float = 30.0, workers: int = 1,
                 key: str | None = None):
        if not callable(fn):
            raise ConsumerError(f"the consumer must be callable, not {type(fn).__name__}")
        self.workers = check_workers(workers)
        self.key = check_key(key, fn, emitter)  # keyed windows: one chain per value of this item field
        if self.workers > 1 and (callable(getattr(fn, "attach", None)) or getattr(fn, "sequential", False)):
            raise ConsumerError(
                f"{type(fn).__name__} keeps state that must see windows one at a time, in order: it cannot "
                f"run with workers={workers} (use workers=1; to scale, give each model its own group)")
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
        self._retry_at = 0  # ms: the window this consumer released is retried from then (one worker)
        # (group chain, window seq) → retry time (ms) of windows a worker released (workers > 1)
        self._retries: dict[tuple[str, int], int] = {}
        self._next_retry = 0  # ms: the earliest of those (0: none)
        self._counts = threading.Lock()  # the counters above, updated from worker threads
        # A non-Stream sink (MQTT) gets one window's records at a time: its client is not
        # shared between publishers. Stream sinks are safe from several threads.
        self._sink_lock = threading.Lock() if self.workers > 1 and not hasattr(sink, "store") else None
        self._stop = threading.Event()

    # -- control --------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the windows in progress, commit them and return. Thread-safe."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _install_signals(self) -> dict:
        """A blocking consumer on the main thread handles SIGINT and SIGTERM: the first stops
        after the windows in progress (committed; Ctrl-C says so on stderr); a second exits at
        once — ``SystemExit(128 + signal)``, 130 for Ctrl-C, no traceback — and the leases
        of the windows in progress lapse, so they are delivered again later."""
        if not self.blocking or threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        signalled = []

        def handler(signum, frame):
            if signalled:  # a second signal: stop now
                for sig, old in previous.items():
                    signal.signal(sig, old)
                _say("streamlog: aborted; the windows in progress are delivered again after their lease\n")
                raise SystemExit(128 + signum)
            signalled.append(signum)
            self._stop.set()
            current = "the current window" if self.workers == 1 else "the windows in progress"
            if signum == signal.SIGINT:  # someone at the terminal: say it (a supervisor's SIGTERM: log it)
                _say(f"streamlog: stopping after {current} (Ctrl-C again to abort)\n")
            else:
                log.info("signal %d: stopping after %s", signum, current)

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
                        max_retries=self.max_retries, time_field=self.time_field) if self.key is None else \
            KeyedCursor(self.stream, group, self.emitter, key=self.key, lease=self.lease,
                        max_retries=self.max_retries, time_field=self.time_field)
        self.cursor = cursor
        renewer = Renewer(cursor)
        watch = self.stream.store.watch() if self.blocking else None
        previous = self._install_signals()
        pool = None
        if self.workers > 1:
            pool = _Workers(self.workers, lambda claimed: self._process_parallel(cursor, renewer, claimed),
                            self._stop.set)
        drain = True
        try:
            on_start = getattr(self.fn, "on_start", None)
            if callable(on_start):  # e.g. a predictor waiting for its first model; may stop()
                on_start(self)
            if pool is None:
                self._loop(cursor, renewer, watch)
            else:
                self._loop_parallel(cursor, renewer, watch, pool)
        except BaseException as exc:
            # KeyboardInterrupt/SystemExit: stop now, the leases of windows in flight lapse and
            # another consumer retries them; any other error: finish those windows first.
            drain = isinstance(exc, Exception)
            raise
        finally:
            if pool is not None:
                pool.close(drain)
            renewer.close()
            if watch is not None:
                watch.close()
            for sig, old in previous.items():
                signal.signal(sig, old)
        if pool is not None and pool.error is not None:
            raise pool.error
        return self.processed

    def _loop(self, cursor: Cursor, renewer: Renewer, watch) -> None:
        """One worker: claim → run → commit, one window after another."""
        next_reclaim = 0.0
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
            result, next_reclaim = self._next_window(cursor, now, left, next_reclaim)
            if result is None:
                continue  # lost a race for the next window: try again at once
            if isinstance(result, Waiting):
                if self.blocking:
                    self._wait(result, watch)
                elif self._retries:  # a key's released window is still to be retried: wait for it
                    self._stop.wait(min(STOP_CHECK, max(0.001, (self._next_retry - now + 1) / 1000)))
                else:
                    break
                continue
            retry_at = self._process(cursor, renewer, result)
            if retry_at is None:
                continue
            if isinstance(cursor, KeyedCursor):
                # Only the failing key waits: its later windows are held back until its retry,
                # which the loop takes over (before any claim) once the backoff has passed.
                cursor.hold(result.claim.group, retry_at)
                self._schedule_retry(result, retry_at)
            else:
                self._retry_at = retry_at
                next_reclaim = 0.0  # released for retry: pick it up again after the backoff

    def _next_window(self, cursor: Cursor, now: int, left: int | None,
                     next_reclaim: float) -> tuple[Claimed | Waiting | None, float]:
        """Take over a window that is due for its retry or whose lease expired (looked for
        at most every ``RECLAIM_EVERY`` s, at once when a retry is due), else claim the next
        one. Returns the result (None: lost a race, call again) and the next look's time."""
        result: Claimed | Waiting | None = None
        if self._retry_due(now) or time.monotonic() >= next_reclaim:
            next_reclaim = time.monotonic() + min(RECLAIM_EVERY, self.lease / 4)
            result = self._take_over(cursor, now)
        if result is None:
            result = cursor.claim(now, left)
        return result, next_reclaim

    def _retry_due(self, now: int) -> bool:
        """Whether a window this consumer released (``_retries``) is due for its retry."""
        return bool(self._next_retry) and self._next_retry < now

    def _schedule_retry(self, claimed: Claimed, retry_at: int) -> None:
        with self._counts:
            self._retries[(claimed.claim.group, claimed.claim.seq)] = retry_at
            self._next_retry = min(self._retries.values())

    def _take_over(self, cursor: Cursor, now: int) -> Claimed | None:
        """Reclaim the oldest expired or released window of the group, and forget the
        retries that are due: reclaimed here, or already taken over by another consumer."""
        result = cursor.reclaim(now)
        if self._retries:
            with self._counts:
                if result is not None:
                    self._retries.pop((result.claim.group, result.claim.seq), None)
                else:
                    for window in [w for w, at in self._retries.items() if at < now]:
                        self._retries.pop(window, None)
                self._next_retry = min(self._retries.values(), default=0)
        return result

    def _loop_parallel(self, cursor: Cursor, renewer: Renewer, watch, pool: _Workers) -> None:
        """``workers > 1``: claim while fewer than ``workers`` windows are in flight; the
        threads run, commit or release them. All claiming stays on this thread (the
        cursor caches the chain head), so windows are claimed in offset order."""
        next_reclaim = 0.0
        while not self._stop.is_set():
            if pool.full():
                pool.wait(STOP_CHECK)
                continue
            left = None if self.max_windows is None else self.max_windows - self.processed - pool.windows
            if left is not None and left <= 0:
                if not pool.in_flight:
                    break
                pool.wait(STOP_CHECK)  # a window in flight may fail and leave room
                continue
            now = now_ms()
            result, next_reclaim = self._next_window(cursor, now, left, next_reclaim)
            if result is None:
                continue  # lost a race for the next window: try again at once
            if isinstance(result, Claimed):
                pool.submit(result)
                continue
            if self.blocking:
                self._wait(result, watch)
            elif pool.in_flight or self._retries:
                # Nothing new is ready, but a window in flight may yet fail and be retried
                # here: wait for it (or for a released window's backoff) before returning.
                wake = (self._next_retry - now + 1) / 1000 if self._next_retry else STOP_CHECK
                timeout = min(STOP_CHECK, max(0.001, wake))
                if pool.in_flight:
                    pool.wait(timeout)
                else:
                    self._stop.wait(timeout)
            else:
                break

    def backoff(self, attempt: int) -> float:
        """Seconds before retrying a window whose attempt ``attempt`` failed: exponential
        (``retry_delay · 2^(attempt-1)``, at most ``retry_max_delay``) with jitter (× 0.5–1)."""
        if self.retry_delay <= 0:
            return 0.0
        return min(self.retry_max_delay, self.retry_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def _dead_letter(self, cursor: Cursor, claimed: Claimed, error: str, attempts: int | None = None) -> None:
        if cursor.dead_letter(claimed, error, attempts):
            with self._counts:
                self.dead_lettered += len(claimed.batch)
                self.dead_windows += 1
        else:
            with self._counts:
                self.fenced += 1

    def _process_parallel(self, cursor: Cursor, renewer: Renewer, claimed: Claimed) -> None:
        retry_at = self._process(cursor, renewer, claimed)
        if retry_at is not None:
            self._schedule_retry(claimed, retry_at)

    def _process(self, cursor: Cursor, renewer: Renewer, claimed: Claimed) -> int | None:
        """Run, then commit (or dead-letter) one claimed window; when it failed and may be
        retried, release it and return the time (ms) from which it is retried."""
        if not cursor.allowed(claimed.claim.attempt):
            # Taken over after the last allowed attempt died with its process: do not run it again.
            self._dead_letter(cursor, claimed, claimed.previous_error or "too many attempts",
                              attempts=claimed.claim.attempt - 1)
            return None
        renewer.start(claimed)
        done = 0
        try:
            for window in claimed.windows(self.stream):
                result = self.fn(window)
                if self.sink is not None and result is not None:
                    if self._sink_lock is None:
                        self.sink.extend(_as_items(result))
                    else:
                        with self._sink_lock:
                            self.sink.extend(_as_items(result))
                done += 1
        except Exception as exc:
            renewer.stop(claimed)
            error = f"{type(exc).__name__}: {exc}"
            with self._counts:
                self.failed += 1
            c = claimed.claim
            if not cursor.allowed(c.attempt + 1):
                log.error("window %s/%s #%d failed on attempt %d of %d:\n%s", c.stream, c.group, c.seq,
                          c.attempt, self.max_retries + 1, traceback.format_exc())
                self._dead_letter(cursor, claimed, error)
                return None
            delay = self.backoff(c.attempt)
            log.warning("window %s/%s #%d failed on attempt %d of %d (retry in %.2f s): %s", c.stream,
                        c.group, c.seq, c.attempt, self.max_retries + 1, delay, error)
            retry_at = now_ms() + round(delay * 1000)
            cursor.release(claimed, error, retry_at)
            return retry_at
        except BaseException:
            renewer.stop(claimed)  # KeyboardInterrupt/SystemExit: the lease lapses, another consumer retries
            raise
        renewer.stop(claimed)
        if cursor.commit(claimed):
            with self._counts:
                self.processed += done
        else:
            with self._counts:
                self.fenced += 1
        return None

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
            if self._next_retry and now > self._next_retry:
                return  # a window a worker (or a key) released is due for its retry
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
            cap = poll_cap(self.max_poll, self.idle_poll, idle)
            time.sleep(interval if left is None else min(interval, left))
            interval = min(interval * 2, cap)
