"""How the MongoDB backend rides out an outage: :class:`Outage` waits between attempts
(capped exponential backoff with jitter) while the driver's error is transient
(:func:`~streamlog.store.mongo_errors.is_transient`), and raises
:class:`~streamlog.errors.UnreachableError` — one short line, cause first — once the
store's ``retry_timeout`` has passed; any other error is raised as it is.
:func:`retried` wraps an operation that is safe to repeat in that loop.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol, TypeVar, cast

from pymongo.errors import PyMongoError

from ..errors import UnreachableError
from .mongo_errors import describe_cause, is_transient, servers_of

log = logging.getLogger("streamlog")

Operation = TypeVar("Operation", bound=Callable)


class RetryingStore(Protocol):
    """What an :class:`Outage` needs of its store: the (masked) URL and the seconds to retry."""

    url: str
    retry_timeout: float


class Outage:
    """Backoff state while the server is unreachable: capped exponential delays with
    jitter, then :class:`UnreachableError` once ``retry_timeout`` has passed."""

    def __init__(self, store: RetryingStore):
        self.store = store
        self.deadline = time.monotonic() + store.retry_timeout
        self.delay = 0.05
        self.logged = False

    def wait(self, exc: BaseException) -> None:
        """Sleep before the next attempt; re-raise ``exc`` when it is not transient, and
        raise :class:`UnreachableError` once the deadline has passed."""
        if not is_transient(exc):
            raise exc
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise UnreachableError(
                f"lost MongoDB at {servers_of(self.store.url)} ({describe_cause(exc)}) for more than "
                f"{self.store.retry_timeout:g} s (STREAMLOG_RETRY_TIMEOUT sets the wait)") from None
        if not self.logged:
            log.warning("MongoDB at %s is not answering (%s); retrying for up to %g s",
                        self.store.url, describe_cause(exc), self.store.retry_timeout)
            self.logged = True
        time.sleep(min(left, self.delay * random.uniform(0.5, 1.0)))
        self.delay = min(self.delay * 2, 2.0)


def retried(method: Operation) -> Operation:
    """Retry ``method`` on transient errors until the store's retry deadline (idempotent
    operations only); the store gives each outage its :class:`Outage` (``self._outage()``)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        outage = None
        while True:
            try:
                return method(self, *args, **kwargs)
            except PyMongoError as exc:
                if outage is None:
                    outage = self._outage()
                outage.wait(exc)

    return cast(Operation, wrapper)
