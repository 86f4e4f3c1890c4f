"""The paho client both MQTT bridges use: :func:`paho_client` (the paho module, or a
one-line error when it is missing), :func:`new_client` (a client for a target: client
id, protocol, credentials, TLS) and :func:`protocol_version`."""

from __future__ import annotations

from typing import Any

from ...errors import ConsumerError, StreamlogError
from .url import MQTTTarget

#: the session expiry interval that means "never"
SESSION_NEVER_EXPIRES = 0xFFFFFFFF

#: seconds between MQTT keep-alive pings
KEEPALIVE = 30


def paho_client():
    """The ``paho.mqtt.client`` module."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:  # pragma: no cover - a declared dependency
        raise StreamlogError("the MQTT bridge needs paho-mqtt>=2.1: pip install 'paho-mqtt>=2.1'") from None
    return mqtt


def new_client(target: MQTTTarget, client_id: str, protocol: int, clean_session: bool | None):
    """A paho client (not connected) for ``target``; ``clean_session`` only applies to
    MQTT v3.1.1 (v5 states clean start when connecting)."""
    mqtt = paho_client()
    kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol}
    if protocol != mqtt.MQTTv5:
        kwargs["clean_session"] = clean_session
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set()
    return client


def protocol_version(value: Any):
    """paho's constant for ``"5"`` or ``"3.1.1"``; :class:`ConsumerError` otherwise."""
    mqtt = paho_client()
    if value in (5, "5", "5.0", mqtt.MQTTv5):
        return mqtt.MQTTv5
    if value in ("3.1.1", "311", 311, mqtt.MQTTv311):
        return mqtt.MQTTv311
    raise ConsumerError(f"protocol must be '5' or '3.1.1', not {value!r}")
