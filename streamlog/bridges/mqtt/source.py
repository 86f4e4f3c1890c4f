"""The MQTT source: :class:`MQTTSource` subscribes to topics of a broker and appends every
message to a stream — at least once, over a persistent session, acknowledging each
message only once it is in the log (``streamlog bridge mqtt://…``).

    bridge = MQTTSource("mqtt://broker/sensors/+/temp", "sensors", id_field="id")
    bridge.run()          # until stop(), SIGINT or SIGTERM

Each message becomes one item::

    {"topic": "sensors/7/temp", "payload": <JSON value | text | base64 text>,
     "qos": 1, "retain": False, "received": datetime (UTC)}
    # + "encoding": "base64" when the payload bytes are not UTF-8
    # + "error": "..." when a JSON payload could not be stored as such (kept as text)

Delivery guarantees and what the broker must keep are in :class:`MQTTSource`'s
docstring; messages as items in :mod:`.messages`; the URL in :mod:`.url`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ...config import mask_url
from ...errors import BadItemError, ConsumerError
from ..appending import append_retrying
from ..base import STATUS_EVERY, Bridge
from .connection import KEEPALIVE, SESSION_NEVER_EXPIRES, new_client, paho_client, protocol_version
from .messages import Pending, RecentIds, decode_payload, facts_only, repair_items
from .url import bad_url, check_topic_filter, parse_mqtt_url

if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt

    from ...stream import Stream

log = logging.getLogger("streamlog.mqtt")


#: newest items of the stream read at start to rebuild the set of stored ids (``id_field``)
DEDUP_WINDOW = 10_000

#: seconds: flush a non-empty batch once no message has arrived for this long (``idle_ms``)
IDLE_FLUSH = 0.002


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
    bridge (the broker's restart included), copies the broker redelivers (same packet id,
    DUP flag) of messages already stored are acknowledged without being stored again —
    also when the first acknowledgement was sent but lost on the way (a copy that matches
    the last message acknowledged under its packet id, topic and payload) —, and unstored
    messages from the old connection are dropped in favour of the redelivered copies.
    MQTT v3.1.1 also
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

    **Failures** follow the bridges' retry policy (:mod:`streamlog.bridges.retry`): an
    unreachable database is retried as above; a dropped stream stops the bridge with
    its batch unacknowledged (the broker keeps it), and :meth:`run` raises
    :class:`~streamlog.errors.UnknownStreamError` (``streamlog bridge``: exit code 3).
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
            check_topic_filter(url, topic)
        if not self.target.topics:
            raise bad_url(url, "no topic")
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            raise ConsumerError(f"qos must be 0, 1 or 2, not {qos!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConsumerError(f"batch must be a positive integer, not {batch!r}")
        if not isinstance(flush_ms, (int, float)) or isinstance(flush_ms, bool) or not flush_ms >= 0:
            raise ConsumerError(f"flush_ms must be a non-negative number, not {flush_ms!r}")
        if isinstance(dedup_window, bool) or not isinstance(dedup_window, int) or dedup_window < 1:
            raise ConsumerError(f"dedup_window must be a positive integer, not {dedup_window!r}")
        self.protocol = protocol_version(protocol)
        if isinstance(stream, str):
            from ... import stream as open_stream

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
        self.session_expiry = SESSION_NEVER_EXPIRES if session_expiry is None else int(session_expiry)
        self.client_id = client_id or self._default_client_id()
        self.name = f"mqtt {self.target.masked} → {stream.name}"
        self.duplicates = 0
        self.client: "mqtt.Client | None" = None
        # Shared with paho's network thread (guarded by _cond).
        self._cond = threading.Condition()
        self._pending: list[Pending] = []
        self._gen = 0
        self._epoch = 0
        #: set while connected and subscribed (tests and tools wait on it)
        self.ready = threading.Event()
        self._subscribed_once = False
        self._last_arrival = 0.0
        self._stored_unacked: dict[int, int] = {}  # mid → epoch: stored, ack lost with the connection
        # mid → (epoch, connection, topic+payload hash) of the newest QoS 1 acks sent: an ack in
        # flight when the connection (or the broker) dies is lost, and the broker resends
        # that message with the DUP flag on the resumed session. Only the broker's in-flight
        # window of acks can be lost (acks travel in order), so a bounded memory suffices.
        self._acked: OrderedDict[int, tuple[int, int, int]] = OrderedDict()
        self._acked_limit = max(1024, 2 * self.batch)
        # Owned by the serve thread.
        self._recent = RecentIds(id_field, dedup_window)

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
        mqtt = paho_client()
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
                self._acked.clear()
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
        for topic, code in zip(self.target.topics, reason_codes, strict=False):
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
        payload, encoding = decode_payload(raw)
        topic = message._topic.decode("utf-8", "replace")  # .topic raises on invalid UTF-8
        item = {"topic": topic, "payload": payload, "qos": message.qos, "retain": bool(message.retain),
                "received": datetime.now(timezone.utc)}
        if encoding:
            item["encoding"] = encoding
        self.counters.add(received=1)
        with self._cond:
            if message.qos and message.dup and (self._stored_unacked.get(message.mid) == self._epoch
                                                or self._ack_was_lost(message.mid, topic, raw)):
                # A redelivered copy of a message stored before the connection dropped.
                self._stored_unacked.pop(message.mid, None)
                self.duplicates += 1
                self._send_ack(message.mid, message.qos, topic, raw)
                return
            self._pending.append(Pending(item, raw, message.mid, message.qos, bool(message.dup),
                                          self._gen, self._epoch, arrived))
            self._last_arrival = arrived
            if len(self._pending) >= self.batch or len(self._pending) == 1:
                self._cond.notify_all()

    # -- acknowledgements ---------------------------------------------------------------

    def _send_ack(self, mid: int, qos: int, topic: str = "", raw: bytes = b"") -> None:
        if self.client is None:
            return
        self.client.ack(mid, qos)
        if qos == 1:
            acked = self._acked
            acked[mid] = (self._epoch, self._gen, hash((topic, raw)))
            acked.move_to_end(mid)
            if len(acked) > self._acked_limit:
                acked.popitem(last=False)

    def _ack_was_lost(self, mid: int, topic: str, raw: bytes) -> bool:
        """Whether a DUP copy is the message last acknowledged under ``mid`` on an earlier
        connection of this session (same topic and payload): its ack never arrived."""
        sent = self._acked.get(mid)
        return sent is not None and sent[0] == self._epoch and sent[1] < self._gen and sent[2] == hash((topic, raw))

    def _ack(self, entries: list[Pending]) -> None:
        """Acknowledge stored messages, on the connection they came on when it is still up."""
        with self._cond:
            for p in entries:
                if not p.qos:
                    continue
                if p.gen == self._gen:
                    self._send_ack(p.mid, p.qos, p.item["topic"], p.raw)
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
                        self._send_ack(copy.mid, copy.qos, copy.item["topic"], copy.raw)
                    else:
                        self._stored_unacked[p.mid] = p.epoch

    # -- ids -----------------------------------------------------------------------------

    # -- storing -------------------------------------------------------------------------

    def _take(self) -> list[Pending]:
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

    def _repair(self, pairs: list[tuple[Pending, dict]], exc: BadItemError, refused: int) -> list[tuple[Pending, dict]]:
        """The batch the log refused: first each refused item repaired, then (refused as a
        batch although each item passes) the facts of each message only."""
        if refused == 1:
            pairs, repaired = repair_items(pairs, self.stream.store.nested_arrays)
            self.counters.add(errors=repaired)
            return pairs
        if refused == 2:
            log.warning("a batch of %d MQTT messages was refused (%s): stored without payloads", len(pairs), exc)
            self.counters.add(errors=len(pairs))
            return [(p, facts_only(p, item, str(exc))) for p, item in pairs]
        raise exc

    def _store(self, entries: list[Pending], give_up: bool = False) -> bool:
        """Append the batch, then acknowledge it. Failures follow the bridges' retry policy
        (:mod:`streamlog.bridges.retry`): while the database is unreachable the append is
        retried with backoff (nothing acknowledged); a dropped stream, or anything else
        retrying cannot fix, stops the bridge and is raised (nothing acknowledged: the
        broker keeps the batch). Returns False when it gave up (stopping while the
        database fails)."""
        pairs: list[tuple[Pending, dict]] = []
        batch_keys: set[bytes] = set()
        for p in entries:
            key = self._recent.key(p.item) if self.id_field else None
            if key is not None and (key in self._recent or key in batch_keys):
                with self._cond:
                    self.duplicates += 1
                continue
            if key is not None:
                batch_keys.add(key)
            pairs.append((p, p.item))

        try:
            stored = append_retrying(self, self.stream.name, pairs,
                                     lambda batch: self.stream.extend([item for _, item in batch]), self._repair,
                                     what="MQTT messages", give_up=lambda: give_up or self.stopping)
        except Exception:
            self.stop()  # a quiet disconnect: the broker keeps the batch, unacknowledged
            raise
        if stored is None:
            log.error("could not store %d MQTT messages on stopping; not acknowledged: the broker keeps them for "
                      "the next run", len(pairs))
            return False
        pairs = stored
        done = time.monotonic()
        if pairs:
            self.counters.lag = done - min(p.arrived for p, _ in pairs)
            self.counters.add(stored=len(pairs))
        for key in batch_keys:
            self._recent.remember(key)
        self._ack(entries)
        return True

    # -- running -------------------------------------------------------------------------

    def serve(self) -> None:
        mqtt = paho_client()
        self._recent.rebuild(self.stream)
        client = new_client(self.target, self.client_id, self.protocol, clean_session=False)
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
            client.connect_async(self.target.host, self.target.port, KEEPALIVE, clean_start=False,
                                 properties=properties)
        else:
            client.connect_async(self.target.host, self.target.port, KEEPALIVE)
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
