"""One watcher per app that tells followers when there is news: no per-follower polling.

Followers (SSE connections) subscribe to a *key* — the items of a stream, or the
checkpoints of a model — and sleep on an asyncio event. A single thread per app probes
the keys that have subscribers and wakes exactly the followers whose key changed:

* embedded backend (Linux): the thread sleeps on the database file's inotify watch
  (:meth:`Store.watch`) and probes only when another connection committed — idle cost
  nil, wake-up well under a millisecond; it also probes once a second regardless;
* MongoDB: it polls, one cheap query per watched key, every 1 ms rising to the store's
  ``max_poll`` (5 ms SQLite, 3 ms MongoDB) while news keeps coming, up to ``idle_poll`` (100 ms) after a
  second of quiet — the consumer runtime's schedule (:mod:`streamlog.polling`), paid
  once per app however many followers there are.

A follower records :meth:`Hub.version` *before* it reads, and waits for a different
one: an item that lands after its read always wakes it (no lost wake-up). A key's first
probe always counts as a change, so a fresh subscription costs at most one spurious
wake-up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Hashable

from ..errors import StreamlogError
from ..polling import FULL_PROBE_EVERY, poll_cap

log = logging.getLogger("streamlog.serve")

_MISSING = object()


class Hub:
    """Subscriptions of one app's followers, and the watcher thread that wakes them."""

    def __init__(self, store):
        self.store = store
        self._probes: dict[Hashable, Callable[[], Any]] = {}
        self._counts: dict[Hashable, int] = {}
        self._versions: dict[Hashable, int] = {}
        self._events: dict[Hashable, asyncio.Event] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._closing: asyncio.Event | None = None

    # -- the followers' side (event loop) ---------------------------------------

    def subscribe(self, key: Hashable, probe: Callable[[], Any]) -> None:
        """Watch ``key`` with ``probe`` (run in the watcher thread; a changed result wakes
        the key's followers). Pair every call with :meth:`unsubscribe`."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._closing = asyncio.Event()
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            self._probes[key] = probe
            self._versions.setdefault(key, 0)
            self._events.setdefault(key, asyncio.Event())
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="streamlog-serve-hub", daemon=True)
            self._thread.start()
        self._wakeup.set()

    def unsubscribe(self, key: Hashable) -> None:
        with self._lock:
            left = self._counts.get(key, 0) - 1
            if left > 0:
                self._counts[key] = left
                return
            for table in (self._counts, self._probes, self._versions, self._events):
                table.pop(key, None)

    def version(self, key: Hashable) -> int:
        return self._versions.get(key, 0)

    @property
    def followers(self) -> int:
        return sum(self._counts.values())

    async def wait(self, key: Hashable, version: int, timeout: float) -> bool:
        """Until ``key``'s version differs from ``version`` (True), ``timeout`` passes
        (False) or the hub closes (True; check :attr:`closed`)."""
        if self.closed or self._versions.get(key, 0) != version:
            return True
        event = self._events.get(key)
        if event is None:
            return True
        closing = asyncio.ensure_future(self._closing.wait())
        changed = asyncio.ensure_future(event.wait())
        try:
            done, _ = await asyncio.wait((changed, closing), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            closing.cancel()
        return bool(done)

    def _notify(self, keys: list[Hashable]) -> None:
        for key in keys:
            if key in self._versions:
                self._versions[key] += 1
                event = self._events.get(key)
                if event is not None:
                    self._events[key] = asyncio.Event()  # later waiters wait for the next change
                    event.set()

    def close(self) -> None:
        """End every follower (server shutdown) and stop the watcher thread."""
        self.closed = True
        if self._closing is not None:
            self._closing.set()
        self._wakeup.set()

    # -- the watcher thread -----------------------------------------------------

    def _run(self) -> None:
        store = self.store
        watch = None
        try:
            watch = store.watch()
        except Exception:  # noqa: BLE001 - no watch: poll instead
            watch = None
        known: dict[Hashable, Any] = {}
        interval = 0.001
        last_news = time.monotonic()
        try:
            while not self.closed:
                with self._lock:
                    probes = dict(self._probes)
                if not probes:
                    known.clear()
                    self._wakeup.wait()
                    self._wakeup.clear()
                    continue
                changed = []
                for key, probe in probes.items():
                    try:
                        value = probe()
                    except StreamlogError as exc:  # gone, unreachable: followers find out when they read
                        value = ("error", type(exc).__name__)
                    except Exception as exc:  # noqa: BLE001 - keep watching; log once per kind
                        value = ("error", type(exc).__name__)
                    if known.get(key, _MISSING) != value:
                        known[key] = value
                        changed.append(key)
                for key in [k for k in known if k not in probes]:
                    del known[key]
                if changed and self._loop is not None:
                    last_news = time.monotonic()
                    interval = 0.001
                    try:
                        self._loop.call_soon_threadsafe(self._notify, changed)
                    except RuntimeError:  # the loop is closed: the app is gone
                        return
                if watch is not None:
                    watch.wait(FULL_PROBE_EVERY)
                    continue
                cap = poll_cap(store.max_poll, store.idle_poll, time.monotonic() - last_news)
                self._wakeup.wait(interval)
                self._wakeup.clear()
                interval = min(interval * 2, cap)
        finally:
            if watch is not None:
                watch.close()
