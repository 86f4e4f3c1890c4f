"""The MQTT sink: :class:`MQTTSink` publishes what a consumer returns to a broker, and
the consumer commits its window only once the broker acknowledged every record
(``sink="mqtt://host/topic/{field}"``)."""

from __future__ import annotations

import logging
import re
import string
import threading
import time
from typing import TYPE_CHECKING, Iterable

from ...errors import ConsumerError, UnreachableError
from ...items import to_jsonable
from ..appending import json_payloads
from .connection import KEEPALIVE, new_client, paho_client
from .url import bad_url, parse_mqtt_url

if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt

log = logging.getLogger("streamlog.mqtt")


class MQTTSink:
    """Publish records to an MQTT broker: the ``sink=`` of a consumer.

    ``url``: ``mqtt://[user:pass@]host[:port]/TOPIC-TEMPLATE``; the topic may hold
    ``{field}`` placeholders filled from each record (``sensors/{device}/prediction``).
    :meth:`extend` publishes each record as JSON (datetimes as ISO-8601 strings) with QoS
    ``qos`` and returns only once the broker acknowledged every one of them, so the
    consumer commits its window only after that; when the broker does not acknowledge
    within ``timeout`` seconds it raises :class:`UnreachableError` and the window is
    retried. At least once: a retry may publish records the broker already had (their
    acknowledgement was lost). The connection is opened on first use and re-opened
    after a failure; the client session is clean.
    """

    def __init__(self, url: str, *, qos: int = 1, timeout: float = 30.0, client_id: str | None = None):
        self.target = parse_mqtt_url(url)
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            raise ConsumerError(f"qos must be 0, 1 or 2, not {qos!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ConsumerError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.qos = qos
        self.timeout = float(timeout)
        self.client_id = client_id or ""
        self._parts = self._parse_template(url)
        self.fields = sorted({f for _, f in self._parts if f is not None})
        self.sent = 0
        self._client: "mqtt.Client | None" = None
        self._connected = threading.Event()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<streamlog MQTTSink {self.target.masked}>"

    def _parse_template(self, url: str) -> list[tuple[str, str | None]]:
        try:
            parsed = list(string.Formatter().parse(self.target.topic))
        except ValueError as exc:
            raise bad_url(url, f"topic template: {exc}") from None
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in parsed:
            if "+" in literal or "#" in literal:
                raise bad_url(url, "wildcards (+, #) are not allowed in a topic to publish to")
            if name is not None and (not name or spec or conversion or not re.fullmatch(r"[^.\[\]{}]+", name)):
                raise bad_url(url, f"topic placeholder {{{name}}} must be a plain field name")
            parts.append((literal, name))
        return parts

    def topic_for(self, record: dict, index: int = 0) -> str:
        """The topic a record goes to. Raises :class:`ConsumerError` when the record
        lacks a placeholder's field or its value would make an invalid topic."""
        out = []
        for literal, name in self._parts:
            out.append(literal)
            if name is None:
                continue
            if not isinstance(record, dict) or name not in record:
                raise ConsumerError(f"record {index} has no field {name!r} for the MQTT topic "
                                    f"{self.target.topic!r}")
            value = record[name]
            text = value if isinstance(value, str) else str(to_jsonable(value))
            if "+" in text or "#" in text or "\x00" in text:
                raise ConsumerError(f"record {index}: field {name!r} = {text!r} cannot go in an MQTT topic "
                                    "(+, # and NUL are not allowed)")
            out.append(text)
        topic = "".join(out)
        if not topic or len(topic.encode()) > 65535:
            raise ConsumerError(f"record {index}: the MQTT topic {topic!r} is empty or too long")
        return topic

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s refused the connection: %s", self.target.address, reason)
        else:
            self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self._connected.clear()

    def _connect(self, deadline: float) -> "mqtt.Client":
        with self._lock:
            if self._client is None:
                mqtt = paho_client()
                client = new_client(self.target, self.client_id, mqtt.MQTTv311, clean_session=True)
                client.max_inflight_messages_set(1000)
                client.reconnect_delay_set(min_delay=0.1, max_delay=2)  # type: ignore[arg-type]
                client.on_connect = self._on_connect
                client.on_disconnect = self._on_disconnect
                self._connected.clear()
                client.connect_async(self.target.host, self.target.port, KEEPALIVE)
                client.loop_start()
                self._client = client
            client = self._client
        if not self._connected.wait(max(0.0, deadline - time.monotonic())):
            self._reset()
            raise UnreachableError(f"MQTT broker {self.target.masked} did not accept a connection within "
                                   f"{self.timeout:g} s")
        return client

    def _reset(self) -> None:
        """Drop the client and what it still holds: a retry publishes afresh."""
        with self._lock:
            client, self._client = self._client, None
            self._connected.clear()
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()

    def extend(self, records: Iterable[dict]) -> list[int]:
        """Publish every record (JSON) and wait until the broker acknowledged them all.

        Returns the MQTT packet ids. Raises :class:`ConsumerError` (nothing published) for
        a record without a placeholder's field or not JSON-encodable, and
        :class:`UnreachableError` when the broker did not acknowledge them all within
        ``timeout`` seconds.
        """
        records = list(records)
        topics = [self.topic_for(r, i) for i, r in enumerate(records)]
        payloads = json_payloads(records)
        if not records:
            return []
        deadline = time.monotonic() + self.timeout
        client = self._connect(deadline)
        infos = []
        try:
            for topic, payload in zip(topics, payloads, strict=True):
                infos.append(client.publish(topic, payload, qos=self.qos))
            for info in infos:
                info.wait_for_publish(max(0.001, deadline - time.monotonic()))
        except (RuntimeError, ValueError) as exc:  # not queued: the connection went away
            log.debug("MQTT publish failed: %s", exc)
        missing = len(records) - sum(1 for info in infos if info.rc == 0 and info.is_published())
        if missing:
            self._reset()
            raise UnreachableError(f"MQTT broker {self.target.masked} did not acknowledge {missing} of "
                                   f"{len(records)} messages within {self.timeout:g} s")
        self.sent += len(records)
        return [info.mid for info in infos]

    def close(self) -> None:
        """Disconnect (after what was published is sent)."""
        self._reset()

    def __enter__(self) -> "MQTTSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
