"""The Kafka sink: :class:`KafkaSink` publishes what a consumer returns to a topic, and
the consumer commits its window only once the broker acknowledged every record
(``sink="kafka://host:9092/TOPIC?key=FIELD"``, ``streamlog publish NAME kafka://…``)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterable

import orjson

from ...errors import ConsumerError, UnreachableError
from ...items import to_jsonable
from ..appending import json_payloads
from .connection import Problems, client_config, kafka_module
from .url import parse_kafka_url

log = logging.getLogger("streamlog.kafka")

#: librdkafka settings of the sink (overridable with ``settings=``)
PRODUCER_SETTINGS: dict[str, Any] = {"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                     "message.max.bytes": 1_048_576}


class KafkaSink:
    """Publish records to the topic of ``url``: the ``sink=`` of a consumer.

    :meth:`extend` produces each record as JSON (datetimes as ISO-8601 strings) with the
    idempotent producer (``acks=all``), its key the value of the record's ``key=`` field
    (``?key=FIELD`` in the URL, or ``key=``; text as is, anything else as JSON; None: no
    key), and returns only once every delivery report is positive — so the consumer
    commits its window only after that. A broker that is down or does not acknowledge
    within ``timeout`` seconds: :class:`UnreachableError`; a broker that refuses a
    record (too large, not authorised): :class:`ConsumerError`. Either fails the window,
    which is retried. At least once: the retried window publishes *all* its records
    again, also those the broker had stored (the producer is replaced after a failure,
    so its idempotence does not reach across the retry). The producer is created on first
    use.
    """

    def __init__(self, url: str, *, key: str | None = None, timeout: float = 30.0,
                 settings: dict[str, Any] | None = None):
        self.target = parse_kafka_url(url, one_topic=True)
        if key is not None and self.target.key_field is not None and key != self.target.key_field:
            raise ConsumerError(f"{self.target.masked}: the key field is given twice (key={key!r} and in the URL)")
        if key is not None and (not isinstance(key, str) or not key):
            raise ConsumerError(f"key must be a field name, not {key!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ConsumerError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.key = key or self.target.key_field
        self.timeout = float(timeout)
        self.settings = {**PRODUCER_SETTINGS, "message.timeout.ms": int(self.timeout * 1000), **(settings or {})}
        self.sent = 0
        self.problems = Problems(self.target)
        self._producer: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<streamlog KafkaSink {self.target.masked}>"

    def _key(self, record: Any, index: int) -> bytes | None:
        if self.key is None:
            return None
        if not isinstance(record, dict) or self.key not in record:
            raise ConsumerError(f"record {index} has no field {self.key!r} for the Kafka key")
        value = record[self.key]
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else orjson.dumps(to_jsonable(value))

    def _client(self):
        with self._lock:
            if self._producer is None:
                kafka = kafka_module()
                self._producer = kafka.Producer(client_config(self.target, self.problems, **self.settings))
            return self._producer

    def _reset(self) -> None:
        """Drop the producer and what it still holds: a retry publishes afresh."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()
            producer.flush(0)

    def extend(self, records: Iterable[dict]) -> list[int]:
        """Produce every record (JSON) and wait for every delivery report (class docstring).
        Returns the offsets the broker gave them. Raises :class:`ConsumerError` (nothing
        produced) for a record without the key field or not JSON-encodable."""
        records = list(records)
        keys = [self._key(r, i) for i, r in enumerate(records)]
        values = json_payloads(records)
        if not records:
            return []
        self.problems.check()
        producer = self._client()
        offsets: list[int] = [-1] * len(records)
        failures: list[Any] = []

        def report(index: int):
            def delivered(error, message) -> None:
                if error is None:
                    offsets[index] = message.offset()
                else:
                    failures.append(error)
            return delivered

        kafka = kafka_module()
        try:
            for i, (key, value) in enumerate(zip(keys, values, strict=True)):
                while True:
                    try:
                        producer.produce(self.target.topic, value, key, on_delivery=report(i))
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        producer.poll(0.05)
            left = producer.flush(self.timeout)
        except kafka.KafkaException as exc:
            self._reset()
            raise UnreachableError(f"Kafka broker {self.target.masked}: {exc.args[0].name()}") from None
        self.problems.check()
        if left or failures:
            failed = list(failures)  # before the reset: its purge reports what is left as _PURGE_QUEUE failures
            self._reset()
            refused = [e for e in failed if not e.retriable() and e.code() != kafka.KafkaError._MSG_TIMED_OUT]
            if refused:
                raise ConsumerError(f"Kafka broker {self.target.masked} refused {len(refused)} of {len(records)} "
                                    f"messages: {refused[0].name()}")
            raise UnreachableError(f"Kafka broker {self.target.masked} did not acknowledge {left + len(failed)} of "
                                   f"{len(records)} messages within {self.timeout:g} s")
        self.sent += len(records)
        return offsets

    def close(self) -> None:
        """Send what is queued (within ``timeout``), then drop the producer."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(self.timeout)

    def __enter__(self) -> "KafkaSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
