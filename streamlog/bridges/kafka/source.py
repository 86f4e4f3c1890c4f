"""The Kafka source: :class:`KafkaSource` appends what Kafka topics hold to a stream.

    streamlog bridge kafka://[user:pass@]host[:port]/TOPIC[,TOPIC…] --stream NAME

Every partition of every topic, one consumer group (default ``streamlog-STREAM``):
each message becomes an item ``{topic, partition, offset, key, value, headers,
timestamp}`` (:func:`~.messages.envelope`; ``value_only``: the JSON object value alone
plus ``_kafka``), appended in batches: what has arrived, up to ``batch`` messages per
append, as soon as nothing more is queued (a batch is never held back to fill). Into the
embedded backend a batch of flat JSON objects takes a fast path (:mod:`.fast`: the same
stored bytes, without building item dicts).

**Exactly once, without side state.** The position per ``(topic, partition)`` is the
target stream itself (:mod:`.position`): when partitions are assigned (at start and at
every rebalance) the bridge reads back the newest item of each and seeks to its offset
+ 1. A batch is one ``extend`` (SQLite: one transaction; MongoDB: an ordered insert,
a retried ``extend`` recognised by the store), so a bridge killed at any point stored a
prefix of each partition's messages, and the restart continues after exactly that
prefix. Kafka's committed offsets are written after each append (for
``kafka-consumer-groups`` and other tools) but used only for a partition the stream holds
no item of (never stored, or trimmed away), else ``start`` (``"earliest"``/``"latest"``).
Messages at or below a partition's stored offset are dropped as duplicates.

**Rebalances** (several bridges in one group, the partitions split between them): a
partition is appended to only by the bridge it is assigned to, and the hand-over happens
inside ``consume()`` — the thread that appends is the one that polls, so when a bridge's
partitions are revoked no append of it is in flight, and its last ``extend`` has returned
before the new owner reads the position back (eager protocol: the new assignment starts
only after every member gave its partitions up). A bridge that cannot append for longer
than ``patience`` seconds (default 60, well below ``max.poll.interval.ms``, 300 s, after
which the group takes its partitions away) gives its batch back (seeks to the batch's
first offsets) and keeps polling, so it never appends a batch for partitions it may have
lost. What the rule cannot cover: a bridge frozen *inside* one ``extend`` for longer
than ``max.poll.interval.ms`` (a stopped process, a database call hanging 5 minutes) may
store that batch after the new owner stored it too.

**Outages.** A broker that is away is waited out (librdkafka reconnects; counted in the
errors). A database that is away: the append is retried with backoff (module docstring of
:mod:`streamlog.bridges.retry`). A refused login ends the bridge with one line
(:class:`~.connection.KafkaAccessError`), password masked; so does a dropped target
stream (:class:`~streamlog.errors.UnknownStreamError`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, cast

from ...errors import BadItemError, StreamlogError
from ..appending import append_retrying
from ..base import STATUS_EVERY, Bridge
from ..retry import Backoff, is_transient
from .connection import Problems, client_config, kafka_module
from .fast import append_encoded, encode_batch, fast_path
from .messages import refusal, repair, to_item
from .position import Partition, Positions
from .url import parse_kafka_url

log = logging.getLogger("streamlog.kafka")

#: librdkafka settings of the source (overridable with ``settings=``)
CONSUMER_SETTINGS: dict[str, Any] = {
    "enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": False,
    "partition.assignment.strategy": "roundrobin", "session.timeout.ms": 10_000, "heartbeat.interval.ms": 1000,
    "max.poll.interval.ms": 300_000, "topic.metadata.refresh.interval.ms": 10_000, "isolation.level": "read_committed",
}


class _GaveUp(Exception):
    """Stopping (or a non-transient error) while reading positions in a rebalance callback."""


class KafkaSource(Bridge):
    """Append the messages of the topics of ``url`` to ``stream`` (module docstring).

    ``batch``: the most messages per append; ``flush_ms``: the longest the bridge keeps
    gathering a batch from what is queued (it appends once nothing more is, never waiting
    for messages to fill a batch);
    ``group``: the Kafka consumer group (default ``streamlog-<stream>``; bridges in one
    group split the partitions); ``start``: where a partition starts that the stream holds
    nothing of and the group has no committed offset for; ``value_only``: store the JSON
    object value alone (plus ``_kafka``, the position); ``patience``: seconds an append may
    fail before its batch is given back; ``settings``: librdkafka settings."""

    def __init__(self, url: str, stream, *, batch: int = 1000, flush_ms: int = 200, group: str | None = None,
                 start: str = "earliest", value_only: bool = False, patience: float = 60.0,
                 settings: dict[str, Any] | None = None, status_every: float | None = STATUS_EVERY,
                 status_stream=None):
        super().__init__(status_every=status_every, status_stream=status_stream)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise StreamlogError(f"batch must be a positive integer, not {batch!r}")
        if isinstance(flush_ms, bool) or not isinstance(flush_ms, int) or flush_ms < 1:
            raise StreamlogError(f"flush_ms must be a positive integer, not {flush_ms!r}")
        if start not in ("earliest", "latest"):
            raise StreamlogError(f"start must be 'earliest' or 'latest', not {start!r}")
        self.target = parse_kafka_url(url)
        self.stream = stream
        self.batch, self.flush, self.start = batch, flush_ms / 1000, start
        self.value_only = bool(value_only)
        self.patience = float(patience)
        self.group = group or f"streamlog-{stream.name}"
        self.settings = {**CONSUMER_SETTINGS, **(settings or {})}
        self.name = f"kafka {','.join(self.target.topics)}"
        self.positions = Positions(stream, self.target.topics)
        self.problems = Problems(self.target, self.counters)
        #: the partitions this bridge holds now
        self.assigned: set[Partition] = set()
        #: set once partitions were assigned (and cleared when they are revoked)
        self.ready = threading.Event()
        self.rebalances = 0
        self.duplicates = 0
        self._warned: set[str] = set()
        self._fast = fast_path(stream)

    def status_line(self) -> str:
        return f"{super().status_line()}, {len(self.assigned)} partitions"

    # -- rebalances --------------------------------------------------------------

    def _lookup(self, keys: list[Partition]) -> dict[Partition, int]:
        backoff = Backoff(first=0.05, cap=2.0)
        while True:
            try:
                return self.positions.lookup(keys)
            except Exception as exc:  # sorted by the retry policy
                self.counters.add(errors=1)
                if not is_transient(exc) or self.stopping:
                    raise _GaveUp(exc) from exc
                delay = backoff.failed()
                log.warning("cannot read the position from %s (%s); retrying in %.2f s", self.stream.name, exc, delay)
                self.stop_event.wait(delay)

    def _on_assign(self, consumer, partitions) -> None:
        keys = [(p.topic, p.partition) for p in partitions]
        known = self._lookup(keys)
        for p in partitions:
            if (p.topic, p.partition) in known:
                p.offset = known[(p.topic, p.partition)] + 1
        consumer.assign(partitions)
        self.assigned = set(keys)
        self.rebalances += 1
        log.info("%s: assigned %s (%d positions from the stream)", self.name,
                 ", ".join(f"{t}[{p}]" for t, p in sorted(keys)) or "nothing", len(known))
        self.ready.set()

    def _on_revoke(self, consumer, partitions) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self._commit(consumer, keys, asynchronous=False)
        self.assigned -= keys
        if not self.assigned:
            self.ready.clear()

    def _on_lost(self, consumer, partitions) -> None:
        self.assigned -= {(p.topic, p.partition) for p in partitions}

    def _commit(self, consumer, keys, asynchronous: bool = True) -> None:
        """Write Kafka's committed offsets of ``keys`` (for tools; never read over the log)."""
        kafka = kafka_module()
        offsets = [kafka.TopicPartition(t, p, self.positions.last[(t, p)] + 1)
                   for t, p in keys if (t, p) in self.positions.last]
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except kafka.KafkaException as exc:  # the group moved on, the broker is away: only tools see it
            log.debug("committing offsets failed: %s", exc)

    # -- storing -----------------------------------------------------------------

    def _poll(self, consumer) -> list:
        """Wait (at most 0.1 s) for a message, then take what else is queued locally, up to
        ``batch`` messages, gathering for at most ``flush_ms``: a batch is appended as soon
        as nothing more is queued, never held back waiting to fill."""
        messages = consumer.consume(1, 0.1)
        if not messages:
            return messages
        deadline = time.monotonic() + self.flush
        while len(messages) < self.batch:
            more = consumer.consume(self.batch - len(messages), 0)
            if not more:
                break
            messages.extend(more)
            if time.monotonic() >= deadline:
                break
        return messages

    def _keep(self, messages) -> tuple[list, dict[Partition, Any]]:
        """The messages to store — not errors, not at or below a partition's stored offset,
        of a partition this bridge holds (checked after the last ``consume`` of the batch,
        so after any rebalance it ran) — and the newest of them per partition."""
        kept = []
        newest: dict[Partition, Any] = {}
        errors = duplicates = 0
        last, assigned = self.positions.last, self.assigned
        for m in messages:
            error = m.error()
            if error is not None:
                if error.code() != kafka_module().KafkaError._PARTITION_EOF:
                    errors += 1
                    if error.name() not in self._warned:
                        self._warned.add(error.name())
                        log.warning("%s: %s (%s)", self.name, error.name(), m.topic())
                continue
            key = (m.topic(), m.partition())
            if key not in assigned or m.offset() <= last.get(key, -1):
                duplicates += 1
                continue
            kept.append(m)
            newest[key] = m  # in offset order per partition: the last one is the newest
        self.duplicates += duplicates
        self.counters.add(received=len(kept) + duplicates, errors=errors)
        return kept, newest

    def _entries(self, messages: list) -> list[tuple[Any, dict | bytes]]:
        """(message, item) pairs; the item as its stored encoding on the fast path (:mod:`.fast`)."""
        if self._fast:
            encoded = encode_batch(messages, self.value_only)
            if encoded is not None:
                return list(zip(messages, encoded, strict=True))
        pairs: list[tuple[Any, dict | bytes]] = []
        bad = 0
        for m in messages:
            item, refused = to_item(m, self.value_only)
            bad += refused
            pairs.append((m, item))
        if bad:
            self.counters.add(errors=bad)
        return pairs

    def _append(self, pairs: list[tuple[Any, dict | bytes]]) -> None:
        if isinstance(pairs[0][1], bytes):
            append_encoded(self.stream, cast("list[bytes]", [encoded for _, encoded in pairs]))  # all encoded
        else:
            self.stream.extend([item for _, item in pairs])

    def _repair(self, pairs, exc: BadItemError, refused: int) -> list[tuple[Any, dict | bytes]]:
        """The batch with each item the log refuses repaired (:func:`~.messages.repair`);
        a second refusal (of the batch as a whole): the facts of each message only."""
        nested = self.stream.store.nested_arrays
        pairs = [(m, to_item(m, self.value_only)[0] if isinstance(item, bytes) else item) for m, item in pairs]
        if refused == 1:
            fixed = []
            for m, item in pairs:
                reason = refusal(item, nested)
                if reason is not None:
                    self.counters.add(errors=1)
                    log.warning("%s: message %s[%d]@%d stored with an error: %s", self.name, m.topic(),
                                m.partition(), m.offset(), reason)
                    item = repair(m, item, reason, nested)
                fixed.append((m, item))
            return fixed
        if refused == 2:
            self.counters.add(errors=len(pairs))
            return [(m, {**repair(m, item, str(exc), nested), "value": None, "size": len(m.value() or b"")})
                    for m, item in pairs]
        raise exc

    def _store(self, consumer, messages: list, newest: dict[Partition, Any], fetched: float) -> None:
        """Append the batch (module docstring; retries: :func:`~..appending.append_retrying`),
        then record the positions (``newest``: the last message per partition) and commit;
        give the batch back to Kafka after ``patience``."""
        if not messages:
            return
        pairs = self._entries(messages)
        stored = append_retrying(self, self.stream.name, pairs, self._append, self._repair, what="Kafka messages",
                                 give_up=lambda: self.stopping or time.monotonic() - fetched > self.patience)
        if stored is None:
            self._give_back(consumer, pairs)
            return
        for key, m in newest.items():
            self.positions.stored(key, m.offset())
        self.counters.add(stored=len(stored))
        stamp = max(m.timestamp()[1] for m in newest.values())
        if stamp > 0:
            self.counters.lag = max(0.0, time.time() - stamp / 1000)
        self._commit(consumer, set(newest))

    def _give_back(self, consumer, pairs) -> None:
        """Seek each partition of an unstored batch back to its first message in it."""
        kafka = kafka_module()
        first: dict[Partition, int] = {}
        for m, _ in pairs:
            first.setdefault((m.topic(), m.partition()), m.offset())
        log.warning("%s: gave %d unstored messages back to Kafka", self.name, len(pairs))
        for (topic, partition), offset in first.items():
            try:
                consumer.seek(kafka.TopicPartition(topic, partition, offset))
            except kafka.KafkaException:  # no longer assigned: the new owner reads the position back
                pass

    # -- running -----------------------------------------------------------------

    def serve(self) -> None:
        kafka = kafka_module()
        config = client_config(self.target, self.problems, **{
            "group.id": self.group, "auto.offset.reset": self.start, **self.settings})
        consumer = kafka.Consumer(config)
        consumer.subscribe(list(self.target.topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        log.info("Kafka bridge %s: group %s at %s", self.name, self.group, self.target.masked)
        try:
            while not self.stopping:
                try:
                    messages = self._poll(consumer)
                except _GaveUp as exc:
                    if self.stopping:
                        break
                    raise exc.__cause__ or exc from None
                fetched = time.monotonic()
                self.problems.check()
                if messages:
                    self.problems.away.clear()
                    self._store(consumer, *self._keep(messages), fetched)
        finally:
            self._commit(consumer, set(self.assigned), asynchronous=False)
            try:
                consumer.close()  # leaves the group: the others take the partitions over at once
            except (kafka.KafkaException, RuntimeError, _GaveUp) as exc:
                log.debug("closing the Kafka consumer: %s", exc)
