"""MQTT in and out of streams: :class:`MQTTSource` (broker → stream, ``streamlog bridge
mqtt://…``) and :class:`MQTTSink` (consumer results → broker, ``sink="mqtt://…"``). Both
take ``mqtt://[user:pass@]host[:port]/TOPIC`` URLs (``mqtts://`` for TLS, port 8883 by
default); see :func:`parse_mqtt_url`.

One job per module:

* :mod:`.url` — the address: ``mqtt://`` URLs, topic filters;
* :mod:`.connection` — the paho client: protocol, credentials, TLS;
* :mod:`.messages` — messages as items: payloads, repairs, the ids stored last;
* :mod:`.source` — :class:`MQTTSource`: subscription, batching, acknowledgements;
* :mod:`.sink` — :class:`MQTTSink`: topic templates, publishing, waiting for the broker.

Failures follow :mod:`streamlog.bridges.retry`.
"""

from .sink import MQTTSink
from .source import DEDUP_WINDOW, IDLE_FLUSH, MQTTSource
from .url import DEFAULT_PORT, DEFAULT_TLS_PORT, MQTTTarget, parse_mqtt_url

__all__ = ["DEDUP_WINDOW", "DEFAULT_PORT", "DEFAULT_TLS_PORT", "IDLE_FLUSH", "MQTTSink", "MQTTSource", "MQTTTarget",
           "parse_mqtt_url"]
