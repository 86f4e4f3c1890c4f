"""Consumer groups' windows: the chain of claims, and one consumer's handle on it.

A group's windows form a chain. Window ``seq`` covers the offsets right after
window ``seq - 1`` (``lo = previous.hi + 1``), so every item falls in exactly one
window, and the windows come in offset order. To claim the next window a consumer
reads the chain head, lets the emitter choose the window, and inserts attempt 1 of
window ``head.seq + 1``. Two consumers building on the same head insert the same key
and the store lets exactly one succeed: the loser re-reads the head and tries again.

A claim attempt carries a lease. The owner renews it while its function runs and
then commits, which *seals* the window (the unique insert of the next attempt's key).
A failing function releases the attempt for a retry after a backoff; a dead process
simply stops renewing. Either way the attempt turns up in ``expired`` and any
consumer of the group takes the window over by inserting the next attempt — the same
unique key a seal uses, so a takeover and a late commit exclude each other — and
closes the old one. :meth:`Cursor.allowed` decides how many attempts may run; the
window's items then go to the dead-letter stream.

Operators move a group with markers in the same chain (see :mod:`streamlog.groups`):
a ``reset`` record whose ``hi`` is the offset before the group's new position, and a
``deleted`` record that ends the chain of a deleted group.

Round trips per window on MongoDB: claim = read items + insert (+ a head read after
a conflict or when the cached head is stale), commit = seal insert + one update; a
reclaim scan (one query) runs at most once a second. None of them depends on window
size or stream length beyond the items themselves.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from .emitters.base import Emit, Emitter, Pending, Wait
from .errors import ConsumerError, GroupDeletedError
from .items import datetime_to_ms
from .names import dead_letter_stream
from .store.base import ACTIVE, DEAD, DELETED, Batch, Claim, Group
from .window import Window

if TYPE_CHECKING:  # pragma: no cover
    from .stream import Stream

log = logging.getLogger("streamlog")

#: a consumer trusts its own last claim as the chain head for this long (ms); older
#: claims are re-read. Well below the hour that trim keeps closed claims for.
HEAD_CACHE_MS = 60_000
#: characters of an error message kept in a dead letter
MAX_ERROR = 2_000


@dataclass(slots=True)
class Head:
    """The end of a group's chain: last window ``seq``, its last offset and end time."""

    seq: int
    hi: int
    end: int | None


def head_of(stream: "Stream", group: Group) -> Head:
    """The end of the group's chain (before its first window: just below its start)."""
    claim = stream.store.last_claim(stream.name, group.name)
    if claim is None:
        return Head(0, group.start - 1, None)
    if claim.state == DELETED:
        raise GroupDeletedError(f"group {group.name!r} of stream {stream.name!r} was deleted")
    return Head(claim.seq, claim.hi, claim.end)


def event_times(field: str):
    """A function mapping a batch to its items' event times (ms): ``data[field]`` as a
    datetime, an ISO-8601 string or epoch seconds; the append time when it is missing
    or unreadable (logged once per consumer)."""
    warned = False

    def times(batch: Batch) -> list[int]:
        nonlocal warned
        out = []
        for data, appended in zip(batch.data, batch.times):
            value = data.get(field)
            try:
                if isinstance(value, datetime):
                    out.append(datetime_to_ms(value))
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    out.append(int(value * 1000))
                elif isinstance(value, str):
                    out.append(datetime_to_ms(datetime.fromisoformat(value)))
                else:
                    raise ValueError(value)
            except (ValueError, OverflowError):
                if not warned:
                    log.warning("item without a usable %r field; using its append time", field)
                    warned = True
                out.append(appended)
        return out

    return times


@dataclass(slots=True)
class Claimed:
    """A window this consumer holds: the claim attempt and its items."""

    claim: Claim
    batch: Batch
    times: list[int]  # window times (event time when configured)
    previous_error: str | None = None

    def windows(self, stream: "Stream") -> list[Window]:
        """The window(s) to deliver: one, or a fixed-time window followed by empty ones."""
        c, b = self.claim, self.batch
        if c.windows <= 1:
            start = c.start if c.start is not None else (self.times[0] if self.times else None)
            end = c.end if c.end is not None else (self.times[-1] if self.times else None)
            late = sum(1 for t in self.times if t < c.start) if c.start is not None else 0
            return [Window(stream, c.group, c.seq, c.attempt, b.offsets, b.times, b.data, start, end, late)]
        step = (c.end - c.start) // c.windows
        late = sum(1 for t in self.times if t < c.start)
        first = Window(stream, c.group, c.seq, c.attempt, b.offsets, b.times, b.data, c.start, c.start + step, late)
        return [first] + [
            Window(stream, c.group, c.seq, c.attempt, [], [], [], c.start + i * step, c.start + (i + 1) * step)
            for i in range(1, c.windows)
        ]


@dataclass(slots=True)
class Waiting:
    """Nothing to claim: the emitter's wait, plus what the waiter should watch."""

    wait: Wait
    after: int  # last offset claimed by the group
    seen: int  # last pending offset the emitter saw


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Cursor:
    """One consumer's handle on a group: claims, commits, releases and reclaims windows."""

    def __init__(self, stream: "Stream", group: Group, emitter: Emitter, *, lease: float,
                 max_retries: int, time_field: str | None = None, owner: str | None = None):
        self.stream = stream
        self.store = stream.store
        self.group = group
        self.emitter = emitter
        self.lease_ms = max(1, round(lease * 1000))
        self.max_retries = max_retries
        self.owner = owner or new_owner()
        self._times = event_times(time_field) if time_field else None
        self._head: Head | None = None
        self._head_at = 0
        self._has_token = self.store.version() is not None  # probe by token + last offset?
        self._prefetch: Batch | None = None  # items an idle probe already read
        self._prefetch_complete = False  # … and nothing more was pending then

    # -- probing while idle ------------------------------------------------------

    def probe(self, after: int, seen: int, want: int) -> tuple[bool, int]:
        """Look for items after offset ``seen``; return ``(ready, seen)``, ready once at least
        ``want`` items are pending after ``after`` (the group's last claimed offset).

        With a change token (SQLite) the probe is the last offset: one index lookup that
        no gap can fool. Without one (MongoDB) the probe reads the new items themselves
        (``_id >= seen + 1``, gap-proof too) and keeps them for the next claim, which then
        needs no read of its own: one round trip less between an append and the consumer.
        """
        store, name = self.store, self.stream.name
        if self._has_token:
            last = store.last_offset(name)
            if last is None or last <= seen:
                return False, seen
            return last - after >= want, last
        limit = min(10_000, max(1, want - (seen - after)))
        batch = store.read(name, seen + 1, limit)
        if not batch:
            return False, seen
        pre = self._prefetch
        if pre is not None and len(pre) and pre.offsets[-1] == seen and pre.offsets[0] == after + 1:
            pre.extend(batch)
        elif seen == after:
            self._prefetch = pre = batch
        else:  # items between after and seen were not kept: the claim reads them itself
            self._prefetch = pre = None
        self._prefetch_complete = len(batch) < limit
        seen = batch.offsets[-1]
        return seen - after >= want, seen

    # -- claiming -------------------------------------------------------------

    def _load(self, start: int, limit: int | None) -> Batch:
        pre, self._prefetch = self._prefetch, None
        if pre is not None and len(pre) and pre.offsets[0] == start:
            if limit is not None and len(pre) >= limit:
                return pre.head(limit)
            if self._prefetch_complete:
                return pre  # everything pending when the probe looked: enough for this round
            pre.extend(self.store.read(self.stream.name, pre.offsets[-1] + 1,
                                       None if limit is None else limit - len(pre)))
            return pre
        return self.store.read(self.stream.name, start, limit)

    def reclaimable(self, now: int) -> bool:
        """Whether a window of the group waits to be taken over (one indexed query)."""
        return bool(self.store.expired(self.stream.name, self.group.name, now, limit=1))

    def reclaim(self, now: int) -> Claimed | None:
        """Take over the oldest expired or released window of the group, if any."""
        for old in self.store.expired(self.stream.name, self.group.name, now):
            new = replace(old, attempt=old.attempt + 1, owner=self.owner, lease=now + self.lease_ms,
                          state=ACTIVE, error=None, created=now)
            won = self.store.claim(new)
            # Close the replaced attempt either way (idempotent) so scans stay short.
            self.store.supersede(old)
            if not won:
                continue
            batch = self.store.read(self.stream.name, new.lo, None, end=new.hi) if new.hi >= new.lo else Batch()
            error = old.error or f"lease expired during attempt {old.attempt} (consumer {old.owner} stopped)"
            return Claimed(new, batch, self._times(batch) if self._times else batch.times, error)
        return None

    def head(self, now: int) -> Head:
        if self._head is None or now - self._head_at > HEAD_CACHE_MS:
            self._head = head_of(self.stream, self.group)
            self._head_at = now
        return self._head

    def claim(self, now: int, max_windows: int | None = None) -> Claimed | Waiting | None:
        """Claim the group's next window if the emitter says one is ready.

        Returns the claimed window, a :class:`Waiting` when nothing is ready, or None
        when another consumer claimed first (call again at once).
        """
        head = self.head(now)
        pending = Pending(head.hi, head.end, self._load, self._times)
        decision = self.emitter.select(pending, now)
        if isinstance(decision, Wait):
            return Waiting(decision, head.hi, pending.seen)
        if not isinstance(decision, Emit):
            raise ConsumerError(f"{self.emitter!r}.select() returned {decision!r}, not Emit or Wait")
        if decision.count < 0 or (decision.count == 0 and (decision.start is None or decision.end is None)):
            raise ConsumerError(f"{self.emitter!r} emitted {decision!r}: an empty window needs start and end")
        windows = decision.windows
        if max_windows is not None and windows > max_windows >= 1:
            windows = max_windows  # the extra windows of a run are empty: just claim fewer
        end = decision.end
        if windows != decision.windows and decision.start is not None and decision.end is not None:
            end = decision.start + (decision.end - decision.start) // decision.windows * windows
        batch, times = pending.take(decision.count)
        if len(batch) < decision.count:
            raise ConsumerError(f"{self.emitter!r} emitted {decision.count} items but only {len(batch)} are pending")
        hi = batch.offsets[-1] if decision.count else head.hi
        claim = Claim(self.stream.name, self.group.name, head.seq + 1, 1, head.hi + 1, hi, decision.count,
                      decision.start, end, windows, self.owner, now + self.lease_ms, ACTIVE, None, now)
        if not self.store.claim(claim):
            self._head = None  # somebody else extended the chain: re-read it
            return None
        self._head = Head(claim.seq, hi, end)
        self._head_at = now
        return Claimed(claim, batch, times)

    # -- finishing ------------------------------------------------------------

    def renew(self, claimed: Claimed, now: int) -> None:
        claimed.claim.lease = now + self.lease_ms
        self.store.renew(claimed.claim, claimed.claim.lease)

    def commit(self, claimed: Claimed) -> bool:
        """Commit the window; False when this attempt was fenced off (see :meth:`Store.commit`)."""
        if self.store.commit(claimed.claim):
            return True
        c = claimed.claim
        log.warning("window %s/%s #%d: attempt %d lost its lease to a newer attempt before it could "
                    "commit; the newer attempt's result stands", c.stream, c.group, c.seq, c.attempt)
        return False

    def release(self, claimed: Claimed, error: str, retry_at: int = 0) -> None:
        """Give the window up for a retry from ``retry_at`` (ms) on."""
        self.store.release(claimed.claim, error, retry_at)

    def allowed(self, attempt: int) -> bool:
        """The one retry rule: attempts ``1 … max_retries + 1`` may run; a window whose
        next attempt is not allowed goes to the dead-letter stream instead."""
        return attempt <= self.max_retries + 1

    def dead_letter(self, claimed: Claimed, error: str, attempts: int | None = None) -> bool:
        """Move the window's items to the dead-letter stream and close the window.

        Returns False when the window was fenced off meanwhile (its dead letters were
        appended all the same: at-least-once)."""
        c = claimed.claim
        attempts = c.attempt if attempts is None else attempts
        dead_name = dead_letter_stream(self.stream.name)
        if len(claimed.batch):
            error = error if len(error) <= MAX_ERROR else error[:MAX_ERROR] + "…"
            dead = self.stream.client.stream(dead_name)
            dead.extend([
                {"offset": o, "data": d, "error": error, "attempts": attempts, "group": c.group}
                for o, d in zip(claimed.batch.offsets, claimed.batch.data)
            ], _dead_letters=True)
        sealed = self.store.commit(c, DEAD, error)
        log.error("window %s/%s #%d moved to %s after %d attempts: %s", c.stream, c.group, c.seq,
                  dead_name, attempts, error)
        return sealed
