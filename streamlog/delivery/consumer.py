"""The consumer runtime: claim → run → commit, with leases, retries, dead letters, idle
waiting and graceful stop.

A window's path: :meth:`Consumer.run` opens a cursor (:mod:`streamlog.delivery.cursor`, or
:mod:`streamlog.delivery.keyed` with ``key=``) and loops: the cursor claims (or takes
over) a window and returns it as a :class:`~streamlog.delivery.windows.Claimed`, whose
``windows()`` are the :class:`~streamlog.window.Window` objects the function receives;
then the cursor commits, releases or dead-letters it. The loop asks the cursor what a
failure holds back (:meth:`~streamlog.delivery.cursor.DeliveryCursor.hold`), never its
type. Leases are renewed by one :class:`~streamlog.delivery.renewer.Renewer` thread;
``workers=N`` runs windows on a :class:`~streamlog.delivery.workers.WorkerPool`; idle,
the consumer sleeps in :class:`~streamlog.delivery.idle.IdleWait`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable

from ..emitters.base import Emitter
from ..errors import ConsumerError
from ..hooks import Attaches, ConnectedSink, OnceSink, Records, SavesPerClaim, StartsUp, runs_in_order
from ..items import now_ms
from ..names import dead_letter_stream
from ..stopping import graceful_stop, say
from .cursor import Cursor, DeliveryCursor, Waiting
from .groups import ensure_group
from .history import reshows_history
from .idle import RECLAIM_EVERY, STOP_CHECK, IdleWait
from .keyed import KeyedCursor
from .keys import check_key
from .once import window_key
from .renewer import Renewer
from .windows import Claimed
from .workers import WorkerPool, check_workers

if TYPE_CHECKING:  # pragma: no cover
    from ..stream import Stream

log = logging.getLogger("streamlog")


def _as_items(result: Any) -> list[dict]:
    if isinstance(result, dict):
        return [result]
    if isinstance(result, (list, tuple)) and all(isinstance(r, dict) for r in result):
        return list(result)
    if isinstance(result, Records):  # a runtime Protocol check: slow, so after the common cases
        return result.to_dict("records")
    raise ConsumerError(
        f"a consumer with sink= must return a dict, a list of dicts, a DataFrame or None, "
        f"not {type(result).__name__}")


def check_windows_per_claim(value: Any, key: str | None, emitter: Emitter) -> int:
    """``windows_per_claim`` as a validated int; more than 1 needs unkeyed windows that do
    not look back (a key chain's and a sliding window's claims are one window each)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConsumerError(f"windows_per_claim must be a positive integer, not {value!r}")
    if value > 1 and key is not None:
        raise ConsumerError("windows_per_claim > 1 does not work with key=: each key's windows are claimed one "
                            "at a time")
    if value > 1 and reshows_history(emitter):
        raise ConsumerError(f"windows_per_claim > 1 does not work with {type(emitter).__name__}: sliding windows "
                            "are claimed one at a time")
    return value


class Consumer:
    """Runs ``fn`` on the windows ``emitter`` cuts from ``stream`` for ``group``.

    * ``blocking=True``: runs until :meth:`stop`, SIGINT or SIGTERM; the windows in
      progress are finished and committed first. Idle, it probes for new items with
      a back-off from 1 ms to the backend's ``max_poll`` (5 ms SQLite, 3 ms MongoDB).
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
    * ``sink=`` a stream: the records a claim's windows return are appended once, after its
      last window ran, under the window's idempotency key (:mod:`streamlog.delivery.once`):
      exactly once whatever crashes and retries happen — the first attempt that appended
      them stands. Dead letters, likewise, once per window. A URL sink (MQTT) gets each
      window's records as the function returns them: at least once.

    Hooks the function may have (protocols of :mod:`streamlog.hooks`): ``fn.attach(stream,
    group)`` (learners: resume, before the cursor exists), ``fn.on_start(consumer)`` (before
    the first window is claimed, with the signal handlers in place: may wait while
    ``consumer.stopping`` is False, or call ``consumer.stop()``), ``fn.sequential = True``
    (refuse ``workers > 1``).

    :meth:`run` returns the number of windows processed successfully.
    """

    def __init__(self, stream: "Stream", fn: Callable, emitter: Emitter, *, group: str = "default",
                 start: str | int = "earliest", sink: "Stream | None" = None, blocking: bool = True,
                 lease: float = 30.0, max_retries: int = 3, max_windows: int | None = None,
                 time_field: str | None = None, poll: float | None = None,
                 retry_delay: float = 0.5, retry_max_delay: float = 30.0, workers: int = 1,
                 key: str | None = None, windows_per_claim: int = 1):
        if not callable(fn):
            raise ConsumerError(f"the consumer must be callable, not {type(fn).__name__}")
        self.workers = check_workers(workers)
        self.key = check_key(key, fn, emitter)  # keyed windows: one chain per value of this item field
        self.windows_per_claim = check_windows_per_claim(windows_per_claim, self.key, emitter)
        if self.workers > 1 and runs_in_order(fn):
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
        self._sink_lock = threading.Lock() if self.workers > 1 and isinstance(sink, ConnectedSink) else None
        #: a stream sink gets each window's records exactly once (:mod:`streamlog.delivery.once`)
        self._once = isinstance(sink, OnceSink) and not isinstance(sink, ConnectedSink)
        self._stop = threading.Event()
        self._idle: IdleWait | None = None  # while running: interrupted by stop() and new retries
        self._flush: Callable[[], None] | None = None  # while running: saves a learner's state per claim

    # -- control --------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the windows in progress, commit them and return. Thread-safe."""
        self._stop.set()
        if self._idle is not None:
            self._idle.interrupt()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _signals(self) -> contextlib.AbstractContextManager:
        """A blocking consumer on the main thread handles SIGINT and SIGTERM
        (:func:`streamlog.stopping.graceful_stop`): the first stops after the windows in
        progress (committed; Ctrl-C says so on stderr, a SIGTERM is logged); a second exits
        at once — ``SystemExit(128 + signal)``, 130 for Ctrl-C, no traceback — and the
        leases of the windows in progress lapse, so they are delivered again later."""
        if not self.blocking:
            return contextlib.nullcontext()
        current = "the current window" if self.workers == 1 else "the windows in progress"

        def abort(signum: int) -> None:
            say("streamlog: aborted; the windows in progress are delivered again after their lease\n")
            raise SystemExit(128 + signum)

        return graceful_stop(lambda signum: self.stop(), abort=abort, notice=f"stopping after {current}")

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        group = ensure_group(self.stream, self.group_name, self.start)
        if isinstance(self.fn, Attaches):  # learners resume their checkpoint before the first window
            self.fn.attach(self.stream, group.name)
        saves = self.fn if self.windows_per_claim > 1 and isinstance(self.fn, SavesPerClaim) else None
        if saves is not None:  # one checkpoint per claim, saved before its commit
            saves.defer_checkpoints(True)
            self._flush = saves.flush_checkpoint
        cursor: DeliveryCursor
        if self.key is None:
            cursor = Cursor(self.stream, group, self.emitter, lease=self.lease, max_retries=self.max_retries,
                            time_field=self.time_field, windows_per_claim=self.windows_per_claim)
        else:
            cursor = KeyedCursor(self.stream, group, self.emitter, key=self.key, lease=self.lease,
                                 max_retries=self.max_retries, time_field=self.time_field)
        self.cursor = cursor
        renewer = Renewer(cursor)
        watch = self.stream.store.watch(self.stream.name) if self.blocking else None
        idle = IdleWait(cursor, self.stream.store, watch, self._stop, lease=self.lease, max_poll=self.max_poll,
                        idle_poll=self.idle_poll, next_retry=lambda: self._next_retry)
        self._idle = idle
        with self._signals():
            pool = None
            if self.workers > 1:
                pool = WorkerPool(self.workers, lambda claimed: self._process_parallel(cursor, renewer, claimed),
                                  self.stop)
            drain = True
            try:
                if isinstance(self.fn, StartsUp):  # e.g. a predictor waiting for its first model; may stop()
                    self.fn.on_start(self)
                if pool is None:
                    self._loop(cursor, renewer, idle)
                else:
                    self._loop_parallel(cursor, renewer, idle, pool)
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
                if saves is not None:
                    saves.defer_checkpoints(False)
                    self._flush = None
                self.stream.store.flush(retry=False)  # closes a store batched (MongoDB)
        if pool is not None and pool.error is not None:
            raise pool.error
        return self.processed

    def _loop(self, cursor: DeliveryCursor, renewer: Renewer, idle: IdleWait) -> None:
        """One worker: claim → run → commit, one window after another. In a backlog the
        commit also claims the next window (:meth:`DeliveryCursor.commit_and_claim`): one
        store write per window instead of two. A window claimed that way is run even when
        stop() came meanwhile — it is in progress."""
        next_reclaim = 0.0
        claimed_next: Claimed | Waiting | None = None
        result: Claimed | Waiting | None
        while True:
            left = None if self.max_windows is None else self.max_windows - self.processed
            if isinstance(claimed_next, Claimed):
                result, claimed_next = claimed_next, None  # in progress: run it even when stopping
            else:
                if self._stop.is_set() or (left is not None and left <= 0):
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
                if isinstance(claimed_next, Waiting):
                    result, claimed_next = claimed_next, None  # what the emitter said at the last commit
                else:
                    result, next_reclaim = self._next_window(cursor, now, left, next_reclaim)
                if result is None:
                    continue  # lost a race for the next window: try again at once
                if isinstance(result, Waiting):
                    if self.blocking:
                        idle.wait(result)
                    elif self._retries:  # a key's released window is still to be retried: wait for it
                        self._stop.wait(min(STOP_CHECK, max(0.001, (self._next_retry - now + 1) / 1000)))
                    else:
                        break
                    continue
            retry_at, claimed_next = self._process(cursor, renewer, result, self._may_fold(next_reclaim), left)
            if retry_at is None:
                continue
            if cursor.hold(result, retry_at):
                # Only the failing window's chain (a key) waits: the loop takes its retry over
                # (before any claim) once the backoff has passed.
                self._schedule_retry(result, retry_at)
            else:
                self._retry_at = retry_at
                next_reclaim = 0.0  # released for retry: pick it up again after the backoff

    def _may_fold(self, next_reclaim: float) -> bool:
        """Whether the commit of the window about to run may claim the next one: not when
        stopping, when the reclaim scan is due (expired windows come first) or a released
        window awaits its retry (and, decided at the commit, not past ``max_windows``)."""
        return (not self._stop.is_set() and time.monotonic() < next_reclaim and not self._retries
                and not self._retry_at)

    def _next_window(self, cursor: DeliveryCursor, now: int, left: int | None,
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
        if self._idle is not None:
            self._idle.interrupt()  # the claiming thread may be asleep: the retry is due before it wakes

    def _take_over(self, cursor: DeliveryCursor, now: int) -> Claimed | None:
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

    def _loop_parallel(self, cursor: DeliveryCursor, renewer: Renewer, idle: IdleWait, pool: WorkerPool) -> None:
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
                idle.wait(result)
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

    def _dead_letter(self, cursor: DeliveryCursor, claimed: Claimed, error: str, attempts: int | None = None) -> None:
        if cursor.dead_letter(claimed, error, attempts):
            with self._counts:
                self.dead_lettered += len(claimed.batch)
                self.dead_windows += 1
        else:
            with self._counts:
                self.fenced += 1

    def _process_parallel(self, cursor: DeliveryCursor, renewer: Renewer, claimed: Claimed) -> None:
        retry_at, _ = self._process(cursor, renewer, claimed)
        if retry_at is not None:
            self._schedule_retry(claimed, retry_at)

    def _process(self, cursor: DeliveryCursor, renewer: Renewer, claimed: Claimed, fold: bool = False,
                 left: int | None = None) -> tuple[int | None, Claimed | Waiting | None]:
        """Run, then commit (or dead-letter) one claimed window. Returns the time (ms) from
        which it is retried when it failed and was released (else None), and with ``fold``
        what the commit claimed next (:meth:`DeliveryCursor.commit_and_claim`; ``left``:
        the windows still allowed, this one included)."""
        if not cursor.allowed(claimed.claim.attempt):
            # Taken over after the last allowed attempt died with its process: do not run it again.
            self._dead_letter(cursor, claimed, claimed.previous_error or "too many attempts",
                              attempts=claimed.claim.attempt - 1)
            return None, None
        renewer.start(claimed)
        done = 0
        records: list[dict] = []  # a stream sink's: written once, after the claim's last window
        try:
            for window in claimed.windows(self.stream):
                result = self.fn(window)
                if self.sink is not None and result is not None:
                    if self._once:
                        records += _as_items(result)
                    elif self._sink_lock is None:
                        self.sink.extend(_as_items(result))
                    else:
                        with self._sink_lock:
                            self.sink.extend(_as_items(result))
                done += 1
            if self._flush is not None:
                self._flush()
            if records and self.sink is not None:
                # Exactly once per window: the key is the window's, the same for every attempt
                # (a takeover after a crash included); the first attempt's records stand.
                self.sink.extend_once(window_key(self.stream, claimed.claim), records, check_items=False)
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
                return None, None
            delay = self.backoff(c.attempt)
            log.warning("window %s/%s #%d failed on attempt %d of %d (retry in %.2f s): %s", c.stream,
                        c.group, c.seq, c.attempt, self.max_retries + 1, delay, error)
            retry_at = now_ms() + round(delay * 1000)
            cursor.release(claimed, error, retry_at)
            return retry_at, None
        except BaseException:
            renewer.stop(claimed)  # KeyboardInterrupt/SystemExit: the lease lapses, another consumer retries
            raise
        renewer.stop(claimed)
        claimed_next: Claimed | Waiting | None = None
        if fold and not self._stop.is_set() and (left is None or left > done):
            committed, claimed_next = cursor.commit_and_claim(claimed, now_ms(), None if left is None else left - done)
        else:
            committed = cursor.commit(claimed)
        with self._counts:
            if committed:
                self.processed += done
            else:
                self.fenced += 1
        return None, claimed_next

