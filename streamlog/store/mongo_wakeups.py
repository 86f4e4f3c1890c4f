"""Push wake-ups on MongoDB-wire servers that keep a tailable cursor open on a capped
collection: an idle consumer (and ``streamlog serve``'s follower watch) waits in a
``getMore`` that the server answers as soon as a producer signals, instead of polling.

Producers insert a small signal ``{s: stream}`` into the capped collection ``wakeups``
after each append, from a background thread (:class:`Signals`): the append itself costs
no extra round trip, and signals that pile up while one is in flight go out together.
A waiter holds a tailable, await-data cursor on ``wakeups`` (:class:`TailWatch`); its
``wait(timeout)`` is one ``getMore`` with ``maxTimeMS`` that returns when a signal for its
stream arrives.

Which servers offer it is checked once per store (:func:`tailable`): a capped
``wakeups`` collection that the server reports as capped, and a tailable cursor on it that
stays open. MongoDB (standalone or replica set) and FerretDB v1.24 pass; FerretDB v2.7
does not (it accepts ``capped`` but ignores it and closes the cursor), and there consumers
poll on the idle schedule. Signals are a latency aid only: waiters still probe at least
once a second (``FULL_PROBE_EVERY``), so a lost signal (a producer killed before its
thread sent it, a connection dropped) delays a window by at most that.
"""

from __future__ import annotations

import logging
import threading
import time

from pymongo.database import Database
from pymongo.errors import CollectionInvalid, OperationFailure, PyMongoError

log = logging.getLogger("streamlog")

WAKEUPS = "wakeups"
#: the capped collection's bounds: signals are only ever read as they arrive
WAKEUPS_BYTES = 1 << 20
WAKEUPS_MAX = 1_000


def tailable(db: Database) -> bool:
    """Whether ``db``'s server keeps a tailable await cursor open on a capped collection
    (creates the capped ``wakeups`` collection, with one document so that a cursor on it
    is not dead from the start, when missing)."""
    try:
        try:
            db.create_collection(WAKEUPS, capped=True, size=WAKEUPS_BYTES, max=WAKEUPS_MAX)
            db[WAKEUPS].insert_one({"s": ""})
        except (CollectionInvalid, OperationFailure):
            pass  # exists already (created by another process)
        if not db[WAKEUPS].options().get("capped"):
            return False
        reply = db.command({"find": WAKEUPS, "filter": {"s": ""}, "tailable": True, "awaitData": True,
                            "batchSize": 0})["cursor"]
        if not reply.get("id"):
            return False
        db.command({"killCursors": WAKEUPS, "cursors": [reply["id"]]})
        return True
    except PyMongoError as exc:
        log.debug("no tailable wake-ups on this server: %s", type(exc).__name__)
        return False


class Signals:
    """A producer's signals: :meth:`notify` after an append; a daemon thread inserts one
    signal per stream named since its last insert."""

    def __init__(self, db: Database):
        self._collection = db[WAKEUPS]
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._wake = threading.Event()
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def notify(self, name: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._names.add(name)
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamlog-wakeups", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                names, self._names = self._names, set()
                closed = self._closed
            if names:
                try:
                    self._collection.insert_many([{"s": name} for name in sorted(names)], ordered=False)
                except PyMongoError as exc:  # a latency aid: waiters' periodic probes cover a lost one
                    log.debug("wake-up signal not sent: %s", type(exc).__name__)
            with self._lock:
                if not self._names:
                    self._idle.set()
                if closed and not self._names:
                    return

    def close(self, timeout: float = 0.5) -> None:
        """Send what is pending (waiting at most ``timeout`` s), then stop the thread."""
        self._idle.wait(timeout)
        with self._lock:
            self._closed = True
        self._wake.set()


class TailWatch:
    """Wakes a waiter when a producer signals ``name`` (any stream when None): a tailable
    await cursor on ``wakeups``. Errors make :meth:`wait` report a (possible) change, so
    the caller probes; the cursor is reopened on the next wait."""

    #: a wait is a server's ``getMore``: nothing here can cut it short
    interruptible = False

    def __init__(self, db: Database, name: str | None):
        self._db = db
        self._name = name
        self._cursor = 0

    def interrupt(self) -> None:
        """Nothing to do: a wait ends with its ``maxTimeMS`` (waiters bound it)."""

    def _open(self) -> None:
        # Every stream's signals, filtered here: FerretDB v1 holds a tailable ``find``
        # whose filter matches nothing until a match arrives (and drops the cursor when
        # the find itself carries maxTimeMS); the collection is never empty (see tailable()).
        reply = self._db.command({"find": WAKEUPS, "filter": {}, "tailable": True, "awaitData": True,
                                  "batchSize": 0})["cursor"]
        self._cursor = reply.get("id") or 0

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when a signal arrived (or the watch had to
        be reopened: then the caller should look). A watch the server keeps closing, or a
        server that fails, costs a look per ``timeout``, never a busy loop."""
        started = time.monotonic()
        try:
            if not self._cursor:
                self._open()
                if not self._cursor:  # closed at once: wait as long as a poll would
                    time.sleep(timeout)
                return True  # signals may have been missed while it was closed
            reply = self._db.command({"getMore": self._cursor, "collection": WAKEUPS,
                                      "maxTimeMS": max(1, int(timeout * 1000))})["cursor"]
        except PyMongoError:
            self._cursor = 0
            time.sleep(max(0.0, timeout - (time.monotonic() - started)))
            return True
        self._cursor = reply.get("id") or 0
        signals = reply.get("nextBatch") or ()
        if not signals and not self._cursor:  # the server ended the cursor early
            time.sleep(max(0.0, timeout - (time.monotonic() - started)))
        return any(self._name is None or signal.get("s") == self._name for signal in signals)

    def close(self) -> None:
        cursor, self._cursor = self._cursor, 0
        if cursor:
            try:
                self._db.command({"killCursors": WAKEUPS, "cursors": [cursor]})
            except PyMongoError:
                pass  # the server drops idle cursors by itself


class MongoWakeups:
    """The wake-up part of :class:`~streamlog.store.mongo.MongoStore`: signals after appends
    and :meth:`watch`, where the server offers tailable cursors (checked once, lazily)."""

    db: Database
    _tailable: bool | None = None
    _signals: Signals | None = None
    _wakeups_lock = threading.Lock()

    def _push_wakeups(self) -> bool:
        if self._tailable is None:
            with self._wakeups_lock:
                if self._tailable is None:
                    supported = tailable(self.db)
                    self._signals = Signals(self.db) if supported else None
                    self._tailable = supported
        return bool(self._tailable)

    def _signal(self, name: str) -> None:
        """Tell waiting consumers of ``name`` that it has new items (see the module doc)."""
        if self._push_wakeups() and self._signals is not None:
            self._signals.notify(name)

    def watch(self, name: str | None = None) -> TailWatch | None:
        """A :class:`TailWatch` on ``name``'s signals (every stream's when None), or None
        where the server offers no tailable cursors (then waiters poll)."""
        return TailWatch(self.db, name) if self._push_wakeups() else None

    def _close_wakeups(self) -> None:
        if self._signals is not None:
            self._signals.close()
