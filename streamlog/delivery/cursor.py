"""The cursor protocol — claim, renew, commit, release, reclaim, dead letter — and the
plain :class:`Cursor`, one consumer's handle on one group's chain.

To claim the next window a cursor reads the chain head (:mod:`streamlog.delivery.chain`),
lets the emitter choose the window and inserts attempt 1 of window ``head.seq + 1``; the
loser of a race re-reads the head and tries again. A claim attempt carries a lease. The
owner renews it while its function runs and then commits, which *seals* the window (the
unique insert of the next attempt's key). A failing function releases the attempt for a
retry after a backoff; a dead process simply stops renewing. Either way the attempt turns
up in ``expired`` and any consumer of the group takes the window over by inserting the
next attempt — the same unique key a seal uses, so a takeover and a late commit exclude
each other — and closes the old one. :meth:`CursorBase.allowed` decides how many attempts
may run; the window's items then go to the dead-letter stream.

Round trips per window on MongoDB, in steady state: two — the claim's insert and the
commit's seal —, one in a backlog, where :meth:`Cursor.commit_and_claim` writes the seal
and the next window's claim together (on SQLite: one transaction). Items are read
ahead (:func:`read_ahead`: up to 16 windows' worth, at most 5,000 items, in one query)
and kept for the next claims; the store closes sealed attempts in batches
(:mod:`streamlog.store.mongo_claims`); the chain head is cached (re-read after a lost
race or once a minute); a reclaim scan (one query) runs at most once a second. None
of them depends on window size or stream length beyond the items themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..emitters.base import Emit, Emitter, Pending, Wait
from ..errors import ConsumerError
from ..names import dead_letter_stream
from ..store.base import DEAD, Batch, Claim, Group
from .chain import HEAD_CACHE_MS, Head, head_of, new_owner, takeover
from .history import LooksBack, event_times, read_history, reshows_history
from .windows import Claimed

if TYPE_CHECKING:  # pragma: no cover
    from ..stream import Stream

log = logging.getLogger("streamlog")

#: characters of an error message kept in a dead letter
MAX_ERROR = 2_000
#: at most this many items are read ahead of what a claim needs
READ_AHEAD_MAX = 5_000
#: … and at most this many times what it needs
READ_AHEAD_WINDOWS = 16


def read_ahead(need: int) -> int:
    """How many items to read when ``need`` are wanted: more, up to 16 windows' worth or
    5,000 items (whichever is less), so one query serves the next claims too."""
    return max(need, min(need * READ_AHEAD_WINDOWS, READ_AHEAD_MAX))


def split(batch: Batch, n: int) -> tuple[Batch, Batch]:
    """The first ``n`` items of ``batch`` and the rest."""
    return batch.head(n), Batch(batch.offsets[n:], batch.times[n:], batch.data[n:])


@dataclass(slots=True)
class Waiting:
    """Nothing to claim: the emitter's wait, plus what the waiter should watch."""

    wait: Wait
    after: int  # last offset claimed by the group
    seen: int  # last pending offset the emitter saw


class DeliveryCursor(Protocol):
    """What the consumer runtime needs of a cursor (:class:`Cursor`, or
    :class:`~streamlog.delivery.keyed.KeyedCursor` for keyed windows)."""

    lease_ms: int

    def probe(self, after: int, seen: int, want: int) -> tuple[bool, int]:
        """Look for items after ``seen``: ``(ready, newest seen)``."""

    def claim(self, now: int, max_windows: int | None = None) -> Claimed | Waiting | None:
        """The next window, a :class:`Waiting`, or None (lost a race: call again)."""

    def reclaimable(self, now: int) -> bool:
        """Whether a window waits to be taken over."""

    def reclaim(self, now: int) -> Claimed | None:
        """Take over the oldest expired or released window, if any."""

    def renew(self, claimed: Claimed, now: int) -> None: ...

    def commit(self, claimed: Claimed) -> bool: ...

    def commit_and_claim(self, claimed: Claimed, now: int,
                         max_windows: int | None = None) -> tuple[bool, Claimed | Waiting | None]:
        """Commit, and claim the next window in the same write where that can be done:
        ``(committed, what claim() would have returned)``, or ``(committed, None)`` when
        the caller should claim as usual."""

    def release(self, claimed: Claimed, error: str, retry_at: int = 0) -> None: ...

    def hold(self, claimed: Claimed, until: int) -> bool:
        """After releasing ``claimed`` for a retry at ``until``: True when only its chain
        waits for the retry (the caller schedules it and goes on with other windows),
        False when the whole group waits (windows keep their offset order)."""

    def allowed(self, attempt: int) -> bool: ...

    def dead_letter(self, claimed: Claimed, error: str, attempts: int | None = None) -> bool: ...


class CursorBase:
    """What every cursor does with a window it holds: renew, commit, release, dead-letter,
    and the one retry rule. Subclasses claim."""

    def __init__(self, stream: "Stream", group: Group, emitter: Emitter, *, lease: float,
                 max_retries: int, time_field: str | None = None, owner: str | None = None):
        self.stream = stream
        self.store = stream.store
        self.group = group
        self.emitter = emitter
        self.lease_ms = max(1, round(lease * 1000))
        self.max_retries = max_retries
        self.time_field = time_field
        self.owner = owner or new_owner()
        #: sliding windows re-show history (checked once: a runtime Protocol check is slow)
        self._looks_back = isinstance(emitter, LooksBack)

    def renew(self, claimed: Claimed, now: int) -> None:
        claimed.claim.lease = now + self.lease_ms
        self.store.renew(claimed.claim, claimed.claim.lease)

    def commit(self, claimed: Claimed) -> bool:
        """Commit the window; False when this attempt was fenced off (see :meth:`Store.commit`)."""
        if self.store.commit(claimed.claim):
            return True
        self._fenced(claimed.claim)
        return False

    @staticmethod
    def _fenced(c: Claim) -> None:
        log.warning("window %s/%s #%d: attempt %d lost its lease to a newer attempt before it could "
                    "commit; the newer attempt's result stands", c.stream, c.group, c.seq, c.attempt)

    def commit_and_claim(self, claimed: Claimed, now: int,
                         max_windows: int | None = None) -> tuple[bool, Claimed | Waiting | None]:
        """Just the commit here (the caller claims as usual); :class:`Cursor` folds the
        next claim into the commit's write."""
        return self.commit(claimed), None

    def release(self, claimed: Claimed, error: str, retry_at: int = 0) -> None:
        """Give the window up for a retry from ``retry_at`` (ms) on."""
        self.store.release(claimed.claim, error, retry_at)

    def hold(self, claimed: Claimed, until: int) -> bool:
        """The group's windows come in offset order: the whole group waits for the retry."""
        return False

    def allowed(self, attempt: int) -> bool:
        """The one retry rule: attempts ``1 … max_retries + 1`` may run; a window whose
        next attempt is not allowed goes to the dead-letter stream instead."""
        return attempt <= self.max_retries + 1

    def dead_letter(self, claimed: Claimed, error: str, attempts: int | None = None) -> bool:
        """Move the window's items to the dead-letter stream and close the window.

        A dead letter is ``{offset, data, error, attempts, group}`` (and ``key`` for a
        keyed window; ``group`` is the user's group). Returns False when the window was
        fenced off meanwhile (its dead letters were appended all the same: at-least-once)."""
        c = claimed.claim
        attempts = c.attempt if attempts is None else attempts
        dead_name = dead_letter_stream(self.stream.name)
        if len(claimed.batch):
            error = error if len(error) <= MAX_ERROR else error[:MAX_ERROR] + "…"
            fields = {"group": claimed.group_name, **({"key": claimed.key} if claimed.keyed else {})}
            dead = self.stream.client.stream(dead_name)
            dead.extend([
                {"offset": o, "data": d, "error": error, "attempts": attempts, **fields}
                for o, d in zip(claimed.batch.offsets, claimed.batch.data, strict=True)
            ], _dead_letters=True)
        sealed = self.store.commit(c, DEAD, error)
        log.error("window %s/%s #%d moved to %s after %d attempts: %s", c.stream, c.group, c.seq,
                  dead_name, attempts, error)
        return sealed


def _one_count_window(decision: Emit, count: int) -> bool:
    """Whether ``decision`` is one count window of ``count`` items (> 0): what a run of
    windows (``windows_per_claim``) is made of."""
    return count > 0 and decision.count == count and decision.start is None and decision.windows == 1


class Cursor(CursorBase):
    """One consumer's handle on a group: claims, commits, releases and reclaims windows."""

    def __init__(self, stream: "Stream", group: Group, emitter: Emitter, *, lease: float,
                 max_retries: int, time_field: str | None = None, owner: str | None = None,
                 windows_per_claim: int = 1):
        super().__init__(stream, group, emitter, lease=lease, max_retries=max_retries, time_field=time_field,
                         owner=owner)
        #: a claim may hold a run of up to this many count windows (never sliding ones)
        self.windows_per_claim = 1 if reshows_history(emitter) else windows_per_claim
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
        limit = min(10_000, read_ahead(max(1, want - (seen - after))))
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
        """Up to ``limit`` items from ``start`` on: from what was read ahead, reading more
        (ahead again) only when that runs short. What is left over stays for the next load."""
        pre, self._prefetch = self._prefetch, None
        if pre is None or not len(pre) or pre.offsets[0] != start:
            pre, self._prefetch_complete = Batch(), False
        if limit is not None and len(pre) < limit and not self._prefetch_complete:
            want = read_ahead(limit - len(pre))
            more = self.store.read(self.stream.name, pre.offsets[-1] + 1 if len(pre) else start, want)
            self._prefetch_complete = len(more) < want
            pre.extend(more)
        elif limit is None and not self._prefetch_complete:
            pre.extend(self.store.read(self.stream.name, pre.offsets[-1] + 1 if len(pre) else start, None))
            self._prefetch_complete = True
        if limit is None or len(pre) <= limit:
            return pre  # all of it: nothing is left over
        # The rest waits for the next load, which reads more should it run short: whether
        # this read found the end of the stream says nothing about a later round.
        batch, self._prefetch = split(pre, limit)
        self._prefetch_complete = False
        return batch

    def reclaimable(self, now: int) -> bool:
        """Whether a window of the group waits to be taken over (one indexed query)."""
        return bool(self.store.expired(self.stream.name, self.group.name, now, limit=1))

    def reclaim(self, now: int) -> Claimed | None:
        """Take over the oldest expired or released window of the group, if any."""
        for old in self.store.expired(self.stream.name, self.group.name, now):
            new = takeover(old, self.owner, now + self.lease_ms, now)
            won = self.store.claim(new)
            # Close the replaced attempt either way (idempotent) so scans stay short.
            self.store.supersede(old)
            if not won:
                continue
            read = self.store.read(self.stream.name, new.lo, None, end=new.hi) if new.hi >= new.lo else Batch()
            batch = self._own_items(read)
            error = old.error or f"lease expired during attempt {old.attempt} (consumer {old.owner} stopped)"
            return self._claimed(new, batch, self._window_times(batch), error)
        return None

    def _own_items(self, batch: Batch) -> Batch:
        """The items of a claim's offset range that its windows hold (all of them)."""
        return batch

    def head(self, now: int) -> Head:
        if self._head is None or now - self._head_at > HEAD_CACHE_MS:
            self._head = head_of(self.stream, self.group)
            self._head_at = now
        return self._head

    def _extended(self, claim: Claim, now: int) -> None:
        """This cursor's insert of ``claim`` won: it is the chain's new head."""
        self._head, self._head_at = Head.of(claim), now

    def _forget_head(self) -> None:
        """Somebody else extended the chain: re-read the head next time."""
        self._head = None

    def claim(self, now: int, max_windows: int | None = None) -> Claimed | Waiting | None:
        """Claim the group's next window if the emitter says one is ready.

        Returns the claimed window, a :class:`Waiting` when nothing is ready, or None
        when another consumer claimed first (call again at once).
        """
        head = self.head(now)
        chosen = self._choose(head, now, max_windows)
        if isinstance(chosen, Waiting):
            return chosen
        claim, batch, times = chosen
        if not self.store.claim(claim):
            self._forget_head()
            return None
        self._extended(claim, now)
        return self._claimed(claim, batch, times)

    def commit_and_claim(self, claimed: Claimed, now: int,
                         max_windows: int | None = None) -> tuple[bool, Claimed | Waiting | None]:
        """Commit ``claimed`` and, when it is the chain's head and the emitter has the next
        window ready, claim that one in the same store write (the embedded backend: one
        transaction instead of two). Otherwise the commit alone, or the commit and the
        emitter's :class:`Waiting`."""
        head = self.head(now)
        c = claimed.claim
        if head.seq != c.last_seq or head.hi != c.hi:  # a window taken over, behind the head
            return self.commit(claimed), None
        chosen = self._choose(head, now, max_windows)
        if isinstance(chosen, Waiting):
            return self.commit(claimed), chosen
        claim, batch, times = chosen
        committed, won = self.store.commit_and_claim(c, claim)
        if not committed:
            self._fenced(c)
            self._forget_head()
            return False, None
        if not won:
            self._forget_head()
            return True, None
        self._extended(claim, now)
        return True, self._claimed(claim, batch, times)

    def _choose(self, head: Head, now: int, max_windows: int | None) -> Waiting | tuple[Claim, Batch, list[int]]:
        """What the emitter makes of the items after ``head``: the next claim (not yet
        inserted) with its items, or a :class:`Waiting`."""
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
        if self.windows_per_claim > 1 and _one_count_window(decision, decision.count):
            windows = self._run(pending, decision.count, batch, times, now, max_windows)
        hi = batch.offsets[-1] if decision.count else head.hi
        claim = head.next_claim(self.stream.name, self.group.name, hi=hi, count=len(batch), owner=self.owner,
                                lease=now + self.lease_ms, now=now, start=decision.start, end=end, windows=windows)
        return claim, batch, times

    def _run(self, pending: Pending, count: int, batch: Batch, times: list[int], now: int,
             max_windows: int | None) -> int:
        """After a count window of ``count`` items was chosen: how many windows of the same
        size the emitter has ready right behind it, that one included, up to
        ``windows_per_claim`` (and ``max_windows``); their items are appended to ``batch``
        and ``times``. Only windows already pending join a run: it never waits for one."""
        limit = self.windows_per_claim if max_windows is None else min(self.windows_per_claim, max_windows)
        windows = 1
        while windows < limit:
            pending.drop(count)
            decision = self.emitter.select(pending, now)
            if not (isinstance(decision, Emit) and _one_count_window(decision, count)):
                break
            more, more_times = pending.take(count)
            if len(more) < count:
                break
            batch.extend(more)
            times += more_times
            windows += 1
        return windows

    # -- what a claim delivers -------------------------------------------------

    def _window_times(self, batch: Batch) -> list[int]:
        return self._times(batch) if self._times else batch.times

    def _claimed(self, claim: Claim, batch: Batch, times: list[int], previous_error: str | None = None) -> Claimed:
        """The claimed window, with the history the emitter's look-back asks for (sliding
        windows); other kinds skip it at the cost of one method call."""
        claimed = Claimed(claim, batch, times, previous_error)
        lookback = self.emitter.lookback(claim) if self._looks_back else None
        if lookback is not None:
            name = self.stream.name

            def read(lo: int, hi: int) -> Batch:
                return self.store.read(name, lo, None, end=hi)

            claimed.lookback = lookback
            claimed.history, claimed.history_times = read_history(
                claim, lookback, self.group.start, len(batch), read, self._window_times)
        return claimed
