"""Kafka in and out of streams: :class:`KafkaSource` (topics → stream, ``streamlog bridge
kafka://…``, exactly once) and :class:`KafkaSink` (consumer results → a topic,
``sink="kafka://…"`` and ``streamlog publish NAME kafka://…``). Both take
``kafka://[user:pass@]host[:port]/TOPIC`` URLs (``kafkas://`` for TLS); see
:func:`parse_kafka_url`.

One job per module:

* :mod:`.url` — the address: ``kafka://`` URLs, SASL and TLS options;
* :mod:`.connection` — the confluent-kafka clients: settings, errors, refused logins;
* :mod:`.messages` — messages as items: envelopes, values, repairs;
* :mod:`.position` — where the source is per partition, read back from the stream;
* :mod:`.source` — :class:`KafkaSource`: the group, batching, rebalances;
* :mod:`.sink` — :class:`KafkaSink`: the idempotent producer, delivery reports.

Failures follow :mod:`streamlog.bridges.retry`.
"""

from .connection import KafkaAccessError
from .sink import KafkaSink
from .source import KafkaSource
from .url import DEFAULT_PORT, KafkaTarget, parse_kafka_url

__all__ = ["DEFAULT_PORT", "KafkaAccessError", "KafkaSink", "KafkaSource", "KafkaTarget", "parse_kafka_url"]
