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

Sliding windows claim only their new items; the emitter's ``lookback`` names the
earlier items their windows re-show (the history), which the cursor re-reads from the
log by offset range when it claims or takes over the window (:func:`read_history`):
one more read for the count kind, a few for the time kind. Other kinds skip it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from .emitters.base import Emit, Emitter, Lookback, Pending, Wait
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
#: offsets a sliding time window's look-back reads at least per round trip (then doubling)
LOOKBACK_CHUNK = 256


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


def read_history(claim: Claim, lookback: Lookback, floor: int, claimed: int,
                 read: Callable[[int, int], Batch], times: Callable[[Batch], list[int]]) -> tuple[Batch, list[int]]:
    """The history ``lookback`` asks for before ``claim``, and its items' window times.

    ``read(lo, hi)`` returns the stored items at offsets ``lo … hi``; ``floor`` is the
    group's first offset (history never reaches below it); ``claimed`` the number of
    claimed items. A function of the claim and the log only, so every attempt of a
    window re-reads the same items (unless the log was trimmed in between):

    * ``first`` — offsets ``max(first, floor) … claim.lo - 1``, one read;
    * ``stop`` — read back from ``claim.lo - 1`` in offset order up to (excluding) the
      first item with a time before ``stop``; of those, the items the claim's first
      window can show (time at or after its start, ``end - span``). Chunks are sized
      from the claim's own item rate and double, so it costs a few round trips.
    """
    last = claim.lo - 1
    if lookback.first is not None:
        first = max(lookback.first, floor)
        history = read(first, last) if first <= last else Batch()
        return history, times(history)
    if lookback.stop is None or last < floor:
        return Batch(), []
    step = (claim.end - claim.start) // claim.windows
    since = claim.start + step - lookback.span  # the first (earliest) window's start
    reach = max(0, claim.start - lookback.stop) / max(1, claim.end - claim.start)  # in claims' lengths
    chunk = max(LOOKBACK_CHUNK, int(claimed * reach) + 1)
    parts: list[tuple[Batch, list[int]]] = []
    hi = last
    while hi >= floor:
        lo = max(floor, hi - chunk + 1)
        part = read(lo, hi)
        ptimes = times(part)
        cut = next((i for i in range(len(part) - 1, -1, -1) if ptimes[i] < lookback.stop), -1)
        keep = [i for i in range(cut + 1, len(part)) if ptimes[i] >= since]
        parts.append((Batch([part.offsets[i] for i in keep], [part.times[i] for i in keep],
                            [part.data[i] for i in keep]), [ptimes[i] for i in keep]))
        if cut >= 0 or len(part) < hi - lo + 1:
            break  # reached an item older than stop, or the log is trimmed below this chunk
        hi, chunk = lo - 1, chunk * 2
    history, history_times = Batch(), []
    for part, ptimes in reversed(parts):
        history.extend(part)
        history_times.extend(ptimes)
    return history, history_times


@dataclass(slots=True)
class Claimed:
    """A window this consumer holds: the claim attempt and its items."""

    claim: Claim
    batch: Batch
    times: list[int]  # window times (event time when configured)
    previous_error: str | None = None
    #: sliding windows: what the emitter's look-back asked for, and the items re-read
    lookback: Lookback | None = None
    history: Batch = field(default_factory=Batch)
    history_times: list[int] = field(default_factory=list)

    def windows(self, stream: "Stream") -> list[Window]:
        """The window(s) to deliver: one, or a fixed-time window followed by empty ones;
        for sliding windows, the history followed by the claimed items (:meth:`_sliding`)."""
        if self.lookback is not None:
            return self._sliding(stream)
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

    def _sliding(self, stream: "Stream") -> list[Window]:
        """Sliding windows: the history (offsets before the claim) followed by the claimed
        items. Count kind: one window, all of it. Time kind: one window ``[end - span, end)``
        per step of the claim; the first holds every claimed item (late ones too), later
        ones (empty steps after a quiet spell) only re-show items whose time is in range."""
        c, b, h, span = self.claim, self.batch, self.history, self.lookback.span
        new = len(b)
        if span is None:
            times = self.history_times + self.times
            return [Window(stream, c.group, c.seq, c.attempt, h.offsets + b.offsets, h.times + b.times,
                           h.data + b.data, times[0] if times else None, times[-1] if times else None,
                           history=len(h))]
        step = (c.end - c.start) // c.windows
        # every item any of the claim's windows may show, in offset order: (window time, index)
        old = list(zip(self.history_times, range(len(h))))
        both = old + [(t, len(h) + i) for i, t in enumerate(self.times)]
        offsets, appended, data = h.offsets + b.offsets, h.times + b.times, h.data + b.data
        newest = max((t for t, _ in both), default=None)
        windows = []
        for k in range(c.windows):
            end = c.start + (k + 1) * step
            since = end - span
            if k == 0:  # the claimed items, late ones included, are delivered here whatever their time
                keep = [i for t, i in old if since <= t < end] + list(range(len(h), len(h) + new))
            elif newest is None or newest < since:
                keep = []
            else:
                keep = [i for t, i in both if since <= t < end]
            late = sum(1 for t in self.times if t < c.start) if k == 0 else 0
            windows.append(Window(stream, c.group, c.seq, c.attempt, [offsets[i] for i in keep],
                                  [appended[i] for i in keep], [data[i] for i in keep], since, end, late,
                                  history=len(keep) - (new if k == 0 else 0)))
        return windows


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
            return self._with_history(Claimed(new, batch, self._window_times(batch), error))
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
        return self._with_history(Claimed(claim, batch, times))

    # -- sliding windows' history ---------------------------------------------

    def _window_times(self, batch: Batch) -> list[int]:
        return self._times(batch) if self._times else batch.times

    def _with_history(self, claimed: Claimed) -> Claimed:
        """Attach the items the emitter's :meth:`~Emitter.lookback` asks for (sliding
        windows); other kinds pass through at the cost of one method call."""
        hook = getattr(self.emitter, "lookback", None)  # a duck-typed custom emitter may lack it
        lookback = hook(claimed.claim) if hook is not None else None
        if lookback is not None:
            name = self.stream.name
            claimed.lookback = lookback
            claimed.history, claimed.history_times = read_history(
                claimed.claim, lookback, self.group.start, len(claimed.batch),
                lambda lo, hi: self.store.read(name, lo, None, end=hi), self._window_times)
        return claimed

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

    def _dead_letter_fields(self, claimed: Claimed) -> dict:
        """What a dead letter says about where it came from, beside its offset and data."""
        return {"group": claimed.claim.group}

    def dead_letter(self, claimed: Claimed, error: str, attempts: int | None = None) -> bool:
        """Move the window's items to the dead-letter stream and close the window.

        Returns False when the window was fenced off meanwhile (its dead letters were
        appended all the same: at-least-once)."""
        c = claimed.claim
        attempts = c.attempt if attempts is None else attempts
        dead_name = dead_letter_stream(self.stream.name)
        if len(claimed.batch):
            error = error if len(error) <= MAX_ERROR else error[:MAX_ERROR] + "…"
            fields = self._dead_letter_fields(claimed)
            dead = self.stream.client.stream(dead_name)
            dead.extend([
                {"offset": o, "data": d, "error": error, "attempts": attempts, **fields}
                for o, d in zip(claimed.batch.offsets, claimed.batch.data)
            ], _dead_letters=True)
        sealed = self.store.commit(c, DEAD, error)
        log.error("window %s/%s #%d moved to %s after %d attempts: %s", c.stream, c.group, c.seq,
                  dead_name, attempts, error)
        return sealed
