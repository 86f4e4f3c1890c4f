"""The store contract: the few operations every backend implements.

streamlog's semantics (offsets, consumer groups, leases, at-least-once delivery)
are built in :mod:`streamlog.delivery` from these primitives alone, so each
backend only has to make a handful of operations correct and fast. The contract
is deliberately narrow, as huey's ``BaseStorage`` is:

* **items** — :meth:`append`, :meth:`read`, :meth:`trim`, plus cheap probes
  (:meth:`last_offset`, :meth:`first_offset`, :meth:`count`);
* **groups** — :meth:`create_group`, :meth:`groups`;
* **claims** — a group's windows are a chain of *claims*, each covering a
  contiguous offset range. :meth:`claim` inserts one attempt under a unique
  key ``(stream, group, seq, attempt)``; :meth:`commit` *seals* the window by
  inserting the next attempt's key as a closed record, so a commit and a
  takeover of the same attempt exclude each other (fencing); :meth:`renew` and
  :meth:`release` update an attempt that only its owner writes;
  :meth:`expired` finds attempts to reclaim and :meth:`supersede` retires one;
* **models** — insert-only learner checkpoints;
* **idempotency keys** — :meth:`append_once` appends a batch at most once per
  ``(stream, key)`` within :data:`KEY_WINDOW_MS`, so a client's retried request (the
  HTTP ``Idempotency-Key``) stores nothing twice.

Coordination rule (see docs/architecture.md): concurrent clients coordinate
*only* through inserts into unique keys — item offsets and claim attempts.
Every update touches a document that a single owner writes. That is what keeps
the MongoDB backend correct on servers that do not isolate updates (FerretDB).

Times are integer milliseconds since the Unix epoch (UTC) throughout.
"""

from __future__ import annotations

import time as _time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

# Claim states. A claim attempt is "open" until it is committed, dead-lettered or superseded.
ACTIVE, FAILED, COMMITTED, DEAD = "active", "failed", "committed", "dead"
# Closed records an operator puts in a group's chain: the group moved to ``hi + 1``
# (``reset``), or the group was deleted and its chain ends here (``deleted``).
RESET, DELETED = "reset", "deleted"
OPEN_STATES = (ACTIVE, FAILED)
# What a record of a group's chain is (:attr:`Claim.kind`): a window's claim, a keyed
# group's key-discovery claim (see streamlog.delivery.keyed), or one of the operator's
# markers above (their kind is their state).
WINDOW, DISCOVERY = "window", "discovery"
#: closed claims are kept this long (ms) after their creation before ``trim`` may forget
#: them, well above the minute a consumer trusts its cached chain head
#: (streamlog.delivery.chain.HEAD_CACHE_MS): every claim a live consumer could still be
#: building on stays
CLAIM_RETENTION_MS = 3_600_000
#: the group every stream has from its creation, seeing every item (start 0)
DEFAULT_GROUP = "default"
#: learner checkpoints kept per (stream, group, model): the newest this many versions
KEEP_MODEL_VERSIONS = 3
#: per-window metric points kept per (stream, group, model): the last this many windows
#: (by window number). A point is small (a learner's summary numbers), unlike a full state.
KEEP_MODEL_HISTORY = 1000
#: how long an idempotency key is remembered (ms, from its first use): a retry within this
#: window is answered from the first request's record; after it the key is new again
KEY_WINDOW_MS = 24 * 3600 * 1000
#: seconds between two prunes of expired idempotency keys by one store instance
KEY_PRUNE_EVERY = 60.0


@dataclass(slots=True)
class Batch:
    """Items in offset order, column by column (cheap to build windows and frames from)."""

    offsets: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)  # append time, ms since epoch
    data: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)

    def extend(self, other: "Batch") -> None:
        self.offsets.extend(other.offsets)
        self.times.extend(other.times)
        self.data.extend(other.data)

    def head(self, n: int) -> "Batch":
        return Batch(self.offsets[:n], self.times[:n], self.data[:n])


@dataclass(slots=True)
class StreamRecord:
    name: str
    created: int  # ms
    options: dict = field(default_factory=dict)
    #: identifies this incarnation of the name: a stream dropped and created again gets another
    uid: str = field(default="", compare=False)


@dataclass(slots=True)
class Group:
    """A consumer group: it sees items with ``offset >= start``."""

    stream: str
    name: str
    start: int
    created: int  # ms


@dataclass(slots=True, kw_only=True)
class Claim:
    """One attempt at one window of a group (built with keyword arguments only).

    The window is identified by ``(stream, group, seq)``; ``seq`` increases by one
    along the group's chain of windows. ``attempt`` counts deliveries of that window
    (1 for the first). The window covers the item offsets ``lo..hi`` (empty when
    ``hi < lo``) and, for time windows, the interval ``[start, end)``; ``windows``
    is the number of consecutive windows it holds: a run of fixed-time windows (with
    ``start``/``end``: the items are the first's, empty ones follow, all numbered
    ``seq``), or a run of count windows of ``count // windows`` items each (without
    ``start``/``end``: ``consumer(windows_per_claim=)``), numbered ``seq`` …
    :attr:`last_seq`; the chain's next record is ``last_seq + 1``. A record's key is
    always its first number, so writers building on one head compete for one key.

    ``epoch`` is set on key-discovery records only (:data:`DISCOVERY`): the reset of
    the discovery chain they were built on. :attr:`kind` tells the record kinds apart.
    """

    stream: str
    group: str
    seq: int
    attempt: int
    lo: int
    hi: int
    count: int
    start: int | None = None
    end: int | None = None
    windows: int = 1
    owner: str = ""
    lease: int = 0  # ms; the owner holds the window until then
    state: str = ACTIVE
    error: str | None = None
    created: int = 0  # ms
    epoch: int | None = None

    @property
    def kind(self) -> str:
        """:data:`WINDOW`, :data:`DISCOVERY`, :data:`RESET` or :data:`DELETED`."""
        if self.state in (RESET, DELETED):
            return self.state
        return WINDOW if self.epoch is None else DISCOVERY

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.stream, self.group, self.seq, self.attempt)

    @property
    def count_run(self) -> bool:
        """Whether the record holds a run of several count windows (see the class docstring)."""
        return self.windows > 1 and self.start is None

    @property
    def last_seq(self) -> int:
        """The number of the record's last window (``seq`` but for a run of count windows)."""
        return self.seq + self.windows - 1 if self.count_run else self.seq


@dataclass(slots=True)
class Once:
    """What :meth:`Store.append_once` did with a key.

    ``appended``: this call stored the batch (``offsets`` are its items'). Otherwise the
    key was known and nothing was stored: ``offsets`` are the first request's and
    ``digest`` the one saved with the key (a different digest means the key was reused
    for another batch: the caller refuses it); ``busy``: the first request is still being
    appended by another process (MongoDB) after the caller's wait — try again later;
    ``lost``: this call was appending but could not renew its key's lease in time (MongoDB)
    and stopped: part of the batch may be stored, and a retry with the key completes it.
    """

    offsets: list[int]
    appended: bool
    digest: str
    busy: bool = False
    lost: bool = False


def offset_ranges(offsets: list[int]) -> list[int]:
    """Offsets as a flat list of inclusive ranges ``[lo, hi, lo, hi, …]`` (compact, and no
    list inside a list, which FerretDB v1 cannot store)."""
    flat: list[int] = []
    for offset in offsets:
        if flat and flat[-1] + 1 == offset:
            flat[-1] = offset
        else:
            flat += [offset, offset]
    return flat


def range_offsets(flat: list[int]) -> list[int]:
    """Inverse of :func:`offset_ranges`."""
    return [o for i in range(0, len(flat) - 1, 2) for o in range(flat[i], flat[i + 1] + 1)]


class Watch(Protocol):
    """Wakes a waiter on writes: what :meth:`Store.watch` returns."""

    #: whether :meth:`interrupt` ends a wait at once (else a wait runs out its timeout)
    interruptible: bool

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when there may be news (the caller looks)."""
        ...

    def interrupt(self) -> None:
        """End the current (or the next) wait early, where :attr:`interruptible`."""
        ...

    def close(self) -> None: ...


class Store(ABC):
    """A stream log backend. Implementations must be safe to share between threads."""

    #: the URL with credentials masked, for messages
    url: str
    #: how long a consumer sleeps between probes at most while items keep coming (seconds)
    max_poll: float = 0.01
    #: … and after a second without any (probing costs client CPU; see docs/consumers.md)
    idle_poll: float = 0.05
    #: whether items may hold a list directly inside a list (FerretDB v1 cannot store one)
    nested_arrays: bool = True
    #: whether :meth:`append` stores ``encoded`` and only counts ``items`` (SQLite), so a
    #: stream may pass flat plain items as they are with their canonical encoding
    encoded_only: bool = False
    #: seconds between reading the newest offset and deleting below it in :meth:`trim`
    #: (0: trim is one transaction). See MongoStore: the fence that keeps a producer with a
    #: cached offset from writing into a trimmed range.
    trim_fence: float = 0.0

    # -- streams ------------------------------------------------------------

    @abstractmethod
    def create_stream(self, name: str) -> StreamRecord:
        """Get or create a stream (and its ``default`` group, start 0). Idempotent and race-safe."""

    @abstractmethod
    def get_stream(self, name: str) -> StreamRecord | None:
        """The stream's record, or None when it does not exist."""

    @abstractmethod
    def streams(self) -> list[str]:
        """Names of all streams, sorted."""

    @abstractmethod
    def set_options(self, name: str, options: dict) -> None:
        """Replace the stream's options (retention). Last writer wins."""

    @abstractmethod
    def drop(self, name: str) -> bool:
        """Delete the stream, its items, groups, claims and models. False if it did not exist."""

    # -- items --------------------------------------------------------------

    @abstractmethod
    def append(self, name: str, items: list[dict], time: int, encoded: list[bytes] | None = None) -> list[int]:
        """Store normalized items at the next offsets; return their offsets.

        ``encoded`` holds the items' canonical JSON (:func:`streamlog.items.encode_many`)
        when the caller has it, so a backend that stores JSON need not encode again.
        Offsets are unique per stream, above every offset ever stored or trimmed,
        increase in the order of one producer's appends and are assigned without gaps.
        A batch costs O(1) round trips. All-or-nothing unless the process dies or the
        server is lost mid-batch (see docs/architecture.md, "Guarantees"). The stream
        must exist: appending to a stream that was dropped (by any process) raises
        :class:`~streamlog.errors.UnknownStreamError` — a producer never recreates a
        stream an operator dropped. (On MongoDB ``drop`` marks the stream, waits out the
        producers' offset check and then deletes, so an append is either refused or
        deleted with the stream, never left behind in an invisible collection.)
        """

    @abstractmethod
    def read(self, name: str, start: int = 0, limit: int | None = None, end: int | None = None) -> Batch:
        """Items with ``start <= offset`` (``<= end`` when given), ascending, at most ``limit``."""

    @abstractmethod
    def last_offset(self, name: str) -> int | None:
        """The newest offset, or None for an empty stream. One indexed lookup."""

    @abstractmethod
    def first_offset(self, name: str) -> int | None:
        """The oldest offset still stored, or None."""

    @abstractmethod
    def count(self, name: str, after: int | None = None) -> int:
        """Number of items (with ``offset > after`` when given)."""

    def trim(self, name: str, before: int, wait: bool = True) -> int:
        """Delete items with ``offset < before``; returns the number deleted.

        **The newest item is always kept** (this is the one place that says so), so
        offsets never restart: only a drop resets a stream. With a :attr:`trim_fence`,
        only offsets below the newest offset observed at least that long ago are
        deleted: ``wait=True`` sleeps out the fence, ``wait=False`` (retention,
        enforced by producers) uses an earlier call's observation and deletes nothing
        on the first.
        """
        bound = self._trim_bound(name, wait)
        if bound is None:
            return 0
        return self._delete_below(name, min(before, bound))

    @abstractmethod
    def _trim_bound(self, name: str, wait: bool) -> int | None:
        """An offset that is certainly stored and below which deleting is safe now
        (the newest offset, or a fenced observation of it); None: delete nothing."""

    @abstractmethod
    def _delete_below(self, name: str, offset: int) -> int:
        """Delete items with ``offset <`` the given one; returns how many."""

    def version(self) -> Any:
        """A token that changes when anyone may have written (None: unknown, probe instead)."""
        return None

    def watch(self, name: str | None = None) -> Watch | None:
        """Something whose ``wait(timeout)`` wakes a waiter on writes (to stream ``name``, or
        any when None; it may also wake for others), or None (then consumers poll): a
        :class:`~streamlog.store.watch.FileWatch` (embedded) or a
        :class:`~streamlog.store.mongo_wakeups.TailWatch`. The caller closes it."""
        return None

    # -- groups -------------------------------------------------------------

    @abstractmethod
    def create_group(self, name: str, group: str, start: int) -> Group:
        """Get or create a group; when it already exists the existing one is returned."""

    @abstractmethod
    def groups(self, name: str) -> list[Group]:
        """The stream's groups, sorted by name."""

    @abstractmethod
    def delete_group(self, name: str, group: str, below_seq: int) -> None:
        """Delete the group's record and its claims with ``seq < below_seq`` (the chain's
        ``deleted`` tombstone at ``below_seq`` stays, so running consumers learn of it)."""

    # -- claims -------------------------------------------------------------

    @abstractmethod
    def claim(self, claim: Claim) -> bool:
        """Insert one claim attempt; False when ``(stream, group, seq, attempt)`` exists.

        This unique insert is the only arbitration between consumers of a group. The
        record is open when its state is ``active`` or ``failed``, closed otherwise
        (``reset``/``deleted`` markers).
        """

    @abstractmethod
    def last_claim(self, name: str, group: str) -> Claim | None:
        """An attempt of the group's window with the highest ``seq`` (the chain head)."""

    @abstractmethod
    def renew(self, claim: Claim, lease: int) -> None:
        """Extend the owner's lease on its attempt."""

    @abstractmethod
    def commit(self, claim: Claim, state: str = COMMITTED, error: str | None = None) -> bool:
        """Seal the window as ``committed`` (or ``dead`` after dead-lettering) and close the attempt.

        The seal is the unique insert of key ``(stream, group, seq, attempt + 1)`` as a
        closed record: it fails when a newer attempt already took the window over (the
        owner's lease ran out), and then nothing is changed and False is returned — the
        caller must not treat the window as done. A takeover, in turn, fails once the
        seal is in. Exactly one of them wins.

        Closing the sealed attempt may be deferred (MongoDB batches it: one write for many
        windows, see :meth:`flush`): the seal alone decides the window, and an attempt left
        open by a crash is closed by whoever finds it expired (its takeover meets the seal).
        """

    def commit_and_claim(self, claim: Claim, next_claim: Claim) -> tuple[bool, bool]:
        """:meth:`commit` ``claim`` (a window) and :meth:`claim` ``next_claim`` (the next
        window of the same chain) — ``(committed, claimed)``. ``next_claim`` is only
        inserted once the seal is in: a fenced-off commit claims nothing. A backend may do
        both in one write (the embedded one: one transaction; the next claim can still
        lose its race, then only the seal stands)."""
        committed = self.commit(claim)
        return committed, committed and self.claim(next_claim)

    def flush(self, retry: bool = True) -> None:  # noqa: B027 - optional: only a store that defers writes has any
        """Write what this store deferred (the closes of committed attempts), now. The store
        does it by itself before :meth:`open_claims`, :meth:`expired` and :meth:`close`.
        ``retry=False``: one try, errors ignored (the seals decide; see :meth:`commit`)."""

    @abstractmethod
    def release(self, claim: Claim, error: str, retry_at: int = 0) -> None:
        """Mark the attempt failed; its lease ends at ``retry_at`` (ms), when the window
        may be reclaimed for the next attempt (0: at once)."""

    @abstractmethod
    def supersede(self, claim: Claim) -> None:
        """Close an attempt that a newer attempt of the same window has replaced."""

    @abstractmethod
    def expired(self, name: str, group: str, now: int, limit: int = 10) -> list[Claim]:
        """Open attempts whose lease ended before ``now``, lowest ``seq`` first."""

    @abstractmethod
    def open_claims(self, name: str, group: str | None = None) -> list[Claim]:
        """All open attempts (of one group, or of every group), by group and ``seq``."""

    @abstractmethod
    def forget_claims(self, name: str, below: int, older_than: int) -> int:
        """Delete closed attempts with ``hi < below`` created before ``older_than``,
        keeping every group's chain head. Returns how many were deleted."""

    # -- models -------------------------------------------------------------

    @abstractmethod
    def save_model(self, name: str, group: str, model: str, seq: int, state: dict,
                   point: dict | None = None) -> None:
        """Insert a checkpoint of a learner's state taken after window ``seq`` (saving a
        ``seq`` again replaces it), keeping the newest :data:`KEEP_MODEL_VERSIONS`.

        ``point``: the window's metrics (plain data, small), kept for the windows
        ``> seq - KEEP_MODEL_HISTORY`` after the full state is gone (see
        :meth:`model_history`). Saved with the checkpoint, at no extra round trip in steady
        state (MongoDB: in the checkpoint document; SQLite: in the same transaction)."""

    @abstractmethod
    def load_model(self, name: str, group: str, model: str) -> tuple[int, int, dict] | None:
        """The newest checkpoint as ``(seq, saved_ms, state)``, or None."""

    @abstractmethod
    def models(self, name: str) -> list[tuple[str, str, int, int]]:
        """Newest checkpoint of each model: ``(group, model, seq, saved_ms)``."""

    @abstractmethod
    def model_history(self, name: str, group: str, model: str,
                      limit: int = KEEP_MODEL_HISTORY) -> list[tuple[int, int, dict]]:
        """The metric points saved with the checkpoints: ``(seq, saved_ms, point)``, oldest
        first, the newest ``limit`` of them (checkpoints saved without a point are left out)."""

    # -- idempotency keys ------------------------------------------------------

    @abstractmethod
    def append_once(self, name: str, key: str, digest: str, items: list[dict], time: int,
                    encoded: list[bytes] | None = None, *, window_ms: int = KEY_WINDOW_MS,
                    wait: float = 30.0) -> Once:
        """:meth:`append`, unless ``key`` was used on this stream in the last ``window_ms``
        (measured from ``time``, the batch's append time, against the key's first use).

        The first call with a key appends and records the key with ``digest`` (the caller's
        fingerprint of the batch) and the offsets; every later call within the window
        appends nothing and returns that record — also when it runs concurrently with the
        first, in any process: the key is arbitrated by a unique insert. A call that finds
        the first still in progress waits up to ``wait`` seconds for its offsets (then
        ``busy``). If the first caller died mid-way, a later one takes over and stores only
        the items that are missing (MongoDB: found by the dead attempt's batch token), so
        each item of the batch is stored once. Expired keys are pruned as calls go (at most
        once a minute per store instance).
        """

    @abstractmethod
    def forget_keys(self, older_than: int) -> int:
        """Delete idempotency keys first used before ``older_than`` (ms); returns how many."""

    def _prune_keys_maybe(self, now: int, window_ms: int) -> None:
        tick = _time.monotonic()
        if tick < getattr(self, "_keys_pruned_until", 0.0):
            return
        self._keys_pruned_until = tick + KEY_PRUNE_EVERY
        self.forget_keys(now - window_ms)

    # -- lifecycle ----------------------------------------------------------

    def ping(self) -> None:
        """Raise if the database cannot be reached now (a quick check, no retries)."""
        self.streams()

    def close(self) -> None:  # noqa: B027 - optional: a store holding no connection has nothing to release
        """Release connections."""
