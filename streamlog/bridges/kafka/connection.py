"""The confluent-kafka clients both Kafka bridges use: :func:`kafka_module` (the module,
or a one-line error when it is missing), :func:`client_config` (bootstrap servers,
SASL credentials, TLS options of a target) and :class:`Problems`, the error callback
that sorts librdkafka's errors into "waited out" (the broker is away: librdkafka
reconnects by itself) and "ends the bridge" (the broker refused the credentials)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ...errors import StreamlogError
from ..base import Counters
from .url import KafkaTarget

log = logging.getLogger("streamlog.kafka")


class KafkaAccessError(StreamlogError):
    """The Kafka broker refused the credentials (or the access) of a bridge."""


def kafka_module():
    """The ``confluent_kafka`` module."""
    try:
        import confluent_kafka
    except ImportError:  # pragma: no cover - a declared dependency
        raise StreamlogError("the Kafka bridge needs confluent-kafka: pip install confluent-kafka") from None
    return confluent_kafka


def client_config(target: KafkaTarget, problems: "Problems", **settings: Any) -> dict[str, Any]:
    """librdkafka settings for ``target`` (servers, security, TLS) plus ``settings``."""
    config: dict[str, Any] = {"bootstrap.servers": target.servers, "security.protocol": target.security_protocol,
                              "error_cb": problems.on_error, "client.id": "streamlog",
                              "reconnect.backoff.max.ms": 2000, "log_level": 0}
    if target.username is not None:
        config.update({"sasl.mechanism": target.mechanism, "sasl.username": target.username,
                       "sasl.password": target.password})
    config.update(dict(target.tls_options))
    config.update(settings)
    return config


def refused_access(target: KafkaTarget) -> KafkaAccessError:
    """The one-line error of refused credentials (password masked)."""
    who = f"user {target.username!r} ({target.mechanism})" if target.username else "this client"
    return KafkaAccessError(f"Kafka broker {target.servers} refused {who} at {target.masked}: "
                            "check the user name, password and mechanism")


class Problems:
    """The ``error_cb`` of a client: counts and logs librdkafka's errors (masked; the broker
    being away is logged once per outage) and remembers a refusal of the credentials,
    which :meth:`check` raises."""

    def __init__(self, target: KafkaTarget, counters: Counters | None = None):
        self.target = target
        self.counters = counters
        self.refused: KafkaAccessError | None = None
        self.away = threading.Event()

    def on_error(self, error) -> None:
        kafka = kafka_module()
        code = error.code()
        if code in (kafka.KafkaError._AUTHENTICATION, kafka.KafkaError.SASL_AUTHENTICATION_FAILED,
                    kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED, kafka.KafkaError.GROUP_AUTHORIZATION_FAILED,
                    kafka.KafkaError.CLUSTER_AUTHORIZATION_FAILED):
            if self.refused is None:
                self.refused = refused_access(self.target)
            return
        if self.counters is not None:
            self.counters.add(errors=1)
        if code in (kafka.KafkaError._ALL_BROKERS_DOWN, kafka.KafkaError._TRANSPORT):
            if not self.away.is_set():
                self.away.set()
                log.warning("lost the Kafka broker %s; reconnecting", self.target.servers)
            return
        log.warning("Kafka %s: %s", self.target.servers, error.name())

    def check(self) -> None:
        """Raise the refusal of the credentials, if the broker refused them."""
        if self.refused is not None:
            raise self.refused
