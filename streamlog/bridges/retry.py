"""The one retry policy of every bridge: which failures are waited out, which end the
bridge, and how long to wait between attempts.

**Transient** (:func:`is_transient`): the other side is away for a while and the same
call can succeed later —

* :class:`~streamlog.errors.UnreachableError` (the store gave up its own retries: server
  down, no primary, timeouts) and :class:`~streamlog.errors.KeyBusyError` ("retry later");
* ``OSError`` — connection refused or reset, network timeouts, a broker that went away;
* ``sqlite3.OperationalError`` (a locked or busy embedded file);
* the MongoDB driver's transient errors (lost connection, server selection, failover
  codes, retryable writes), as the MongoDB store classifies them.

**Everything else ends the bridge** (:func:`ends_the_bridge`): retrying cannot help. Above
all a **dropped stream** — the bridge's target, its source, its dead-letter stream —
raises :class:`~streamlog.errors.UnknownStreamError`: the bridge stops, ``run()`` raises
it, and the CLI exits with code 3 and one ``streamlog: error: stream 'NAME' was dropped
while …`` line (:func:`dropped`). Items a bridge receives but that the log refuses
(:class:`~streamlog.errors.BadItemError`) are not failures of the store: each bridge
answers, skips or repairs them (its own docstring says how) and goes on.

**How long** is the bridge's own choice, stated in its docstring: the MQTT source and the
TCP listener hold what they received unacknowledged and retry appends until stopped
(their clients wait: back-pressure); the collection source retries reads of its source
for up to ``STREAMLOG_RETRY_TIMEOUT`` seconds per outage. The delays between attempts
are :class:`Backoff`'s: capped exponential, with jitter so that many bridges do not
retry in step.
"""

from __future__ import annotations

import random
import sqlite3
import time

from ..errors import KeyBusyError, StreamlogError, UnknownStreamError, UnreachableError


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure to wait out and retry (module docstring)."""
    if isinstance(exc, (UnreachableError, KeyBusyError)):
        return True
    if isinstance(exc, StreamlogError):  # a dropped stream, a bad item, a bad name: not by waiting
        return False
    if isinstance(exc, (OSError, sqlite3.OperationalError)):
        return True
    if type(exc).__module__.startswith("pymongo"):
        from ..store.mongo_errors import is_transient as mongo_transient  # the store's classification

        return mongo_transient(exc)
    return False


def ends_the_bridge(exc: BaseException) -> bool:
    """Whether ``exc`` stops a bridge (anything not transient; bad items are handled by
    the bridge before this question is asked)."""
    return not is_transient(exc)


def dropped(stream_name: str, doing: str) -> UnknownStreamError:
    """The error that ends a bridge whose stream was dropped: one line naming the
    stream and what the bridge was doing (``appending to it``, ``publishing it``)."""
    return UnknownStreamError(f"stream {stream_name!r} was dropped while {doing}")


class Backoff:
    """Delays between attempts during one outage: ``first`` seconds, doubling up to
    ``cap``, each drawn from [50 %, 100 %] of that (jitter). ``patience`` (seconds, None:
    unlimited) is how long one outage may last: :attr:`exhausted` once it has.
    :meth:`reset` after a success starts the next outage afresh."""

    def __init__(self, first: float = 0.05, cap: float = 2.0, patience: float | None = None):
        self.first = first
        self.cap = cap
        self.patience = patience
        self.reset()

    def reset(self) -> None:
        self._delay = self.first
        #: ``time.monotonic()`` of the outage's first failure; None while there is no outage
        self.since: float | None = None

    @property
    def in_outage(self) -> bool:
        return self.since is not None

    def failed(self) -> float:
        """Record a failed attempt; the seconds to wait before the next one (never past
        the end of :attr:`patience`)."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        delay = self._delay * random.uniform(0.5, 1.0)
        self._delay = min(self._delay * 2, self.cap)
        if self.patience is not None:
            delay = max(0.0, min(delay, self.patience - (now - self.since)))
        return delay

    @property
    def exhausted(self) -> bool:
        """Whether the current outage has lasted :attr:`patience` seconds."""
        return (self.patience is not None and self.since is not None
                and time.monotonic() - self.since >= self.patience)


__all__ = ["Backoff", "dropped", "ends_the_bridge", "is_transient"]
