"""MQTT in and out of streams: :class:`MQTTSource` (broker → stream) and :class:`MQTTSink`
(consumer results → broker). Both take ``mqtt://[user:pass@]host[:port]/TOPIC`` URLs
(``mqtts://`` for TLS, port 8883 by default); see :func:`parse_mqtt_url`.

The source, in short::

    bridge = MQTTSource("mqtt://broker/sensors/+/temp", "sensors", id_field="id")
    bridge.run()          # until stop(), SIGINT or SIGTERM

Each message becomes one item::

    {"topic": "sensors/7/temp", "payload": <JSON value | text | base64 text>,
     "qos": 1, "retain": False, "received": datetime (UTC)}
    # + "encoding": "base64" when the payload bytes are not UTF-8
    # + "error": "..." when a JSON payload could not be stored as such (kept as text)

Delivery guarantees and what the broker must keep are in :class:`MQTTSource`'s docstring.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import re
import sqlite3
import string
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import unquote

import orjson

from ..config import mask_url
from ..errors import BadItemError, BadURLError, ConsumerError, StreamlogError, UnreachableError
from ..items import encode_many, normalize, to_jsonable
from ..lines import json_value  # one number rule with `streamlog append` and the TCP bridge
from .base import STATUS_EVERY, Bridge

if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt

    from ..stream import Stream

log = logging.getLogger("streamlog.mqtt")

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
#: newest items of the stream read at start to rebuild the set of stored ids (``id_field``)
DEDUP_WINDOW = 10_000
#: seconds: flush a non-empty batch once no message has arrived for this long (``idle_ms``)
IDLE_FLUSH = 0.002
_SESSION_NEVER_EXPIRES = 0xFFFFFFFF
_KEEPALIVE = 30


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:  # pragma: no cover - a declared dependency
        raise StreamlogError("the MQTT bridge needs paho-mqtt>=2.1: pip install 'paho-mqtt>=2.1'") from None
    return mqtt


# -- URLs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MQTTTarget:
    """What an ``mqtt://`` URL names. ``topic`` is URL-decoded; for a source it may hold
    several comma-separated topic filters (:attr:`topics`)."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    topic: str
    tls: bool = False
    url: str = field(default="", repr=False, compare=False)

    @property
    def topics(self) -> list[str]:
        """The comma-separated topic filters of a source URL."""
        return [t for t in self.topic.split(",") if t]

    @property
    def masked(self) -> str:
        """The URL without its password: safe for logs and messages."""
        return mask_url(self.url)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _bad(url: str, why: str) -> BadURLError:
    """A one-line error naming the URL without its password (and without any user
    information at all when the URL has no scheme: then nothing reliably delimits it)."""
    shown = mask_url(url) if re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", url) else "(not a URL)"
    return BadURLError(f"bad MQTT URL {shown!r}: {why} "
                       "(expected mqtt://[user:password@]host[:port]/topic)")


def parse_mqtt_url(url: str) -> MQTTTarget:
    """Parse ``mqtt://[user:pass@]host[:port]/TOPIC`` (or ``mqtts://``, TLS).

    The host ends at the first ``/``: a ``/``, ``@`` or ``:`` in the user name or password
    must be percent-encoded (``%2F``, ``%40``, ``%3A``). The topic is everything after
    that ``/``, URL-decoded
    (``%23`` → ``#``; a literal ``#`` works too: it is never a fragment here). User
    and password are URL-decoded. Port: 1883 (8883 for ``mqtts``). Raises a one-line
    :class:`BadURLError` (password masked) when the URL cannot be used.
    """
    if not isinstance(url, str):
        raise BadURLError(f"an MQTT URL must be a string, not {type(url).__name__}")
    match = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", url)
    if match is None:
        raise _bad(url, "no scheme")
    scheme = match.group(1).lower()
    if scheme not in ("mqtt", "mqtts"):
        raise _bad(url, f"scheme {scheme!r} is not mqtt or mqtts")
    rest = url[match.end():]
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    username = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        username = unquote(name)
        password = unquote(secret) if colon else None
        if not username:
            raise _bad(url, "empty user name")
    if hostport.startswith("["):  # [IPv6]:port
        end = hostport.find("]")
        if end < 0:
            raise _bad(url, "unclosed [ in the host")
        host, port_text = hostport[1:end], hostport[end + 1:]
        if port_text and not port_text.startswith(":"):
            raise _bad(url, "junk after the IPv6 address")
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise _bad(url, "no host")
    if any(c.isspace() for c in host):
        raise _bad(url, "whitespace in the host")
    port = DEFAULT_TLS_PORT if scheme == "mqtts" else DEFAULT_PORT
    if port_text or hostport.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise _bad(url, "the port is not a number from 1 to 65535 (a '/' or '@' in the password "
                            "must be written %2F, %40)")
        port = int(port_text)
    topic = unquote(path) if slash else ""
    if not topic:
        raise _bad(url, "no topic (add /TOPIC after the host)")
    if "\x00" in topic:
        raise _bad(url, "NUL in the topic")
    return MQTTTarget(host=host, port=port, username=username, password=password, topic=topic,
                      tls=scheme == "mqtts", url=url)


def _check_filter(url: str, topic: str) -> None:
    """A subscription filter: ``+`` a whole level, ``#`` the whole last level."""
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise _bad(url, f"in topic filter {topic!r}, '#' must be the whole last level")
        if "+" in level and level != "+":
            raise _bad(url, f"in topic filter {topic!r}, '+' must be a whole level")
    if len(topic.encode()) > 65535:
        raise _bad(url, "topic longer than 65535 bytes")


def _new_client(target: MQTTTarget, client_id: str, protocol: int, clean_session: bool | None):
    mqtt = _paho()
    kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol}
    if protocol != mqtt.MQTTv5:
        kwargs["clean_session"] = clean_session
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set()
    return client


def _protocol(value: Any):
    mqtt = _paho()
    if value in (5, "5", "5.0", mqtt.MQTTv5):
        return mqtt.MQTTv5
    if value in ("3.1.1", "311", 311, mqtt.MQTTv311):
        return mqtt.MQTTv311
    raise ConsumerError(f"protocol must be '5' or '3.1.1', not {value!r}")


# -- the source --------------------------------------------------------------------------


@dataclass
class _Pending:
    """One received message waiting for its batch to be stored (then acknowledged)."""

    item: dict
    raw: bytes
    mid: int
    qos: int
    dup: bool
    gen: int  # connection it arrived on
    epoch: int  # broker session it belongs to
    arrived: float  # time.monotonic()


def _payload(raw: bytes) -> tuple[Any, str | None]:
    """(payload, encoding): a JSON value (integers exact, as :func:`~streamlog.lines.json_value`
    reads them: one outside the 64-bit range is then refused and stored as text with an
    ``"error"``, never rounded), else UTF-8 text, else base64 text."""
    try:
        return json_value(raw), None
    except orjson.JSONDecodeError:
        pass
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def _id_key(value: Any) -> bytes | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # e.g. an integer beyond 64 bits: exact, and never equal to a JSON key
        return b"repr:" + repr(value).encode()


_TRANSIENT: tuple[type[BaseException], ...] = (StreamlogError, OSError, sqlite3.Error)
try:  # pragma: no branch
    from pymongo.errors import PyMongoError

    _TRANSIENT += (PyMongoError,)
except ImportError:  # pragma: no cover
    pass


class MQTTSource(Bridge):
    """Subscribe to MQTT topics and append every message to ``stream`` — at least once.

    ``url``: ``mqtt://[user:pass@]host[:port]/TOPIC``; TOPIC may hold ``+``/``#`` wildcards
    (URL-encoded or not) and several filters separated by commas. ``stream``: a
    :class:`~streamlog.Stream` or a stream name (opened with ``db_url``, default
    ``STREAMLOG_URL`` → the embedded file).

    **At least once, broker → log.** The subscription is QoS ``qos`` (1 by default) and
    acknowledgement is manual: a message is acknowledged (PUBACK) only after the batch
    holding it was appended (``stream.extend`` returned). Batches are flushed at ``batch``
    messages, when the oldest pending message has waited ``flush_ms``, or when no message
    has arrived for ``idle_ms`` (2 ms; None: never): brokers cap unacknowledged
    deliveries (mosquitto's ``max_inflight_messages``, 20, for clients that do not ask
    for more, e.g. MQTT v3.1.1 ones), and with a capped window that idle flush is what
    keeps messages flowing. While the
    database is unreachable nothing is acknowledged and the append is retried with
    back-off; the broker stops delivering once its in-flight window is full.
    ``stop()``/SIGTERM: the pending batch is stored, acknowledged, then the client
    disconnects and :meth:`run` returns. If the database is down at that moment the
    batch is *not* acknowledged and the broker keeps it for the next run.

    **Persistent session.** The client id is fixed (``client_id``, default
    ``streamlog-<stream>-<hash of stream, database and topics>``) and the session is kept
    when the bridge is away: MQTT v5 (``protocol="5"``, default) with clean start off, a
    session expiry of ``session_expiry`` seconds (default: never) and a Receive Maximum
    of ``2 × batch`` (≤ 65535) so the broker may have a full batch in flight; or
    MQTT v3.1.1 (``protocol="3.1.1"``) with ``clean_session=False``. Messages published
    while the bridge is down are delivered when it is back **if the broker keeps them**:

    * publishers use QoS ≥ 1 (a QoS 0 publish is delivered at QoS 0: never queued for an
      offline session, never redelivered);
    * mosquitto: ``persistence true`` (+ ``persistence_location``) for sessions and queued
      messages to survive a broker restart — they are saved on a clean shutdown and every
      ``autosave_interval`` s (default 1800; lower it, or ``autosave_on_changes``, to bound
      what a broker *crash* loses); ``max_queued_messages`` (default **1000** — past it
      messages for the session are dropped) and ``max_queued_bytes`` sized for the longest
      outage, ``0`` = unlimited; ``persistent_client_expiration`` unset or longer than the
      longest outage. Other brokers: the equivalent session/queue limits.

    **Duplicates — what can repeat.** A message is written again when it was stored but
    its acknowledgement did not reach the broker: the bridge process dies (SIGKILL, power)
    between an append and the PUBACK, or the connection drops in that window and the
    session then also changes (bridge restart). On a mere reconnect of the same running
    bridge, copies the broker redelivers (same packet id, DUP flag) of messages already
    stored are acknowledged without being stored again, and unstored messages from the
    old connection are dropped in favour of the redelivered copies. MQTT v3.1.1 also
    resends retained messages when it re-subscribes at start (v5 subscribes with
    "retain handling 1": only for a new subscription). A QoS 2 subscription does not
    protect more: paho acknowledges receipt (PUBREC) before the payload is handed over,
    so a crash before the append *loses* that message — use QoS 1.
    With ``id_field="id"`` (a field of JSON-object payloads) a message whose id is among
    the last ``dedup_window`` ids stored (10,000; rebuilt at start from the stream's
    newest 10,000 items, which is where a crash between append and ack leaves them) is
    acknowledged and not stored again; messages without the field are always stored.

    Payloads that are JSON but cannot be stored as items (keys with ``.`` or ``$``,
    integers outside the signed 64-bit range — read exactly, never as a rounded float,
    by the number rule every ingest path shares —, too deep) are stored as text with an
    ``"error"``; a payload too big for an item (1 MiB) is stored as ``payload: None``
    with ``"error"`` and ``"size"`` (each counts in ``counters.errors``). Nothing is
    dropped silently.

    ``counters``: ``received`` (messages, redelivered copies included), ``stored``
    (items appended), ``errors`` (lost connections, failed connection attempts, failed
    appends, payloads stored with an error), ``lag`` (seconds from the receipt of the
    oldest message of the last batch to the end of its append). ``duplicates`` counts
    messages acknowledged without being stored again.
    """

    name = "mqtt"

    def __init__(self, url: str, stream: "Stream | str", *, qos: int = 1, batch: int = 1000,
                 flush_ms: float = 200, client_id: str | None = None, id_field: str | None = None,
                 db_url: str | None = None, status_every: float | None = STATUS_EVERY,
                 protocol: str | int = "5", session_expiry: int | None = None,
                 dedup_window: int = DEDUP_WINDOW, idle_ms: float | None = IDLE_FLUSH * 1000,
                 status_stream=None):
        super().__init__(status_every=status_every, status_stream=status_stream)
        self.target = parse_mqtt_url(url)
        for topic in self.target.topics:
            _check_filter(url, topic)
        if not self.target.topics:
            raise _bad(url, "no topic")
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            raise ConsumerError(f"qos must be 0, 1 or 2, not {qos!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConsumerError(f"batch must be a positive integer, not {batch!r}")
        if not isinstance(flush_ms, (int, float)) or isinstance(flush_ms, bool) or not flush_ms >= 0:
            raise ConsumerError(f"flush_ms must be a non-negative number, not {flush_ms!r}")
        if isinstance(dedup_window, bool) or not isinstance(dedup_window, int) or dedup_window < 1:
            raise ConsumerError(f"dedup_window must be a positive integer, not {dedup_window!r}")
        self.protocol = _protocol(protocol)
        if isinstance(stream, str):
            from .. import stream as open_stream

            stream = open_stream(stream, db_url)
        self.stream = stream
        self.qos = qos
        self.batch = batch
        self.flush = flush_ms / 1000.0
        if idle_ms is not None and (not isinstance(idle_ms, (int, float)) or isinstance(idle_ms, bool)
                                    or not idle_ms >= 0):
            raise ConsumerError(f"idle_ms must be a non-negative number or None, not {idle_ms!r}")
        self.idle = float("inf") if idle_ms is None else min(self.flush, idle_ms / 1000.0)
        self.id_field = id_field
        self.dedup_window = dedup_window
        self.session_expiry = _SESSION_NEVER_EXPIRES if session_expiry is None else int(session_expiry)
        self.client_id = client_id or self._default_client_id()
        self.name = f"mqtt {self.target.masked} → {stream.name}"
        self.duplicates = 0
        self.client: "mqtt.Client | None" = None
        # Shared with paho's network thread (guarded by _cond).
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._gen = 0
        self._epoch = 0
        #: set while connected and subscribed (tests and tools wait on it)
        self.ready = threading.Event()
        self._subscribed_once = False
        self._last_arrival = 0.0
        self._stored_unacked: dict[int, int] = {}  # mid → epoch: stored, ack lost with the connection
        # Owned by the serve thread.
        self._seen: set[bytes] = set()
        self._seen_order: deque[bytes] = deque()

    def _default_client_id(self) -> str:
        what = "\n".join([self.stream.name, mask_url(self.stream.store.url), *sorted(self.target.topics)])
        digest = hashlib.sha256(what.encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9_-]", "_", self.stream.name)[:40]
        return f"streamlog-{name}-{digest}"

    def stop(self) -> None:
        super().stop()
        with self._cond:
            self._cond.notify_all()

    # -- paho callbacks (network thread) ----------------------------------------------

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self.counters.add(errors=1)
            log.error("MQTT broker %s refused the connection: %s", self.target.address, reason)
            return
        mqtt = _paho()
        with self._cond:
            self._gen += 1
            resumed = bool(flags.session_present)
            if resumed:
                # Unstored QoS 1 messages of this session: the broker resends them (same
                # packet ids). Those of a session the broker lost are kept and stored.
                self._pending = [p for p in self._pending if not (p.qos == 1 and p.epoch == self._epoch)]
            else:
                self._epoch += 1
                self._stored_unacked.clear()
            first = not self._subscribed_once
            self._subscribed_once = True
        log.info("connected to MQTT broker %s as %s (session %s)", self.target.address, self.client_id,
                 "resumed" if resumed else "new")
        if first or not resumed:
            if self.protocol == mqtt.MQTTv5:
                from paho.mqtt.subscribeoptions import SubscribeOptions

                options = SubscribeOptions(qos=self.qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
                client.subscribe([(t, options) for t in self.target.topics])
            else:
                client.subscribe([(t, self.qos) for t in self.target.topics])
        else:
            self.ready.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = False
        for topic, code in zip(self.target.topics, reason_codes):
            if code.is_failure:
                refused = True
                self.counters.add(errors=1)
                log.error("MQTT broker %s refused the subscription to %r: %s", self.target.address, topic, code)
        if not refused:
            self.ready.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self.ready.clear()
        if self.stopping and not reason.is_failure:
            return
        self.counters.add(errors=1)
        log.warning("lost the MQTT broker %s (%s); reconnecting", self.target.address, reason)

    def _on_connect_fail(self, client, userdata) -> None:
        self.counters.add(errors=1)
        log.warning("cannot connect to the MQTT broker %s; retrying", self.target.address)

    def _on_message(self, client, userdata, message) -> None:
        arrived = time.monotonic()
        raw = bytes(message.payload)
        payload, encoding = _payload(raw)
        topic = message._topic.decode("utf-8", "replace")  # .topic raises on invalid UTF-8
        item = {"topic": topic, "payload": payload, "qos": message.qos, "retain": bool(message.retain),
                "received": datetime.now(timezone.utc)}
        if encoding:
            item["encoding"] = encoding
        self.counters.add(received=1)
        with self._cond:
            if message.qos and message.dup and self._stored_unacked.get(message.mid) == self._epoch:
                # A redelivered copy of a message stored before the connection dropped.
                del self._stored_unacked[message.mid]
                self.duplicates += 1
                self._send_ack(message.mid, message.qos)
                return
            self._pending.append(_Pending(item, raw, message.mid, message.qos, bool(message.dup),
                                          self._gen, self._epoch, arrived))
            self._last_arrival = arrived
            if len(self._pending) >= self.batch or len(self._pending) == 1:
                self._cond.notify_all()

    # -- acknowledgements ---------------------------------------------------------------

    def _send_ack(self, mid: int, qos: int) -> None:
        if self.client is not None:
            self.client.ack(mid, qos)

    def _ack(self, entries: list[_Pending]) -> None:
        """Acknowledge stored messages, on the connection they came on when it is still up."""
        with self._cond:
            for p in entries:
                if not p.qos:
                    continue
                if p.gen == self._gen:
                    self._send_ack(p.mid, p.qos)
                elif p.epoch == self._epoch:
                    # Stored, but the connection changed under the append: the broker
                    # resends it with its packet id; ack that copy instead of storing it.
                    if p.qos == 2:  # the broker resends PUBREL, not the message
                        self._send_ack(p.mid, p.qos)
                        continue
                    copy = next((q for q in self._pending if q.mid == p.mid and q.dup and q.gen > p.gen), None)
                    if copy is not None:
                        self._pending.remove(copy)
                        self.duplicates += 1
                        self._send_ack(copy.mid, copy.qos)
                    else:
                        self._stored_unacked[p.mid] = p.epoch

    # -- ids -----------------------------------------------------------------------------

    def _id_of(self, item: dict) -> bytes | None:
        payload = item.get("payload")
        if self.id_field is None or not isinstance(payload, dict):
            return None
        return _id_key(payload.get(self.id_field))

    def _remember(self, key: bytes) -> None:
        if key in self._seen:
            return
        self._seen.add(key)
        self._seen_order.append(key)
        while len(self._seen_order) > self.dedup_window:
            self._seen.discard(self._seen_order.popleft())

    def _rebuild_ids(self) -> None:
        if self.id_field is None:
            return
        for record in self.stream.tail(self.dedup_window):
            key = self._id_of(record["data"])
            if key is not None:
                self._remember(key)
        log.info("%d recent ids of %s read to drop redelivered messages", len(self._seen), self.stream.name)

    # -- storing -------------------------------------------------------------------------

    def _take(self) -> list[_Pending]:
        """Wait (≤ 0.1 s) for a batch that is due; return it (maybe empty)."""
        with self._cond:
            while True:
                pending = self._pending
                now = time.monotonic()
                if self.stopping or len(pending) >= self.batch or (pending and (
                        now - pending[0].arrived >= self.flush or now - self._last_arrival >= self.idle)):
                    batch, self._pending = pending[:self.batch], pending[self.batch:]
                    return batch
                if pending:
                    wait = min(pending[0].arrived + self.flush, self._last_arrival + self.idle) - now
                    wait = min(0.1, max(wait, 0.0005))
                else:
                    wait = 0.1
                self._cond.wait(wait)
                if self.stopping and not self._pending:
                    return []

    def _fix(self, pairs: list[tuple[_Pending, dict]]) -> list[tuple[_Pending, dict]]:
        """Replace the items the log refuses (BadItemError) by ones it takes: the raw
        payload as text (or base64) with an ``"error"``, or no payload when too big."""
        nested = getattr(self.stream.store, "nested_arrays", True)
        fixed = []
        for p, item in pairs:
            try:
                encode_many([normalize(item, nested)])
                fixed.append((p, item))
                continue
            except BadItemError as exc:
                error = str(exc)
            self.counters.add(errors=1)
            item = dict(item)
            item.pop("encoding", None)
            try:
                item["payload"] = p.raw.decode("utf-8")
            except UnicodeDecodeError:
                item["payload"], item["encoding"] = base64.b64encode(p.raw).decode("ascii"), "base64"
            item["error"] = error
            try:
                encode_many([normalize(item, nested)])
            except BadItemError:
                item.pop("encoding", None)
                item.update(payload=None, size=len(p.raw))
            log.warning("message on %r stored with an error: %s", item["topic"], error)
            fixed.append((p, item))
        return fixed

    def _store(self, entries: list[_Pending], give_up: bool = False) -> bool:
        """Append the batch (retrying while the database fails), then acknowledge it.
        Returns False when it gave up (stopping while the database fails)."""
        pairs: list[tuple[_Pending, dict]] = []
        batch_keys: set[bytes] = set()
        for p in entries:
            key = self._id_of(p.item) if self.id_field else None
            if key is not None and (key in self._seen or key in batch_keys):
                with self._cond:
                    self.duplicates += 1
                continue
            if key is not None:
                batch_keys.add(key)
            pairs.append((p, p.item))
        delay = 0.05
        fixed = 0
        while pairs:
            try:
                self.stream.extend([item for _, item in pairs])
                break
            except BadItemError as exc:
                fixed += 1
                if fixed == 1:
                    pairs = self._fix(pairs)
                elif fixed == 2:  # refused as a batch although each item passes: keep only the facts
                    log.warning("a batch of %d MQTT messages was refused (%s): stored without payloads",
                                len(pairs), exc)
                    self.counters.add(errors=len(pairs))
                    pairs = [(p, {"topic": item["topic"], "payload": None, "qos": item["qos"],
                                  "retain": item["retain"], "received": item["received"],
                                  "error": str(exc), "size": len(p.raw)}) for p, item in pairs]
                else:
                    raise
            except _TRANSIENT as exc:
                self.counters.add(errors=1)
                if give_up or self.stopping:
                    log.error("could not store %d MQTT messages on stopping (%s); not acknowledged: the "
                              "broker keeps them for the next run", len(pairs), mask_url(str(exc)))
                    return False
                log.warning("could not store %d MQTT messages (%s); retrying in %.2f s", len(pairs),
                            mask_url(str(exc)), delay)
                self.stop_event.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
        done = time.monotonic()
        if pairs:
            self.counters.lag = done - min(p.arrived for p, _ in pairs)
            self.counters.add(stored=len(pairs))
        for key in batch_keys:
            self._remember(key)
        self._ack(entries)
        return True

    # -- running -------------------------------------------------------------------------

    def serve(self) -> None:
        mqtt = _paho()
        self._rebuild_ids()
        client = _new_client(self.target, self.client_id, self.protocol, clean_session=False)
        client.manual_ack_set(True)
        client.reconnect_delay_set(min_delay=0.1, max_delay=5)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client
        properties = None
        if self.protocol == mqtt.MQTTv5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.session_expiry
            properties.ReceiveMaximum = min(65535, max(20, 2 * self.batch))
            client.connect_async(self.target.host, self.target.port, _KEEPALIVE, clean_start=False,
                                 properties=properties)
        else:
            client.connect_async(self.target.host, self.target.port, _KEEPALIVE)
        log.info("MQTT bridge %s: client id %s", self.name, self.client_id)
        client.loop_start()
        try:
            while not self.stopping:
                entries = self._take()
                if entries:
                    self._store(entries)
            while True:  # stopping: store and acknowledge what was received
                with self._cond:
                    entries, self._pending = self._pending[:self.batch], self._pending[self.batch:]
                if not entries or not self._store(entries, give_up=True):
                    break
        finally:
            try:
                client.disconnect()  # after the queued acknowledgements
            finally:
                client.loop_stop()
                self.client = None


# -- the sink ----------------------------------------------------------------------------


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
            raise _bad(url, f"topic template: {exc}") from None
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in parsed:
            if "+" in literal or "#" in literal:
                raise _bad(url, "wildcards (+, #) are not allowed in a topic to publish to")
            if name is not None and (not name or spec or conversion or not re.fullmatch(r"[^.\[\]{}]+", name)):
                raise _bad(url, f"topic placeholder {{{name}}} must be a plain field name")
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
                mqtt = _paho()
                client = _new_client(self.target, self.client_id, mqtt.MQTTv311, clean_session=True)
                client.max_inflight_messages_set(1000)
                client.reconnect_delay_set(min_delay=0.1, max_delay=2)  # type: ignore[arg-type]
                client.on_connect = self._on_connect
                client.on_disconnect = self._on_disconnect
                self._connected.clear()
                client.connect_async(self.target.host, self.target.port, _KEEPALIVE)
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
        payloads = []
        for i, record in enumerate(records):
            try:
                payloads.append(orjson.dumps(to_jsonable(record), option=orjson.OPT_SERIALIZE_NUMPY
                                             | orjson.OPT_NON_STR_KEYS))
            except TypeError as exc:
                raise ConsumerError(f"record {i} cannot be published as JSON: {exc}") from None
        if not records:
            return []
        deadline = time.monotonic() + self.timeout
        client = self._connect(deadline)
        infos = []
        try:
            for topic, payload in zip(topics, payloads):
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
