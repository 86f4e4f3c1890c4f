"""Consumer groups as an operator sees them: create, report, reset, delete, re-drive.

Everything here is built on the claim chain (:mod:`streamlog.delivery.chain`) and the
store contract. Operators move a group with markers in its chain: a ``reset`` record
whose ``hi`` is the offset before the group's new position, and a ``deleted`` record
that ends the chain of a deleted group. Nothing here claims windows for processing
(``redrive`` consumes the dead-letter stream through a plain cursor).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..emitters import RelaxedTimeWindow
from ..errors import ConsumerError, StreamlogError, UnknownGroupError
from ..items import ms_to_datetime, now_ms
from ..names import check_name, dead_letter_stream
from ..store.base import ACTIVE, DEFAULT_GROUP, DELETED, RESET, Batch, Claim, Group
from .chain import Head, head_of, new_owner
from .cursor import Cursor
from .keys import KEY_MARK, key_chains, visible_groups
from .windows import Claimed

if TYPE_CHECKING:  # pragma: no cover
    from ..stream import Stream


def start_offset(stream: "Stream", start: str | int, what: str = "start") -> int:
    """A group position as an offset: ``"earliest"`` (0), ``"latest"`` (after the newest
    item) or an offset from 0 to 2**63-1."""
    if start == "earliest":
        return 0
    if start == "latest":
        last = stream.store.last_offset(stream.name)
        return 0 if last is None else last + 1
    if isinstance(start, int) and not isinstance(start, bool) and 0 <= start < 2**63:
        return start
    raise ConsumerError(f"{what} must be 'earliest', 'latest' or an offset >= 0, not {start!r}")


def find_group(stream: "Stream", name: str) -> Group | None:
    return next((g for g in stream.store.groups(stream.name) if g.name == name), None)


def ensure_group(stream: "Stream", name: str, start: str | int = "earliest") -> Group:
    """Get or create a group; an existing group keeps its start."""
    group = find_group(stream, name)
    if group is not None:
        return group
    return create_group(stream, name, start_offset(stream, start))


def create_group(stream: "Stream", name: str, start: int) -> Group:
    """Get or create a group by name without listing the stream's groups (an existing
    group keeps its start); a new group after a deleted one of that name starts anew."""
    group = stream.store.create_group(stream.name, name, start)
    last = stream.store.last_claim(stream.name, name)
    if last is not None and last.state == DELETED:
        # A group of that name was deleted: its chain ends in a tombstone; start anew after it.
        _append_marker(stream, group, RESET, group.start - 1)
    return group


def _append_marker(stream: "Stream", group: Group, state: str, hi: int | None) -> Claim:
    """Put a closed ``reset``/``deleted`` record at the end of the group's chain.

    Every open window of the group is sealed with the same state first, so a consumer
    still running one cannot commit it (its commit returns False and is logged). The
    marker is a unique insert at ``head.seq + 1``: when a consumer extends the chain at
    that moment, the marker goes after its window (which is then sealed too).
    ``hi=None``: the head's own ``hi`` (the position does not move).
    """
    store, name = stream.store, stream.name
    owner = f"operator:{new_owner()}"
    for _ in range(1000):
        for claim in store.open_claims(name, group.name):
            store.commit(claim, state)
        last = store.last_claim(name, group.name)
        head = Head.before(group) if last is None else Head.of(last)
        marker = head.next_claim(name, group.name, hi=head.hi if hi is None else hi, count=0, owner=owner,
                                 lease=0, now=now_ms(), state=state)
        if store.claim(marker):
            return marker
    raise StreamlogError(f"could not move group {group.name!r} of {name!r}: its consumers kept extending it")


def _latest_attempts(claims: list[Claim]) -> list[Claim]:
    """One open attempt per window (the newest), by seq."""
    newest: dict[tuple[str, int], Claim] = {}
    for claim in claims:
        key = (claim.group, claim.seq)
        if key not in newest or claim.attempt > newest[key].attempt:
            newest[key] = claim
    return sorted(newest.values(), key=lambda c: (c.group, c.seq))


def group_state(stream: "Stream", group: Group, groups: list[Group] | None = None) -> dict:
    """Counts for ``info``: pending (not yet processed), claimed (being processed),
    failed (released, waiting for a retry), windows (committed or in flight).

    A keyed group sums its key chains and adds ``keys`` (see :func:`_keyed_state`);
    ``groups``: the stream's groups, when the caller already listed them."""
    chains = key_chains(stream, group.name, groups)
    if chains:
        return _keyed_state(stream, group, chains)
    store = stream.store
    head = head_of(stream, group)
    open_claims = _latest_attempts(store.open_claims(stream.name, group.name))
    now = now_ms()
    waiting = store.count(stream.name, after=head.hi)
    return {
        "start": group.start,
        "pending": waiting + sum(c.count for c in open_claims),
        "claimed": sum(c.count for c in open_claims if c.state == ACTIVE and c.lease >= now),
        "failed": sum(c.count for c in open_claims if c.state != ACTIVE),
        "windows": head.seq,
        "next_offset": head.hi + 1,
    }


def _keyed_state(stream: "Stream", group: Group, chains: list[Group]) -> dict:
    """A keyed group's counts: ``keys`` (key chains), ``windows`` (claims of all keys),
    ``claimed`` and ``failed`` (items in its keys' open windows), ``pending`` (those plus
    the items its key discovery has not read yet; items that wait in a key's unfinished
    window are not counted: counting them would mean reading the stream),
    ``next_offset`` (the next offset key discovery reads). One query per key."""
    store = stream.store
    head = head_of(stream, group)
    prefix = group.name + KEY_MARK
    open_claims = _latest_attempts([c for c in store.open_claims(stream.name) if c.group.startswith(prefix)])
    now = now_ms()
    windows = 0
    for chain in chains:
        last = store.last_claim(stream.name, chain.name)
        windows += 0 if last is None else last.seq
    return {
        "start": group.start,
        "pending": store.count(stream.name, after=head.hi) + sum(c.count for c in open_claims),
        "claimed": sum(c.count for c in open_claims if c.state == ACTIVE and c.lease >= now),
        "failed": sum(c.count for c in open_claims if c.state != ACTIVE),
        "windows": windows,
        "next_offset": head.hi + 1,
        "keys": len(chains),
    }


def processed_floor(stream: "Stream", group: Group) -> int:
    """The lowest offset the group has not processed: items below it are done."""
    open_claims = stream.store.open_claims(stream.name, group.name)
    if open_claims:
        return min(c.lo for c in open_claims)
    return head_of(stream, group).hi + 1


def unprocessed(stream: "Stream", group_name: str, limit: int | None) -> Batch:
    """Items a group has not processed yet: its open windows, then everything after its head.

    For a group that does not exist: every item (what it would see if created now)."""
    store = stream.store
    group = find_group(stream, group_name)
    if group is None:
        return store.read(stream.name, 0, limit)
    batch = Batch()
    for claim in _latest_attempts(store.open_claims(stream.name, group_name)):
        left = None if limit is None else limit - len(batch)
        if left is not None and left <= 0:
            return batch
        if claim.hi >= claim.lo:
            batch.extend(store.read(stream.name, claim.lo, left, end=claim.hi))
    left = None if limit is None else limit - len(batch)
    if left is None or left > 0:
        batch.extend(store.read(stream.name, head_of(stream, group).hi + 1, left))
    return batch


@dataclass
class ConsumerGroup:
    """A consumer group of a stream, as an operator handles it.

    Get one with :meth:`Stream.group` (get or create), :meth:`Stream.get_group` (must
    exist) or :meth:`Stream.groups`. ``name``, ``start`` (the first offset it sees)
    and ``created`` describe it; :meth:`info`, :meth:`reset` and :meth:`delete` act on it.
    """

    stream: "Stream"
    name: str
    start: int
    created: datetime

    @classmethod
    def of(cls, stream: "Stream", group: Group) -> "ConsumerGroup":
        return cls(stream, group.name, group.start, ms_to_datetime(group.created))

    def _record(self) -> Group:
        group = find_group(self.stream, self.name)
        if group is None:
            raise UnknownGroupError(f"stream {self.stream.name!r} has no group {self.name!r}")
        return group

    def info(self) -> dict[str, Any]:
        """``start``, ``pending``, ``claimed``, ``failed``, ``windows``, ``next_offset``,
        ``dead`` (dead letters of this group) and ``created``; a keyed group also
        ``keys`` (see :func:`_keyed_state` for what its counts cover)."""
        state = group_state(self.stream, self._record())
        state["dead"] = self.stream._dead_counts().get(self.name, 0)
        state["created"] = self.created
        return state

    def reset(self, to: str | int) -> int:
        """Move the group so that its next window starts at ``to`` (an offset,
        ``"earliest"`` or ``"latest"``); returns that offset.

        Backwards replays items the group already processed; forwards skips items
        (they are never delivered to this group). Windows in flight are cancelled: a
        consumer running one at that moment finishes its function, but its commit is
        refused (logged), and it carries on from ``to`` — nothing is delivered twice
        or skipped other than what the reset asked for. A keyed group moves every key's
        chain to ``to`` as well.
        """
        group = self._record()
        offset = start_offset(self.stream, to, "to")
        # A keyed group moves every key, then its key discovery (which running consumers watch).
        for chain in key_chains(self.stream, self.name):
            _append_marker(self.stream, chain, RESET, offset - 1)
        _append_marker(self.stream, group, RESET, offset - 1)
        return offset

    def delete(self) -> None:
        """Delete the group: its record and its claims. A consumer of the group running
        at that moment cannot commit its window and stops with
        :class:`~streamlog.errors.GroupDeletedError` at its next claim. Creating a
        group of the same name later starts a new group. The ``default`` group cannot
        be deleted (it is part of the stream); reset it instead. A keyed group's key
        chains are deleted with it.
        """
        if self.name == DEFAULT_GROUP:
            raise ConsumerError("the default group cannot be deleted (reset it instead)")
        group = self._record()
        marker = _append_marker(self.stream, group, DELETED, None)
        self.stream.store.delete_group(self.stream.name, self.name, marker.seq)
        for chain in key_chains(self.stream, self.name):  # a keyed group's keys go with it
            marker = _append_marker(self.stream, chain, DELETED, None)
            self.stream.store.delete_group(self.stream.name, chain.name, marker.seq)

    def __repr__(self) -> str:
        return f"<ConsumerGroup {self.stream.name!r}/{self.name!r} start={self.start}>"


def redrive(stream: "Stream", group: str | None = None, limit: int | None = None,
            to: "Stream | None" = None) -> int:
    """Append the dead letters of ``stream`` (of one group, or all) back onto ``to``
    (default: ``stream`` itself); returns how many.

    What was re-driven is remembered per failing group as a consumer group
    ``redrive.<group>`` of the dead-letter stream, committed after each batch is
    appended: a second run re-drives only newer dead letters. ``group=None`` re-drives
    the dead letters of every group the stream has now. At-least-once: a crash between
    an append and its commit re-drives that batch again.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise StreamlogError(f"limit must be a positive integer, not {limit!r}")
    if group is None:
        # Every group's dead letters, each through that group's own marker: re-driving
        # all and then one group (or the reverse) never re-drives anything twice.
        total = 0
        for each in visible_groups(stream.store.groups(stream.name)):  # keyed: dead letters name the group
            if limit is not None and total >= limit:
                break
            total += redrive(stream, each.name, None if limit is None else limit - total, to)
        return total
    check_name(group, "group")
    store = stream.store
    dead_name = dead_letter_stream(stream.name)
    if store.get_stream(dead_name) is None:
        return 0
    dead = stream.client.get(dead_name)
    target = to if to is not None else stream
    marker_group = ensure_group(dead, f"redrive.{group}", "earliest")
    done = 0
    while limit is None or done < limit:
        cap = 1000 if limit is None else min(1000, limit - done)
        cursor = Cursor(dead, marker_group, RelaxedTimeWindow(3600, max_size=cap), lease=60, max_retries=0)
        claimed = cursor.claim(now_ms())
        if claimed is None:
            continue  # another redrive extended the chain first
        if not isinstance(claimed, Claimed):
            break  # nothing pending
        records = [d for d in claimed.batch.data if d.get("group") == group]
        items = [r["data"] for r in records if isinstance(r.get("data"), dict)]
        if items:
            target.extend(items)
        if cursor.commit(claimed):
            done += len(items)
    return done
