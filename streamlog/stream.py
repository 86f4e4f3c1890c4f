"""The producer-side API: :class:`Stream`."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple

import orjson

from .delivery import groups as _groups
from .delivery.groups import ConsumerGroup
from .delivery.once import dead_letter_key
from .errors import ConsumerError, KeyBusyError, KeyReusedError, StreamlogError, UnknownGroupError, UnknownStreamError
from .items import (
    MAX_ITEM_BYTES,
    encode_many,
    fingerprint,
    ms_to_datetime,
    nested_array_path,
    normalize_many,
    now_ms,
)
from .names import DEAD_SUFFIX, check_idempotency_key, check_name, dead_letter_stream, did_you_mean
from .plain import encode_plain_one, plain_documents, prepare
from .store.base import CLAIM_RETENTION_MS, KEEP_MODEL_HISTORY, KEY_WINDOW_MS, Batch, StreamRecord

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .client import Client

#: items per read of :meth:`Stream.iter` (bounds its memory)
ITER_BATCH = 1_000
_MAX_OFFSET = 2**63 - 1


def _offset(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_OFFSET:
        raise StreamlogError(f"{what} must be an offset (an integer from 0 to 2**63-1), not {value!r}")
    return value

_RETENTION_EVERY = 1.0  # seconds between retention checks of one Stream handle
_DEAD_COUNT_LIMIT = 10_000  # info() reads at most this many dead letters to count them per group


def _records(batch: Batch) -> list[dict]:
    return [
        {"offset": o, "timestamp": ms_to_datetime(t), "data": d}
        for o, t, d in zip(batch.offsets, batch.times, batch.data, strict=True)
    ]


class Appended(NamedTuple):
    """What :meth:`Stream.extend_once` did: the batch's ``offsets``, and whether they are
    the first call's (``replayed``: nothing was stored this time)."""

    offsets: list[int]
    replayed: bool

class Stream:
    """A named, durable, append-only log of items.

    Get one with :func:`streamlog.stream` (get or create). Items are dicts
    (see :mod:`streamlog.items` for what they may hold); each gets an integer offset,
    unique and increasing in append order, and its append time (UTC).
    """

    def __init__(self, client: "Client", name: str, record: StreamRecord):
        self.client = client
        self.store = client.store
        self.name = name
        self._record = record
        self._retention_checked = 0.0

    def __repr__(self) -> str:
        return f"<streamlog.Stream {self.name!r}>"

    def __len__(self) -> int:
        return self.store.count(self.name)

    def exists(self) -> bool:
        """Whether this stream still exists: not dropped, and not replaced by a new
        stream of the same name since this handle was made."""
        record = self.store.get_stream(self.name)
        return record is not None and (record.uid, record.created) == (self._record.uid, self._record.created)

    # -- producing ----------------------------------------------------------

    def append(self, item: dict) -> int:
        """Append one item and return its offset. One round trip (MongoDB) / one transaction.

        The item is checked first (:mod:`streamlog.items`: types, nesting, 1 MiB encoded);
        a bad one raises :class:`BadItemError` and nothing is written."""
        row = encode_plain_one(item)  # a flat item of plain values (the common case): checked and encoded at once
        if row is not None:
            return self._append_plain([item], [row])[0]
        return self.extend([item])[0]

    def extend(self, items: Iterable[dict], *, _dead_letters: bool = False) -> list[int]:
        """Append many items (a list, any iterable of dicts, or a DataFrame) in O(1) round trips.

        All-or-nothing for bad input: every item is checked before any is written, so an
        item that cannot be stored (a type, more than 64 levels of nesting, over 1 MiB
        encoded) raises :class:`BadItemError` and stores none. Returns the offsets, in the
        items' order. All items get the same append time.
        """
        if not _dead_letters:
            # Flat items of plain values (the common case) are checked and encoded in one go
            # (the encoding also gives the 1 MiB check); anything else the general way.
            normalized, encoded = prepare(items, self.store.nested_arrays, documents=not self.store.encoded_only)
        else:
            normalized = normalize_many(items, self.store.nested_arrays)
            # A dead letter wraps an item of up to the limit with a little bookkeeping.
            encoded = encode_many(normalized, MAX_ITEM_BYTES + 16_384)
            if normalized:
                # Once per window: the key is the failed window's identity (see dead_letter_key).
                return self._append_once(dead_letter_key(normalized), normalized, encoded, "*", 30.0).offsets
        offsets = self.store.append(self.name, normalized, now_ms(), encoded)
        self._retain_maybe()
        return offsets

    def _append_plain(self, items: list[dict], encoded: list[bytes]) -> list[int]:
        """Append flat plain items that :func:`~streamlog.plain.encode_plain` checked and
        encoded: a store of documents (MongoDB) takes them as they are (their canonical
        form) unless one holds a NaN or ±inf (:func:`~streamlog.plain.plain_documents`)."""
        documents = items if self.store.encoded_only else plain_documents(items, encoded)
        offsets = self.store.append(self.name, documents, now_ms(), encoded)
        self._retain_maybe()
        return offsets

    def extend_once(self, key: str, items: Iterable[dict], *, wait: float = 30.0,
                    check_items: bool = True) -> "Appended":
        """:meth:`extend`, at most once per ``key``: a producer that retries a batch (it
        timed out, or crashed and restarted) with the same key stores nothing new and gets
        the first call's offsets, with ``replayed=True``.

        Keys are remembered per stream for 24 hours from their first use. The key is
        arbitrated by the store with a unique insert, so this holds across processes and
        server restarts on both backends; a first call that died mid-way is completed by
        the retry without storing any item twice. The same key with *other* items raises
        :class:`KeyReusedError` (items are compared by their canonical encoding) — unless
        ``check_items=False``: then the key alone names the batch and a retry with other
        items replays the first call (a consumer's stream sink uses this: a retried window
        may compute other records, and the first attempt's stand). A retry that finds the
        first call still appending in another process waits up to ``wait`` seconds, then
        raises :class:`KeyBusyError`. Validation as :meth:`extend`.
        """
        check_idempotency_key(key)
        normalized, encoded = prepare(items, self.store.nested_arrays, documents=not self.store.encoded_only)
        digest = fingerprint(normalized) if check_items else "*"
        return self._append_once(key, normalized, encoded, digest, wait)

    def _append_once(self, key: str, normalized: list[dict], encoded: list[bytes], digest: str,
                     wait: float) -> "Appended":
        once = self.store.append_once(self.name, key, digest, normalized, now_ms(), encoded,
                                      window_ms=KEY_WINDOW_MS, wait=wait)
        if once.busy and once.lost:
            raise KeyBusyError(f"the append with key {key!r} to {self.name!r} stopped: its lease on the key could "
                               "not be renewed in time (the database did not answer); retry with the same key "
                               "to complete it")
        if once.busy:
            raise KeyBusyError(f"the first append with key {key!r} to {self.name!r} is still in progress; retry")
        if not once.appended and once.digest != digest:
            raise KeyReusedError(f"key {key!r} was already used on {self.name!r} for other items")
        if once.appended:
            self._retain_maybe()
        return Appended(once.offsets, not once.appended)

    @property
    def uid(self) -> str:
        """Identifies this incarnation of the stream: a stream dropped and created again
        under the same name has another."""
        return self._record.uid

    # -- reading ------------------------------------------------------------

    def read(self, start: int = 0, limit: int | None = 100, end: int | None = None) -> list[dict]:
        """Items with ``offset >= start`` (and ``<= end``), oldest first — **at most
        ``limit``, 100 by default**; ``limit=None`` reads the whole range into memory
        (use :meth:`iter` for a long range, :meth:`frame` for a DataFrame).

        Read-only: no group's state changes. Each item is
        ``{"offset": int, "timestamp": datetime (UTC), "data": dict}``.
        """
        _offset(start, "start")
        if end is not None:
            _offset(end, "end")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise StreamlogError(f"limit must be a non-negative integer or None, not {limit!r}")
        return _records(self.store.read(self.name, start, limit, end))

    def read_following(self, start: int, limit: int | None = 100) -> list[dict]:
        """:meth:`read` for a follower (``tail -f``, SSE, the TCP publisher): raises
        :class:`UnknownStreamError` once this stream was dropped — also when a new stream
        was created under its name since this handle was made. Checked *after* the read
        (one more lookup), so what it returns is always this stream's own items, never a
        successor's spliced on."""
        records = self.read(start, limit)
        if not self.exists():
            raise UnknownStreamError(f"no stream named {self.name!r} (it was dropped)")
        return records

    def iter(self, start: int | None = None, end: int | None = None) -> Iterator[dict]:
        """Every item with ``start <= offset <= end`` (default: the whole stream), oldest
        first, read 1,000 at a time: memory stays bounded whatever the length.

        Read-only. Items appended while iterating are included up to ``end``; items
        trimmed meanwhile are skipped.
        """
        offset = 0 if start is None else _offset(start, "start")
        if end is not None:
            _offset(end, "end")
        while end is None or offset <= end:
            batch = self.store.read(self.name, offset, ITER_BATCH, end)
            if not batch:
                return
            yield from _records(batch)
            offset = batch.offsets[-1] + 1

    def frame(self, start: int | None = None, end: int | None = None) -> "pd.DataFrame":
        """The stream, or the offsets ``start..end``, as a pandas DataFrame: one row per item,
        the item keys as columns, indexed by offset, plus a ``timestamp`` column (UTC)
        unless an item has a key of that name (it is never clobbered)."""
        import pandas as pd

        offsets: list[int] = []
        times: list[Any] = []
        rows: list[dict] = []
        for record in self.iter(start, end):
            offsets.append(record["offset"])
            times.append(record["timestamp"])
            rows.append(record["data"])
        frame = pd.DataFrame.from_records(rows, index=pd.Index(offsets, name="offset", dtype="int64"))
        if "timestamp" not in frame.columns:
            frame.insert(0, "timestamp", pd.to_datetime(times, utc=True) if times else
                         pd.Series([], dtype="datetime64[ns, UTC]"))
        return frame

    def tail(self, n: int = 10) -> list[dict]:
        """The newest ``n`` items, oldest first (read-only)."""
        last = self.store.last_offset(self.name)
        if last is None or n <= 0:
            return []
        return self.read(max(0, last - n + 1), limit=n)

    def buffer(self, group: str = "default", limit: int | None = None) -> list[dict]:
        """Items the group has not processed yet (claimed but uncommitted ones included).

        Read-only. For a group that does not exist yet: what it would see with
        ``start="earliest"``, i.e. every item.
        """
        batch = _groups.unprocessed(self, check_name(group, "group"), limit)
        return _records(batch)

    # -- groups -------------------------------------------------------------

    def group(self, name: str = "default", start: str | int = "earliest") -> ConsumerGroup:
        """Get or create a consumer group.

        A new group sees every item still in the stream (``start="earliest"``), only
        items appended after now (``"latest"``), or items from an offset on (an int).
        An existing group keeps its start.
        """
        return ConsumerGroup.of(self, _groups.ensure_group(self, check_name(name, "group"), start))

    def get_group(self, name: str) -> ConsumerGroup:
        """An existing group; :class:`UnknownGroupError` when there is none by that name."""
        found = _groups.find_group(self, check_name(name, "group"))
        if found is None:
            hint = did_you_mean(name, [g.name for g in self.groups()])
            raise UnknownGroupError(f"stream {self.name!r} has no group {name!r}{hint}")
        return ConsumerGroup.of(self, found)

    def groups(self) -> list[ConsumerGroup]:
        """The stream's consumer groups, by name."""
        return [ConsumerGroup.of(self, g) for g in _groups.visible_groups(self.store.groups(self.name))]

    def redrive(self, group: str | None = None, limit: int | None = None, to: str | None = None) -> int:
        """Append dead letters (of ``group``, or all) back onto the stream ``to``
        (default: this stream) and return how many; a second call does not re-drive
        the same ones. See :func:`streamlog.delivery.groups.redrive`."""
        target = self.client.stream(to) if to is not None and to != self.name else None
        return _groups.redrive(self, group, limit, target)

    # -- inspection ---------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """A snapshot of the stream: sizes, offsets, times, groups, retention, models.

        Keys: ``name``, ``created``, ``length``, ``first_offset``, ``last_offset``,
        ``last_time``, ``pending`` (group → items not yet processed), ``groups`` (group →
        ``start``, ``pending``, ``claimed``, ``failed``, ``windows``, ``dead``),
        ``dead_letters``, ``retention``, ``models``.
        """
        record = self.store.get_stream(self.name)
        if record is None:
            raise self.client.unknown_stream(self.name)
        store = self.store
        last = store.last_offset(self.name)
        first = store.first_offset(self.name)
        last_time = None
        if last is not None:
            batch = store.read(self.name, last, 1)
            last_time = ms_to_datetime(batch.times[0]) if batch else None
        dead_counts = self._dead_counts()
        groups = {}
        listed = store.groups(self.name)
        for group in _groups.visible_groups(listed):  # key chains count in their keyed group
            state = _groups.group_state(self, group, listed)
            state["dead"] = dead_counts.get(group.name, 0)
            groups[group.name] = state
        return {
            "name": self.name,
            "url": self.store.url,
            "created": ms_to_datetime(record.created),
            "length": store.count(self.name),
            "first_offset": first,
            "last_offset": last,
            "last_time": last_time,
            "pending": {name: g["pending"] for name, g in groups.items()},
            "groups": groups,
            "dead_letters": sum(dead_counts.values()),
            "retention": {k: v for k, v in record.options.items() if k in ("max_items", "max_age")},
            "models": [
                {"group": g, "name": m, "seq": q, "saved": ms_to_datetime(saved)}
                for g, m, q, saved in store.models(self.name)
            ],
        }

    def _dead_counts(self) -> dict[str, int]:
        """Dead letters per group; past 10,000 of them only the total is counted (under "?")."""
        dead = dead_letter_stream(self.name)
        if self.store.get_stream(dead) is None:
            return {}
        total = self.store.count(dead)
        if total > _DEAD_COUNT_LIMIT:
            return {"?": total}
        counts: dict[str, int] = {}
        for item in self.store.read(dead, 0, None).data:
            counts[item.get("group", "?")] = counts.get(item.get("group", "?"), 0) + 1
        return counts

    # -- learner checkpoints --------------------------------------------------

    def model(self, name: str, group: str = "default") -> dict | None:
        """The newest saved state of a learner, as
        ``{"name", "group", "seq", "saved", "state"}``, or None if it never saved one."""
        found = self.store.load_model(self.name, check_name(group, "group"), check_name(name, "model"))
        if found is None:
            return None
        seq, saved, state = found
        return {"name": name, "group": group, "seq": seq, "saved": ms_to_datetime(saved), "state": state}

    def save_model(self, name: str, group: str, seq: int, state: dict, point: dict | None = None) -> None:
        """Checkpoint a learner's state (plain data: numbers, strings, lists, dicts, arrays)
        as of window ``seq`` of ``group``. Used by learners.

        Versions are keyed by ``seq``: the highest ``seq`` is the newest; saving an
        existing ``seq`` again replaces that version (the last three are kept).
        ``point``: the window's metrics (a small dict of plain data), kept for the last
        1,000 windows as the model's history (:meth:`model_history`)."""
        plain = self._plain_model_data(name, state, "state")
        if point is not None:
            point = self._plain_model_data(name, point, "metrics point")
        self.store.save_model(self.name, group, name, seq, plain, point)

    def _plain_model_data(self, name: str, value: Any, what: str) -> Any:
        try:
            plain = orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))
        except TypeError as exc:
            raise ConsumerError(f"model {what} of {name!r} is not plain data: {exc}") from None
        if not self.store.nested_arrays:
            found = nested_array_path(plain)
            if found:
                raise ConsumerError(f"model {what} of {name!r} has a list inside a list at {found}, "
                                    "which this server (FerretDB) cannot store")
        return plain

    def model_history(self, name: str, group: str = "default", limit: int = KEEP_MODEL_HISTORY) -> list[dict]:
        """The metrics a learner saved with its checkpoints, one per window, oldest first
        (the last ``limit`` windows, at most 1,000 are kept): ``{"seq", "saved", **point}``."""
        found = self.store.model_history(self.name, check_name(group, "group"), check_name(name, "model"), limit)
        return [{**point, "seq": seq, "saved": ms_to_datetime(saved)} for seq, saved, point in found]

    # -- retention ------------------------------------------------------------

    def retain(self, max_items: int | None = None, max_age: float | timedelta | None = None) -> None:
        """Bound the stream's history: keep at most ``max_items`` items and/or items younger
        than ``max_age`` seconds. Enforced by producers as they append (at most once a
        second each) and by ``trim``; ``retain()`` with no arguments keeps everything."""
        if isinstance(max_age, timedelta):
            max_age = max_age.total_seconds()
        if max_items is not None and (not isinstance(max_items, int) or max_items < 1):
            raise StreamlogError(f"max_items must be a positive integer, not {max_items!r}")
        if max_age is not None and (not isinstance(max_age, (int, float)) or max_age <= 0):
            raise StreamlogError(f"max_age must be a positive number of seconds, not {max_age!r}")
        options = {k: v for k, v in (("max_items", max_items), ("max_age", max_age)) if v is not None}
        self.store.set_options(self.name, options)
        self._record.options = options
        self._retention_checked = 0.0

    def _retain_maybe(self) -> None:
        options = self._record.options
        if not options:
            return
        now = time.monotonic()
        if now - self._retention_checked < _RETENTION_EVERY:
            return
        self._retention_checked = now
        self.enforce_retention()

    def enforce_retention(self) -> int:
        """Trim what the retention options say must go; returns the number of items deleted."""
        options = self._record.options
        before = 0
        if options.get("max_items"):
            last = self.store.last_offset(self.name)
            if last is not None:
                before = max(before, last - options["max_items"] + 1)
        if options.get("max_age"):
            before = max(before, self._offset_at(now_ms() - int(options["max_age"] * 1000)))
        return self._trim_before(before, wait=False) if before > 0 else 0

    # -- trimming -------------------------------------------------------------

    def trim(self, before: int | None = None, *, processed: bool = False,
             older_than: float | timedelta | None = None) -> int:
        """Delete old items; returns how many were deleted. Exactly one of:

        * ``before=OFFSET`` — items with a smaller offset;
        * ``processed=True`` — items every group has processed (committed);
        * ``older_than=SECONDS`` (or a timedelta) — items appended longer ago than that.

        The newest item is always kept, so offsets never restart. Trimming items a group has
        not processed yet means that group never sees them.
        """
        chosen = sum(x is not None and x is not False for x in (before, processed or None, older_than))
        if chosen != 1:
            raise StreamlogError("trim needs exactly one of before=, processed=True, older_than=")
        if processed:
            floors = [_groups.processed_floor(self, g) for g in self.store.groups(self.name)]
            limit = min(floors) if floors else 0
        elif older_than is not None:
            if isinstance(older_than, timedelta):
                older_than = older_than.total_seconds()
            if not isinstance(older_than, (int, float)) or older_than < 0:
                raise StreamlogError(f"older_than must be a non-negative number of seconds, not {older_than!r}")
            limit = self._offset_at(now_ms() - int(older_than * 1000))
        else:
            if not isinstance(before, int) or isinstance(before, bool):
                raise StreamlogError(f"before must be an integer offset, not {before!r}")
            limit = before
        return self._trim_before(limit)

    def _trim_before(self, limit: int, wait: bool = True) -> int:
        deleted = self.store.trim(self.name, limit, wait)
        # Old closed claims below the trimmed range are no longer needed (after the retention
        # margin that keeps every claim a live consumer could still be building on).
        self.store.forget_claims(self.name, limit, now_ms() - CLAIM_RETENTION_MS)
        return deleted

    def _offset_at(self, cutoff: int) -> int:
        """The first offset appended at or after ``cutoff`` (ms), by binary search on
        offsets (append times rise with offsets, up to producers' clock skew)."""
        lo = self.store.first_offset(self.name)
        last = self.store.last_offset(self.name)
        if lo is None or last is None:
            return 0
        hi = last + 1
        while lo < hi:
            mid = (lo + hi) // 2
            batch = self.store.read(self.name, mid, 1)
            if not batch:
                hi = mid
            elif batch.times[0] < cutoff:
                lo = batch.offsets[0] + 1
            else:
                hi = mid
        return lo

    def drop(self) -> None:
        """Delete the stream with its items, groups, claims and saved models.

        The same on every backend: a producer still appending to it gets
        :class:`UnknownStreamError` (``stream 'x' was dropped``) instead of recreating it,
        and ``streamlog tail -f`` ends with a message. ``streamlog.stream(name)`` creates
        a new, empty stream of that name.
        """
        if not self.store.drop(self.name):
            raise self.client.unknown_stream(self.name)


__all__ = ["Stream", "DEAD_SUFFIX"]
