"""A group's chain of claims: its head, the kinds of record it holds, and who writes them.

A group's windows form a chain. Window ``seq`` covers the offsets right after window
``seq - 1`` (``lo = previous.hi + 1``), so every item falls in exactly one window and
the windows come in offset order. Every record of the chain is a
:class:`~streamlog.store.base.Claim` whose :attr:`~streamlog.store.base.Claim.kind` is

* ``window`` — one attempt at a window a consumer runs (and the seal of a committed one);
* ``discovery`` — a keyed group's own chain records how far key discovery read
  (:mod:`streamlog.delivery.keyed`); ``epoch`` names the reset it was built on;
* ``reset`` / ``deleted`` — an operator's marker (:mod:`streamlog.delivery.groups`): the
  group moved to ``hi + 1``, or it was deleted and its chain ends here.

A new record always extends the head (:meth:`Head.next_claim`): attempt 1 of window
``head.seq + 1``. Two writers building on the same head insert the same key and the
store lets exactly one succeed. A takeover (:func:`takeover`) is the next attempt of
the same window.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import GroupDeletedError
from ..store.base import ACTIVE, DELETED, RESET, Claim, Group

if TYPE_CHECKING:  # pragma: no cover
    from ..stream import Stream

#: a consumer trusts its own last claim as the chain head for this long (ms); older
#: claims are re-read. Well below store.base.CLAIM_RETENTION_MS, how long trim keeps
#: closed claims.
HEAD_CACHE_MS = 60_000


def new_owner() -> str:
    """A claim owner id, unique per process and cursor: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(slots=True)
class Head:
    """The end of a group's chain: its last window's number (``seq``; the last of a run of
    count windows), its last offset and end time."""

    seq: int
    hi: int
    end: int | None

    @classmethod
    def before(cls, group: Group) -> "Head":
        """The head of a chain without records: just below the group's start."""
        return cls(0, group.start - 1, None)

    @classmethod
    def of(cls, claim: Claim) -> "Head":
        return cls(claim.last_seq, claim.hi, claim.end)

    def next_claim(self, stream: str, group: str, *, hi: int, count: int, owner: str, lease: int, now: int,
                   start: int | None = None, end: int | None = None, windows: int = 1,
                   state: str = ACTIVE, epoch: int | None = None) -> Claim:
        """Attempt 1 of the record after this head, covering offsets ``head.hi + 1 … hi``:
        always at ``head.seq + 1`` — every writer building on this head inserts that same
        key, so exactly one wins (a run of count windows numbers its windows from there)."""
        return Claim(stream=stream, group=group, seq=self.seq + 1, attempt=1, lo=self.hi + 1, hi=hi, count=count,
                     start=start, end=end, windows=windows, owner=owner, lease=lease, state=state, created=now,
                     epoch=epoch)


def takeover(old: Claim, owner: str, lease: int, now: int) -> Claim:
    """The next attempt at ``old``'s window (same offsets, bounds and kind)."""
    return replace(old, attempt=old.attempt + 1, owner=owner, lease=lease, state=ACTIVE, error=None, created=now)


def check_not_deleted(last: Claim | None, stream: str, group: str) -> Claim | None:
    """``last`` (a chain's newest record), or :class:`GroupDeletedError` when it is the
    ``deleted`` marker."""
    if last is not None and last.state == DELETED:
        raise GroupDeletedError(f"group {group!r} of stream {stream!r} was deleted")
    return last


def head_of(stream: "Stream", group: Group) -> Head:
    """The end of the group's chain (before its first window: just below its start)."""
    last = check_not_deleted(stream.store.last_claim(stream.name, group.name), stream.name, group.name)
    return Head.before(group) if last is None else Head.of(last)


def epoch_of(last: Claim | None) -> int:
    """The epoch a keyed group's discovery chain is in, from its newest record: an
    operator's marker starts a new one (its own ``seq``); a discovery record carries the
    epoch it was built on. A record without an epoch — a discovery record written before
    claims had the ``epoch`` field (it kept the epoch in ``start``), or a window of the
    group from before it was keyed — counts as it always did: ``start or 0``."""
    if last is None:
        return 0
    if last.state in (RESET, DELETED):
        return last.seq
    if last.epoch is not None:
        return last.epoch
    return last.start or 0
