"""Keyed windows: every key value gets its own windows, cut by its own copy of the emitter.

``streaming(..., key="device")`` delivers windows that each hold the items of one value
of the item field ``device``, with the same boundary rules as unkeyed windows applied
to that key's items alone: ``size=10`` → 10 items of one device; ``interval=T`` → that
device's items of ``[kT, (k+1)T)``; ``gap=G`` → a device's session closes when *that
device* was quiet for ``G``. (A split of the group's windows by key could not do that.)

How (see docs/consumers.md, "Keyed windows", for the user's view):

* **One claim chain per key** (:mod:`streamlog.delivery.keys`), consumed by a
  :class:`KeyChain`: a :class:`~streamlog.delivery.cursor.Cursor` whose pending view is
  the stream's items *with that key* after the chain's head, so its claims are contiguous
  offset ranges of which only that key's items are the window. Leases, retries, dead
  letters, fencing and takeovers are those of the plain cursor, per key; keys never wait
  for each other.
* **Key discovery.** The keyed group's own chain holds ``discovery`` records: they cover
  every item and are committed once every key they contain has its chain (chains are
  created as soon as an item of a new key is read, before any claim that covers it). So on
  a restart only the items after ``min(discovery head, every key's head)`` are read again,
  and no key is missed. Each record carries the epoch it was built on
  (:func:`~streamlog.delivery.chain.epoch_of`), so a cursor notices an operator's reset.
* **Shared reads.** One read of the new items per round serves every key: the items are
  partitioned into per-key buffers that hold only items their key has not claimed yet.
  A key's emitter reads more (for all keys at once) only when its buffer runs out before
  the stream does. Key chains reach their :class:`KeyedCursor` only through
  :class:`SharedReads`.
* **Only non-empty windows.** A key's emitter is asked only while the key has pending
  items, and the empty fixed-time windows between a key's items are skipped rather than
  claimed (:class:`~streamlog.delivery.keys.NonEmpty`).
* **Idle keys.** A key with nothing pending whose head lags the read position by
  :data:`SKIP_AFTER` offsets gets an empty claim up to that position (never delivered),
  so restarts and ``trim(processed=True)`` are not held back by a key that went quiet.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Protocol

from ..emitters.base import Emitter, Wait
from ..store.base import Batch, Claim, Group
from .chain import Head, check_not_deleted, epoch_of, takeover
from .cursor import Cursor, CursorBase, Waiting
from .groups import create_group
from .keys import NonEmpty, check_key, copy_emitter, key_chain_name, key_chain_prefix, key_token
from .windows import Claimed

if TYPE_CHECKING:  # pragma: no cover
    from ..stream import Stream

log = logging.getLogger("streamlog")

#: items one shared read fetches at most
READ_CHUNK = 10_000
#: a key's emitter may make the cursor read ahead (for every key) while fewer items than
#: this are buffered; past it, a time window of a key may close before all of its items
#: of a large backlog were read (they come in its next window, counted as late)
LOOKAHEAD = 100_000
#: the discovery chain is committed at least every this many items read (and when idle)
DISCOVERY_EVERY = 10_000
#: a key with nothing pending whose head is this many offsets behind the read position
#: is moved up to it with an empty claim
SKIP_AFTER = 50_000
#: idle keys moved per idle round at most (each costs a claim and a commit)
SKIPS_PER_ROUND = 16
#: how often (ms) the cursor checks whether an operator reset or deleted the group
CHECK_EVERY_MS = 1_000
#: distinct key values whose chain names are remembered (then the memo starts afresh)
MAX_NAMES = 100_000
#: a key's hold ending this long (ms) before a new hold's end is forgotten
HOLD_MEMORY_MS = 3_600_000


class SharedReads(Protocol):
    """What a key chain may ask of the keyed cursor that feeds its buffer."""

    @property
    def base(self) -> int:
        """Every item above this offset was read into the buffers (or is still to be)."""

    def read_ahead(self) -> bool:
        """Read on for every key; whether anything was read."""

    def dropped(self, n: int) -> None:
        """A key's buffer let go of ``n`` items (they were claimed)."""

    def moved_back(self) -> None:
        """A key's chain moved back below :attr:`base` (a reset): read again."""

    def chain_of(self, data: dict) -> str:
        """The name of the key chain an item belongs to."""


def _after(batch: Batch, hi: int) -> Batch:
    """The items of ``batch`` (ascending offsets) above offset ``hi``."""
    i = bisect_left(batch.offsets, hi + 1)
    return batch if i == 0 else Batch(batch.offsets[i:], batch.times[i:], batch.data[i:])


class KeyChain(Cursor):
    """One key's chain: a :class:`Cursor` whose pending view is the key's buffer."""

    def __init__(self, shared: SharedReads, group: Group, *, parent: CursorBase, key: str):
        super().__init__(parent.stream, group, NonEmpty(copy_emitter(parent.emitter)),
                         lease=parent.lease_ms / 1000, max_retries=parent.max_retries,
                         time_field=parent.time_field, owner=parent.owner)
        self.shared = shared
        self.key = key  # the item field
        self.parent_group = parent.group.name
        self.buf = Batch()  # the key's items read and not known to be claimed, ascending
        self.wait: Wait | None = None  # the emitter's last Wait (None: ask it)
        self.fresh = True  # items arrived since the emitter was last asked

    # -- the buffer -----------------------------------------------------------------

    def add(self, offset: int, appended: int, data: dict) -> None:
        """An item of this key, read by the shared read."""
        self.buf.offsets.append(offset)
        self.buf.times.append(appended)
        self.buf.data.append(data)
        self.fresh = True

    def restart(self, now: int) -> None:
        """Forget the buffer and the cached head; re-read the head."""
        self.buf, self.wait, self.fresh = Batch(), None, True
        self._forget_head()
        self.head(now)

    def cached_head(self) -> Head | None:
        """The head this chain last read or extended (None: not known)."""
        return self._head

    def drop_through(self, hi: int) -> None:
        before = len(self.buf)
        self.buf = _after(self.buf, hi)
        self.shared.dropped(before - len(self.buf))

    def due(self, now: int) -> bool:
        """Whether the emitter should be asked again (the :class:`Wait` contract)."""
        wait = self.wait
        if wait is None or (wait.until is not None and now >= wait.until):
            return True
        if wait.pending is not None:
            return len(self.buf) >= wait.pending
        return wait.until is None and self.fresh

    def _load(self, start: int, limit: int | None) -> Batch:
        # The view's next items; the buffer keeps them until a claim takes them.
        while True:
            i = bisect_left(self.buf.offsets, start)
            if (limit is not None and len(self.buf) - i >= limit) or not self.shared.read_ahead():
                break  # enough, or the stream (or the read-ahead budget) is exhausted
        b = self.buf
        j = len(b) if limit is None else min(len(b), i + limit)
        return Batch(b.offsets[i:j], b.times[i:j], b.data[i:j])

    # -- claiming -------------------------------------------------------------------

    def claim(self, now: int, max_windows: int | None = None) -> Claimed | Waiting | None:
        head = self.head(now)
        if head.hi < self.shared.base:
            self.shared.moved_back()  # moved back (a reset): the shared read must start again
            return None
        self.drop_through(head.hi)
        if not len(self.buf):
            return Waiting(Wait(pending=1), head.hi, head.hi)
        result = super().claim(now, max_windows)
        if isinstance(result, Claimed):
            self.drop_through(result.claim.hi)
        return result

    def _own_items(self, batch: Batch) -> Batch:
        """The claim's offset range holds every key's items: the window is this key's."""
        chain = self.shared.chain_of
        keep = [i for i, data in enumerate(batch.data) if chain(data) == self.group.name]
        return Batch([batch.offsets[i] for i in keep], [batch.times[i] for i in keep], [batch.data[i] for i in keep])

    def _claimed(self, claim: Claim, batch: Batch, times: list[int], previous_error: str | None = None) -> Claimed:
        """A key's windows carry the key value and the user's group; empty ones (skipped
        idle ranges) are not delivered."""
        key = batch.data[0].get(self.key) if len(batch) else None
        return Claimed(claim, batch, times, previous_error, group=self.parent_group, key=key, keyed=True)

    def skip(self, now: int, hi: int) -> None:
        """Move the idle key's head up to ``hi`` with an empty claim (committed at once)."""
        head = self.head(now)
        self.drop_through(head.hi)
        if head.hi >= hi or head.hi < self.shared.base or len(self.buf):
            return
        claim = head.next_claim(self.stream.name, self.group.name, hi=hi, count=0, owner=self.owner,
                                lease=now + self.lease_ms, now=now, start=head.end, end=head.end)
        if self.store.claim(claim):
            self.store.commit(claim)
            self._extended(claim, now)
        else:
            self._forget_head()


_NOTHING = object()


class KeyedCursor(CursorBase):
    """A consumer's handle on a keyed group: the runtime's cursor protocol
    (:class:`~streamlog.delivery.cursor.DeliveryCursor`) over one chain per key plus the
    group's own chain for key discovery (see the module doc).

    ``claim`` returns the ready window of the key whose oldest pending item is oldest
    (keys are independent: a key's failing window holds no other key back); ``reclaim``
    takes over expired windows of every key; ``commit``/``renew``/``release`` act on the
    claim they are given, whatever its key. Claiming runs on one thread; the others may
    be called from worker threads.
    """

    def __init__(self, stream: "Stream", group: Group, emitter: Emitter, *, key: str, lease: float,
                 max_retries: int, time_field: str | None = None, owner: str | None = None):
        check_key(key, emitter=emitter)
        super().__init__(stream, group, emitter, lease=lease, max_retries=max_retries, time_field=time_field,
                         owner=owner)
        self.key = key
        self._prefix = key_chain_prefix(group.name, key)
        self._keys: dict[str, KeyChain] = {}
        self._names: dict[str, str] = {}  # key token → chain name
        self._stale = True  # (re)build the key state before the next round
        self._base = -1  # every item above this offset was read (or is still to be read)
        self._frontier = -1  # … up to here
        self._at_end = False  # the last read reached the end of the stream
        self._fresh = False  # a probe read items the next claim need not read again
        self._buffered = 0  # items in the keys' buffers
        self._disc = Head.before(group)  # the discovery chain's head
        self._epoch = 0  # identifies the last reset of the discovery chain this cursor built on
        self._checked = 0  # ms: last check for a reset or delete
        self._holds: dict[str, int] = {}  # key chain → until when (ms) its next windows wait

    # -- what key chains may ask (SharedReads) -------------------------------------------

    @property
    def base(self) -> int:
        return self._base

    def read_ahead(self) -> bool:
        """Read on for a key whose buffer ran out (while the stream has more and the
        buffers are not too full); whether anything was read."""
        if self._at_end or self._buffered >= LOOKAHEAD:
            return False
        return self._read() > 0

    def dropped(self, n: int) -> None:
        self._buffered -= n

    def moved_back(self) -> None:
        self._stale = True

    def chain_of(self, data: dict) -> str:
        token = key_token(data.get(self.key))
        name = self._names.get(token)
        if name is None:
            if len(self._names) >= MAX_NAMES:
                self._names.clear()
            name = self._names[token] = key_chain_name(self.group.name, self.key, token)
        return name

    # -- key state ----------------------------------------------------------------

    def _discovery_head(self) -> Claim | None:
        return check_not_deleted(self.store.last_claim(self.stream.name, self.group.name),
                                 self.stream.name, self.group.name)

    def _build(self, now: int) -> None:
        """Start (again) from the stored state: the discovery head first, then the key
        chains (so every key with items at or below that head is among them), then read
        on from the lowest of all their heads."""
        last = self._discovery_head()
        self._epoch = epoch_of(last)
        self._disc = Head.before(self.group) if last is None else Head.of(last)
        keys: dict[str, KeyChain] = {}
        for group in self.store.groups(self.stream.name):
            if group.name.startswith(self._prefix):
                kc = self._keys.get(group.name) or self._chain(group)
                kc.restart(now)
                keys[group.name] = kc
        self._keys = keys
        self._base = min([self._disc.hi] + [kc.head(now).hi for kc in keys.values()])
        self._frontier = self._base
        self._buffered = 0
        self._at_end = self._fresh = self._stale = False
        self._checked = now

    def _check(self, now: int) -> None:
        """Notice a reset (rebuild) or delete (raise) of the group, at most once a second."""
        if now - self._checked < CHECK_EVERY_MS:
            return
        self._checked = now
        last = self._discovery_head()
        if epoch_of(last) != self._epoch:
            self._stale = True
        elif last is not None and last.seq > self._disc.seq:
            self._disc = Head.of(last)  # another consumer moved discovery on

    def _sync(self, now: int) -> None:
        self._check(now)
        if self._stale:
            self._build(now)

    def _chain(self, group: Group) -> KeyChain:
        return KeyChain(self, group, parent=self, key=self.key)

    def _key(self, name: str, offset: int) -> KeyChain:
        kc = self._keys.get(name)
        if kc is None:
            # Created before any discovery claim covering this item can commit: restart-safe.
            kc = self._keys[name] = self._chain(create_group(self.stream, name, offset))
        return kc

    # -- reading ------------------------------------------------------------------

    def _read(self) -> int:
        """One shared read of the items after the frontier, into the keys' buffers."""
        batch = self.store.read(self.stream.name, self._frontier + 1, READ_CHUNK)
        self._at_end = len(batch) < READ_CHUNK
        for offset, t, data in zip(batch.offsets, batch.times, batch.data, strict=True):
            self._key(self.chain_of(data), offset).add(offset, t, data)
        if batch:
            self._frontier = batch.offsets[-1]
            self._buffered += len(batch)
        return len(batch)

    def probe(self, after: int, seen: int, want: int) -> tuple[bool, int]:
        """Read the new items (kept for the next claim); ready when there were any."""
        if self._stale:
            return True, seen
        n = self._read()
        self._fresh = self._fresh or n > 0
        return n > 0, self._frontier

    # -- claiming -----------------------------------------------------------------

    def claim(self, now: int, max_windows: int | None = None) -> Claimed | Waiting | None:
        """Claim the next ready window of any key (oldest pending item first), a
        :class:`Waiting` when no key has one, or None to be called again at once."""
        self._sync(now)
        if not self._fresh and self._buffered < LOOKAHEAD:
            self._read()
        self._fresh = False
        while True:
            result = self._claim_ready(now, max_windows)
            if result is not _NOTHING:
                if self._frontier - self._disc.hi >= DISCOVERY_EVERY:
                    self._discover(now)
                return result
            if self._at_end:
                break
            self._read()  # nothing ready yet, but more items wait
        self._idle(now)
        if self._stale:
            return None
        until = min((kc.wait.until for kc in self._keys.values()
                     if len(kc.buf) and kc.wait is not None and kc.wait.until is not None), default=None)
        return Waiting(Wait(until=until, pending=1), self._frontier, self._frontier)

    def hold(self, claimed: Claimed, until: int) -> bool:
        """Claim no further window of the released window's key until ``until`` (ms,
        inclusive): its window is retried first, while the other keys go on."""
        chain = claimed.claim.group
        self._holds = {c: t for c, t in self._holds.items() if t >= until - HOLD_MEMORY_MS}
        self._holds[chain] = max(until, self._holds.get(chain, 0))
        return True

    def _claim_ready(self, now: int, max_windows: int | None) -> Any:
        holds = self._holds
        due = sorted((kc for kc in self._keys.values()
                      if len(kc.buf) and kc.due(now) and holds.get(kc.group.name, -1) < now),
                     key=lambda kc: kc.buf.offsets[0])
        for kc in due:
            result = kc.claim(now, max_windows)
            if result is None:
                return None  # lost a race (or the group moved): the runtime calls again
            if isinstance(result, Waiting):
                kc.wait, kc.fresh = result.wait, False
                continue
            kc.wait, kc.fresh = None, True  # its next window may be ready too
            return result
        return _NOTHING

    def _idle(self, now: int) -> None:
        """Nothing is ready: move idle keys and the discovery chain up to what was read."""
        lagging = [kc for kc in self._keys.values()
                   if (head := kc.cached_head()) is not None and self._frontier - head.hi >= SKIP_AFTER]
        for kc in lagging[:SKIPS_PER_ROUND]:
            kc.skip(now, self._frontier)
        if self._frontier > self._disc.hi:
            self._discover(now)

    def _discover(self, now: int) -> None:
        """Commit a discovery record over the items read since the discovery head (every
        key in them has its chain already)."""
        d, hi = self._disc, self._frontier
        claim = d.next_claim(self.stream.name, self.group.name, hi=hi, count=hi - d.hi, owner=self.owner,
                             lease=now + self.lease_ms, now=now, epoch=self._epoch)
        if self.store.claim(claim):
            self.store.commit(claim)
            self._disc = Head(claim.seq, hi, None)
        else:
            self._checked = 0
            self._check(now)  # another consumer moved it on, or an operator reset it

    # -- taking over ----------------------------------------------------------------

    def _expired(self, now: int) -> list[Claim]:
        """Expired or released windows of the group's chains (one query for all keys)."""
        return [c for c in self.store.open_claims(self.stream.name)
                if c.lease < now and (c.group == self.group.name or c.group.startswith(self._prefix))]

    def reclaimable(self, now: int) -> bool:
        self._check(now)
        return self._stale or bool(self._expired(now))

    def reclaim(self, now: int) -> Claimed | None:
        """Take over the oldest expired window of any key (and finish a discovery record
        whose consumer died: its keys' chains exist, so it is only committed)."""
        self._sync(now)
        for old in sorted(self._expired(now), key=lambda c: c.lease):
            if old.group == self.group.name:
                new = takeover(old, self.owner, now + self.lease_ms, now)
                if self.store.claim(new):
                    self.store.commit(new)
                self.store.supersede(old)
                continue
            kc = self._keys.get(old.group)
            if kc is None:  # a key another consumer found after this one started
                kc = self._key(old.group, old.lo)
            claimed = kc.reclaim(now)
            if claimed is not None:
                return claimed
        return None
