"""Where a Kafka source is in each partition, read back from the target stream
(:class:`Positions`): the bridge keeps no state of its own.

Every item a Kafka source stores records its ``(topic, partition, offset)`` (the
envelope's fields, or ``_kafka`` with ``value_only``). Per partition, items are appended
in offset order, so the newest item of a partition holds its position: the next message
to store is that offset + 1. :meth:`Positions.lookup` reads the stream newest first until
it has found every partition asked for — or reached the oldest item (a partition never
stored) — and remembers what it read: a later lookup (a rebalance) reads only the items
appended since, then continues below what it read before for partitions still unknown.
Items of other producers and other topics are skipped.
"""

from __future__ import annotations

from typing import Iterable

from .messages import where_from

Partition = tuple[str, int]

_PAGE = 1000  # items of the target stream read at a time, newest first


class Positions:
    """The last offset stored per ``(topic, partition)`` of ``topics`` in ``stream``."""

    def __init__(self, stream, topics: Iterable[str]):
        self.stream = stream
        self.topics = set(topics)
        self.last: dict[Partition, int] = {}
        self._top: int | None = None  # items [bottom, top] of the stream were read
        self._bottom: int | None = None
        self.items_read = 0

    def stored(self, partition: Partition, offset: int) -> None:
        """Record that this bridge stored ``offset`` of ``partition``."""
        if offset > self.last.get(partition, -1):
            self.last[partition] = offset

    def _scan(self, hi: int, lo: int, wanted: set[Partition], found: dict[Partition, int]) -> int:
        """Read items hi, hi-1, … down to lo (inclusive) until every ``wanted`` partition is in
        ``found`` (the newest offset of each); returns the lowest stream offset read."""
        lowest = hi + 1
        while hi >= lo and not wanted <= found.keys():
            page = self.stream.read(max(lo, hi - _PAGE + 1), limit=_PAGE, end=hi)
            if not page:
                break
            self.items_read += len(page)
            for record in reversed(page):
                where = where_from(record["data"]) if isinstance(record["data"], dict) else None
                if where is not None and where[0] in self.topics:
                    key = (where[0], where[1])
                    if key not in found:
                        found[key] = where[2]
            lowest = page[0]["offset"]
            hi = lowest - 1
        return lowest

    def lookup(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The last stored offset of each of ``partitions`` that the stream holds (absent:
        none stored, or trimmed away). Reads the items appended since the previous lookup,
        newest first, stopping once all are found; then, for those still unknown, the
        items older than any read before."""
        wanted = set(partitions)
        newest = self.stream.store.last_offset(self.stream.name)
        if newest is None:
            return {}
        found: dict[Partition, int] = {}
        floor = 0 if self._top is None else self._top + 1
        lowest = self._scan(newest, floor, wanted, found)
        for key, offset in found.items():
            self.stored(key, offset)
        if self._top is None:  # the first lookup: items [lowest, newest] were read
            self._top, self._bottom = newest, lowest
        elif lowest <= floor:  # read down to what was read before: one region again
            self._top = newest
        # else: stopped early, all found; items between floor and lowest are still unread
        missing = wanted - found.keys() - self.last.keys()
        if missing and self._bottom is not None and self._bottom > 0:
            older: dict[Partition, int] = {}
            self._bottom = self._scan(self._bottom - 1, 0, missing, older)
            for key, offset in older.items():
                self.stored(key, offset)
        return {k: self.last[k] for k in wanted if k in self.last}
