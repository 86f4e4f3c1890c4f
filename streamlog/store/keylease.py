"""Leases on idempotency keys being appended (MongoDB backend), renewed while the append runs.

A keyed batch (``Idempotency-Key``, :meth:`Stream.extend_once`) is appended by the owner
of the key's attempt document, a unique insert. The document carries a *lease* (wall
clock, ms): another request with the key waits while it runs, and takes the key over once
it has lapsed — the owner died. The lease is short (:data:`KEY_LEASE`, 5 s) and the
owner's process renews it every :data:`KEY_RENEW_EVERY` (1 s) from one thread per store
(:class:`KeyLeases`), so:

* a live append, however slow, is never taken over while its process can reach the
  database;
* after the owner's death a retry takes over at most :data:`KEY_LEASE` seconds later (its
  last renewal's lease; plus the clock difference between the two hosts).

**Fencing.** An owner that cannot renew (an outage, a stalled process) stops appending
:data:`KEY_MARGIN` seconds *before* the lease it last wrote runs out: before every insert
it checks :meth:`Held.check`, which raises :class:`KeyLeaseLost` once
``KEY_LEASE - KEY_MARGIN`` seconds have passed since the sending of its newest acknowledged
renewal (monotonic clock). A taker, which starts only after the lease, therefore sees
everything the owner stored — provided a write reaches the database within
:data:`KEY_MARGIN` seconds of being sent and the hosts' clocks agree to well within that.
Renewals are owner-only updates (``_id`` and ``owner``, still pending, lease not lapsed):
coordination itself stays with unique inserts, as everywhere on MongoDB.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import StreamlogError

log = logging.getLogger("streamlog")

#: seconds an idempotency key's attempt is held without a renewal
KEY_LEASE = 5.0
#: seconds between two renewals by the owner's process
KEY_RENEW_EVERY = 1.0
#: seconds before its lease runs out that an owner that could not renew stops appending
KEY_MARGIN = 2.0


class KeyLeaseLost(StreamlogError):
    """The owner of a key's attempt could not renew its lease in time: it must stop appending."""


class Held:
    """One attempt document this process owns; ``valid_until`` is monotonic time."""

    __slots__ = ("id", "owner", "released", "valid_until")

    def __init__(self, id: str, owner: str, sent: float):
        self.id = id
        self.owner = owner
        self.valid_until = sent + KEY_LEASE - KEY_MARGIN
        self.released = False

    def check(self) -> None:
        """Raise :class:`KeyLeaseLost` when the lease may have lapsed (see the module)."""
        if time.monotonic() >= self.valid_until:
            raise KeyLeaseLost(f"lost the lease on idempotency key attempt {self.id!r} "
                               f"(no renewal for {KEY_LEASE - KEY_MARGIN:g} s)")


class KeyLeases:
    """The attempts a store is appending, and one daemon thread that renews them.

    ``renew(id, owner, lease_ms)`` performs the owner-only update and returns whether the
    document matched (False: the attempt is no longer ours to extend).
    """

    def __init__(self, renew: Callable[[str, str, int], bool], clock_ms: Callable[[], int]):
        self._renew = renew
        self._clock_ms = clock_ms
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False

    def hold(self, id: str, owner: str, sent: float) -> Held:
        """Start renewing attempt ``id`` (whose lease was written at monotonic ``sent``)."""
        held = Held(id, owner, sent)
        with self._lock:
            self._held[id] = held
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamlog-key-leases", daemon=True)
                self._thread.start()
            self._wake.notify()
        return held

    def release(self, held: Held) -> None:
        with self._lock:
            held.released = True
            self._held.pop(held.id, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()

    def __len__(self) -> int:
        return len(self._held)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._held and not self._closed:
                    self._wake.wait()
                due = time.monotonic() + KEY_RENEW_EVERY  # a fast append is done before
                while not self._closed and due - time.monotonic() > 0:
                    self._wake.wait(due - time.monotonic())
                if self._closed:
                    return
                held = list(self._held.values())
            for one in held:
                sent = time.monotonic()
                if one.released or sent >= one.valid_until:
                    continue  # lapsed: never revived (a taker may already hold the key)
                try:
                    ok = self._renew(one.id, one.owner, self._clock_ms() + int(KEY_LEASE * 1000))
                except Exception as exc:  # noqa: BLE001 - an outage: the owner stops at its fence
                    log.warning("could not renew the lease of idempotency key attempt %r: %s",
                                one.id, f"{type(exc).__name__}: {exc}".split("\n")[0][:200])
                    continue
                if ok:
                    one.valid_until = max(one.valid_until, sent + KEY_LEASE - KEY_MARGIN)
                else:
                    one.valid_until = 0.0  # no longer ours: the owner stops at its next insert
