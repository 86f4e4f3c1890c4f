"""Keyed windows: every key value gets its own windows, cut by its own copy of the emitter.

``streaming(..., key="device")`` delivers windows that each hold the items of one value
of the item field ``device``, with the same boundary rules as unkeyed windows applied
to that key's items alone: ``size=10`` → 10 items of one device; ``interval=T`` → that
device's items of ``[kT, (k+1)T)``; ``gap=G`` → a device's session closes when *that
device* was quiet for ``G``. (A split of the group's windows by key could not do that.)

How (see docs/consumers.md, "Keyed windows", for the user's view):

* **One claim chain per key.** The key value ``v`` of group ``G`` is consumed through a
  group of its own, ``G#<field digest>.<value digest>``
  (:func:`streamlog.groups.key_chain_name`; ``#`` is not allowed in user names, so no
  user group collides). Its pending view is the stream's items *with that key* after
  the chain's head, so its claims are contiguous offset ranges of which only that key's
  items are the window. Leases, retries, dead letters, fencing and takeovers are those of
  :class:`~streamlog.claims.Cursor`, per key; keys never wait for each other.
* **Key discovery.** ``G`` itself is the discovery chain: its claims cover every item and
  are committed once every key they contain has its chain (chains are created as soon as
  an item of a new key is read, before any claim that covers it). So on a restart only
  the items after ``min(discovery head, every key's head)`` are read again, and no key is
  missed.
* **Shared reads.** One read of the new items per round serves every key: the items are
  partitioned into per-key buffers that hold only items their key has not claimed yet.
  A key's emitter reads more (for all keys at once) only when its buffer runs out before
  the stream does.
* **Only non-empty windows.** A key's emitter is asked only while the key has pending
  items, and the empty fixed-time windows between a key's items are skipped rather than
  claimed (:class:`NonEmpty`).
* **Idle keys.** A key with nothing pending whose head lags the read position by
  :data:`SKIP_AFTER` offsets gets an empty claim up to that position (never delivered),
  so restarts and ``trim(processed=True)`` are not held back by a key that went quiet.
"""

from __future__ import annotations

import copy
import json
import logging
from bisect import bisect_left
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Callable

from .claims import Claimed, Cursor, Head, Waiting
from .emitters.base import Emit, Emitter, Pending, Wait
from .errors import ConsumerError, GroupDeletedError
from .groups import create_group, key_chain_name, key_chain_prefix
from .store.base import ACTIVE, DELETED, RESET, Batch, Claim, Group
from .window import Window

if TYPE_CHECKING:  # pragma: no cover
    from .stream import Stream

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
#: consecutive empty windows a key's emitter may skip in one decision
MAX_SKIPS = 10_000


def key_token(value: Any) -> str:
    """The canonical text of a key value: values that compare equal as JSON numbers give
    equal tokens (``1`` and ``1.0``); ``True`` is not ``1``; ``None`` (a missing field
    too) is ``null``; strings, lists and objects by their (sorted) JSON text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def check_key(key: Any, fn: Callable | None = None, emitter: Any = None) -> str | None:
    """``key=`` as given (None: unkeyed); a :class:`ConsumerError` for a bad field name, a
    learner (its state is one model per group, not per key) or a sliding emitter (its
    history is read by offset range, which would mix keys)."""
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise ConsumerError(f"key= must be the name of an item field, not {key!r}")
    if fn is not None and callable(getattr(fn, "attach", None)):
        raise ConsumerError(f"{type(fn).__name__} keeps one model per group: it cannot consume keyed windows "
                            "(key=); give each key its own group, or drop key=")
    if emitter is not None:
        base = getattr(Emitter, "lookback", None)
        if base is not None and getattr(type(emitter), "lookback", base) is not base:
            raise ConsumerError(f"key= does not work with {type(emitter).__name__}: sliding windows re-read "
                                "their history by offset range, which holds every key")
    return key


class NonEmpty(Emitter):
    """A key's emitter: the key's own copy of the user's emitter, whose empty windows
    (fixed-time windows between a key's items) are skipped instead of claimed — the next
    decision is taken as if the skipped window had been the previous one. A decision that
    makes no progress is passed on as it is (it is then claimed and not delivered)."""

    def __init__(self, inner: Emitter):
        self.inner = inner
        self.kind = getattr(inner, "kind", "custom")

    def select(self, pending: Pending, now: int) -> Emit | Wait:
        decision = self.inner.select(pending, now)
        for _ in range(MAX_SKIPS):
            if not (isinstance(decision, Emit) and decision.count == 0 and decision.end is not None):
                return decision
            if pending.previous_end is not None and decision.end <= pending.previous_end:
                return decision
            pending.previous_end = decision.end
            decision = self.inner.select(pending, now)
        return decision

    def __repr__(self) -> str:
        return repr(self.inner)


@dataclass(slots=True)
class KeyClaimed(Claimed):
    """A claimed window of one key: its windows carry ``key`` and the user's group name,
    and empty ones (skipped idle ranges) are not delivered."""

    key: Any = None
    parent: str = ""

    def windows(self, stream: "Stream") -> list[Window]:
        out = []
        for window in Claimed.windows(self, stream):
            if len(window):
                window.key = self.key
                window.group = self.parent
                out.append(window)
        return out


def _copy(emitter: Emitter) -> Emitter:
    """A key's own copy of the emitter (emitters may keep state between decisions)."""
    try:
        return copy.deepcopy(emitter)
    except Exception:  # noqa: BLE001 - a custom emitter holding something uncopyable
        return copy.copy(emitter)


def _after(batch: Batch, hi: int) -> Batch:
    """The items of ``batch`` (ascending offsets) above offset ``hi``."""
    i = bisect_left(batch.offsets, hi + 1)
    return batch if i == 0 else Batch(batch.offsets[i:], batch.times[i:], batch.data[i:])


class _KeyCursor(Cursor):
    """One key's chain: a :class:`Cursor` whose pending view is the key's buffer."""

    def __init__(self, keyed: "KeyedCursor", group: Group):
        super().__init__(keyed.stream, group, NonEmpty(_copy(keyed.emitter)),
                         lease=keyed.lease_ms / 1000, max_retries=keyed.max_retries,
                         time_field=keyed.time_field, owner=keyed.owner)
        self.keyed = keyed
        self.buf = Batch()  # the key's items read and not known to be claimed, ascending
        self.wait: Wait | None = None  # the emitter's last Wait (None: ask it)
        self.fresh = True  # items arrived since the emitter was last asked

    def drop_through(self, hi: int) -> None:
        before = len(self.buf)
        self.buf = _after(self.buf, hi)
        self.keyed._buffered -= before - len(self.buf)

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
            if (limit is not None and len(self.buf) - i >= limit) or not self.keyed._read_ahead():
                break  # enough, or the stream (or the read-ahead budget) is exhausted
        b = self.buf
        j = len(b) if limit is None else min(len(b), i + limit)
        return Batch(b.offsets[i:j], b.times[i:j], b.data[i:j])

    def claim(self, now: int, max_windows: int | None = None) -> Claimed | Waiting | None:
        head = self.head(now)
        if head.hi < self.keyed._base:
            self.keyed._stale = True  # moved back (a reset): the shared read must start again
            return None
        self.drop_through(head.hi)
        if not len(self.buf):
            return Waiting(Wait(pending=1), head.hi, head.hi)
        result = super().claim(now, max_windows)
        if isinstance(result, Claimed):
            self.drop_through(result.claim.hi)
        return result

    def reclaim(self, now: int) -> Claimed | None:
        claimed = super().reclaim(now)
        if claimed is None:
            return None
        # The claim's offset range holds every key's items: the window is this key's.
        b, chain = claimed.batch, self.keyed._chain_of
        keep = [i for i, data in enumerate(b.data) if chain(data) == self.group.name]
        claimed.batch = Batch([b.offsets[i] for i in keep], [b.times[i] for i in keep], [b.data[i] for i in keep])
        claimed.times = [claimed.times[i] for i in keep]
        return claimed

    def skip(self, now: int, hi: int) -> None:
        """Move the idle key's head up to ``hi`` with an empty claim (committed at once)."""
        head = self.head(now)
        self.drop_through(head.hi)
        if head.hi >= hi or head.hi < self.keyed._base or len(self.buf):
            return
        claim = Claim(self.stream.name, self.group.name, head.seq + 1, 1, head.hi + 1, hi, 0, head.end, head.end,
                      1, self.owner, now + self.lease_ms, ACTIVE, None, now)
        if self.store.claim(claim):
            self.store.commit(claim)
            self._head, self._head_at = Head(claim.seq, hi, head.end), now
        else:
            self._head = None


_NOTHING = object()


class KeyedCursor(Cursor):
    """A consumer's handle on a keyed group: the runtime's :class:`Cursor` interface over
    one chain per key plus the group's own chain for key discovery (see the module doc).

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
        self.time_field = time_field
        self._prefix = key_chain_prefix(group.name, key)
        self._keys: dict[str, _KeyCursor] = {}
        self._names: dict[str, str] = {}  # key token → chain name
        self._stale = True  # (re)build the key state before the next round
        self._base = -1  # every item above this offset was read (or is still to be read)
        self._frontier = -1  # … up to here
        self._at_end = False  # the last read reached the end of the stream
        self._fresh = False  # a probe read items the next claim need not read again
        self._buffered = 0  # items in the keys' buffers
        self._disc = Head(0, group.start - 1, None)  # the discovery chain's head
        self._epoch = 0  # identifies the last reset of the discovery chain this cursor built on
        self._checked = 0  # ms: last check for a reset or delete
        self._holds: dict[str, int] = {}  # key chain → until when (ms) its next windows wait

    # -- key state ----------------------------------------------------------------

    def _chain_of(self, data: dict) -> str:
        token = key_token(data.get(self.key))
        name = self._names.get(token)
        if name is None:
            if len(self._names) >= 100_000:
                self._names.clear()
            name = self._names[token] = key_chain_name(self.group.name, self.key, token)
        return name

    @staticmethod
    def _epoch_of(last: Claim | None) -> int:
        """Discovery claims carry the epoch they were built on in their start field; a
        reset marker starts a new epoch (its own seq)."""
        if last is None:
            return 0
        if last.state in (RESET, DELETED):
            return last.seq
        return last.start or 0

    def _discovery_head(self) -> Claim | None:
        last = self.store.last_claim(self.stream.name, self.group.name)
        if last is not None and last.state == DELETED:
            raise GroupDeletedError(f"group {self.group.name!r} of stream {self.stream.name!r} was deleted")
        return last

    def _build(self, now: int) -> None:
        """Start (again) from the stored state: the discovery head first, then the key
        chains (so every key with items at or below that head is among them), then read
        on from the lowest of all their heads."""
        last = self._discovery_head()
        self._epoch = self._epoch_of(last)
        self._disc = Head(0, self.group.start - 1, None) if last is None else Head(last.seq, last.hi, last.end)
        keys: dict[str, _KeyCursor] = {}
        for group in self.store.groups(self.stream.name):
            if group.name.startswith(self._prefix):
                kc = self._keys.get(group.name) or _KeyCursor(self, group)
                kc.buf, kc.wait, kc.fresh = Batch(), None, True
                kc._head, kc._head_at = None, 0
                kc.head(now)
                keys[group.name] = kc
        self._keys = keys
        self._base = min([self._disc.hi] + [kc._head.hi for kc in keys.values()])
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
        if self._epoch_of(last) != self._epoch:
            self._stale = True
        elif last is not None and last.seq > self._disc.seq:
            self._disc = Head(last.seq, last.hi, last.end)  # another consumer moved discovery on

    def _sync(self, now: int) -> None:
        self._check(now)
        if self._stale:
            self._build(now)

    def _key(self, name: str, offset: int) -> _KeyCursor:
        kc = self._keys.get(name)
        if kc is None:
            # Created before any discovery claim covering this item can commit: restart-safe.
            kc = self._keys[name] = _KeyCursor(self, create_group(self.stream, name, offset))
        return kc

    # -- reading ------------------------------------------------------------------

    def _read(self) -> int:
        """One shared read of the items after the frontier, into the keys' buffers."""
        batch = self.store.read(self.stream.name, self._frontier + 1, READ_CHUNK)
        self._at_end = len(batch) < READ_CHUNK
        for offset, t, data in zip(batch.offsets, batch.times, batch.data):
            kc = self._key(self._chain_of(data), offset)
            kc.buf.offsets.append(offset)
            kc.buf.times.append(t)
            kc.buf.data.append(data)
            kc.fresh = True
        if batch:
            self._frontier = batch.offsets[-1]
            self._buffered += len(batch)
        return len(batch)

    def _read_ahead(self) -> bool:
        """Read on for a key whose buffer ran out (while the stream has more and the
        buffers are not too full); whether anything was read."""
        if self._at_end or self._buffered >= LOOKAHEAD:
            return False
        return self._read() > 0

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

    def hold(self, chain: str, until: int) -> None:
        """Claim no further window of the key whose chain is ``chain`` until ``until`` (ms,
        inclusive): its released window is retried first, while the other keys go on."""
        self._holds = {c: t for c, t in self._holds.items() if t >= until - 3_600_000}  # forget old ones
        self._holds[chain] = max(until, self._holds.get(chain, 0))

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
            return self._wrap(result)
        return _NOTHING

    def _wrap(self, claimed: Claimed) -> KeyClaimed:
        values = {f.name: getattr(claimed, f.name) for f in fields(Claimed)}
        key = claimed.batch.data[0].get(self.key) if len(claimed.batch) else None
        return KeyClaimed(**values, key=key, parent=self.group.name)

    def _idle(self, now: int) -> None:
        """Nothing is ready: move idle keys and the discovery chain up to what was read."""
        lagging = [kc for kc in self._keys.values()
                   if kc._head is not None and self._frontier - kc._head.hi >= SKIP_AFTER]
        for kc in lagging[:SKIPS_PER_ROUND]:
            kc.skip(now, self._frontier)
        if self._frontier > self._disc.hi:
            self._discover(now)

    def _discover(self, now: int) -> None:
        """Commit a discovery claim over the items read since the discovery head (every
        key in them has its chain already)."""
        d, hi = self._disc, self._frontier
        claim = Claim(self.stream.name, self.group.name, d.seq + 1, 1, d.hi + 1, hi, hi - d.hi, self._epoch, None,
                      1, self.owner, now + self.lease_ms, ACTIVE, None, now)
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
        """Take over the oldest expired window of any key (and finish a discovery claim
        whose consumer died: its keys' chains exist, so it is only committed)."""
        self._sync(now)
        for old in sorted(self._expired(now), key=lambda c: c.lease):
            if old.group == self.group.name:
                new = replace(old, attempt=old.attempt + 1, owner=self.owner, lease=now + self.lease_ms,
                              state=ACTIVE, error=None, created=now)
                if self.store.claim(new):
                    self.store.commit(new)
                self.store.supersede(old)
                continue
            kc = self._keys.get(old.group)
            if kc is None:  # a key another consumer found after this one started
                kc = self._key(old.group, old.lo)
            claimed = kc.reclaim(now)
            if claimed is not None:
                return self._wrap(claimed)
        return None

    # -- finishing ------------------------------------------------------------------

    def _dead_letter_fields(self, claimed: Claimed) -> dict:
        """Dead letters name the user's group (not the key's chain) and the key."""
        return {"group": self.group.name, "key": getattr(claimed, "key", None)}
