"""MQTT in: a persistent MQTT 5 session with manual acknowledgement, and the decode stage.

:class:`MqttIngest` owns the paho client (its network loop runs on paho's own thread). The
session is persistent - fixed client id, ``clean_start=False``, a session expiry - so while the
collector is down, or busy, the broker keeps what it has not acknowledged. paho is created with
``manual_ack=True``: ``on_message`` only copies the message into a bounded queue and returns,
and the PUBACK goes out later through :meth:`MqttIngest.ack`, once the pipeline has stored the
message (or dead-lettered it). A crash at any instant therefore loses nothing: the broker
redelivers every message that was not acknowledged, and the (gateway, seq) ledger drops what
had been stored already.

The broker should send at most ``receive_maximum`` unacknowledged QoS 1 messages (MQTT 5.0
§3.1.2.11.3, §4.9 flow control). The queue is at least twice that, and bounded anyway: a broker
that overshoots (Mosquitto 2.0.11 does while a backlog is acknowledged, mosquitto#2301) makes
paho's thread wait in ``on_message`` - TCP pushes back and the broker keeps the rest.

Acknowledgements are sent in the order the messages were received: MQTT 5.0 §4.6
[MQTT-4.6.0-2] asks it of a client (Mosquitto and EMQX accept any order; the pipeline keeps it
anyway). A packet identifier is only meaningful on the connection it arrived on: after a
reconnect the broker resends the unacknowledged messages, possibly with the same identifiers,
and may reuse a freed identifier for a new message. Each message therefore carries the
*generation* of its connection, and an ack for an older generation is not sent (the broker has
redelivered that message; it is acknowledged when its redelivered copy is handled).

:class:`Decoder` is the second thread: topic, strict decode, gateway check, points. Its output
(:class:`Prepared`) goes to the pipeline's writer in arrival order.
"""

from __future__ import annotations

import itertools
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.config import MqttConfig
from collector.metrics import Metrics
from collector.points import Storable, points_for_batch
from collector.session import SessionWatch
from protocols.wire import (
    MAX_PAYLOAD_BYTES,
    Batch,
    Channel,
    CommandAck,
    Health,
    Priority,
    RecordFault,
    Status,
    WireError,
    check_gateway,
    collector_subscriptions,
    decode_ack,
    decode_batch_partial,
    decode_health,
    decode_status,
    parse_topic,
)

__all__ = ["MAX_PACKET_BYTES", "Decoder", "Inbound", "Kind", "MqttIngest", "Prepared", "prepare"]

log = logging.getLogger("firegate.collector.ingest")
POLL_S = 0.2  # how often blocked queue operations look at the stop flag
CLOSE_FLUSH_S = 5.0
"""On close, the longest wait for the DISCONNECT (and the acks queued before it) to leave."""
# Connection generations are unique in the process (not per client object), so an item can
# never be mistaken for one of a later connection, whichever client received it.
_GENERATIONS = itertools.count(1)
FIRE = Priority.FIRE
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 4096
"""The Maximum Packet Size the collector announces in its CONNECT (MQTT 5.0 §3.1.2.11.4): the
contract's largest payload plus room for the fixed header, the topic (at most 84 bytes) and
properties. The broker must not send a larger packet: it discards it for this client and
acts as if it were delivered [MQTT-3.1.2-25], so a 16 MiB publish never reaches the
collector's memory. Set the broker's ``message_size_limit`` to ``MAX_PAYLOAD_BYTES`` so that
such a publish is refused to the gateway instead (docs/collector.md, "The broker")."""


@dataclass(slots=True)
class Inbound:
    """One received MQTT message, not yet acknowledged."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    generation: int
    received_ms: int
    """Wall clock at receipt (ms); stored with LWT statuses."""
    received_ns: int
    """``time.perf_counter_ns()`` at receipt, for latency figures."""
    confirm_over_mqtt: ClassVar[bool] = True
    """Whether the sender learns over MQTT what was stored (``stored``,
    :class:`collector.confirm.Confirmer`). False for items that did not come over MQTT
    (collector/uitd: a UITD is confirmed on its own TCP link, and nobody listens for it)."""


class Kind(Enum):
    BATCH = "records"
    STATUS = "status"
    HEALTH = "health"
    ACK = "cmd/ack"
    REJECT = "reject"
    IGNORE = "ignore"


@dataclass(slots=True)
class Prepared:
    """A decoded message on its way to the writer."""

    inbound: Inbound
    kind: Kind
    gateway_id: str | None = None
    batch: Batch | None = None
    points: Sequence[Storable] | None = None
    """One per record, in order: Points, or Lines when the sink renders lines."""
    status: Status | None = None
    health: Health | None = None
    error: WireError | None = None
    faults: tuple[RecordFault, ...] = ()
    """Records of a batch that did not decode: dead-lettered one by one, the rest stored."""
    epoch: int = 0
    """The sender's store epoch (a batch's or a health message's ``ep``)."""
    ack: CommandAck | None = None
    """A gateway's answer to a command (``cmd/ack``), e.g. to a ``resend`` request."""
    urgent: bool = False
    """Carries a fire alarm: the writer flushes its group at once."""


def prepare(inbound: Inbound,
            render: Callable[[Batch], Sequence[Storable]] = points_for_batch) -> Prepared:
    """Topic, strict decode, gateway check and points for one message; never raises.

    ``render`` makes a batch's points: :func:`~collector.points.points_for_batch`, or
    :func:`~collector.lineproto.lines_for_batch` for a sink that takes lines. A record the
    renderer refuses (no line-protocol form) leaves the message with Points: the sink then
    refuses that write, and the writer narrows it down and dead-letters the message as
    for any other point the store refuses.

    Anything refused comes back as ``Kind.REJECT`` with the :class:`WireError` (reason and
    path); the writer dead-letters it and acknowledges it, since redelivering the same bytes
    cannot make them valid.
    """
    try:
        gateway_id, channel = parse_topic(inbound.topic)
        if channel is Channel.RECORDS:
            partial = decode_batch_partial(inbound.payload)
            check_gateway(gateway_id, partial)
            batch = partial.batch
            if batch is None:  # not one valid record: each is dead-lettered on its own
                return Prepared(inbound, Kind.BATCH, gateway_id, faults=partial.faults,
                                epoch=partial.epoch)
            # Fire-class records (GB 26875.1 §4.1.2.3: fire alarms pre-empt everything).
            urgent = any(r.priority is FIRE for r in batch.records)
            points: Sequence[Storable]
            try:
                points = render(batch)
            except ValueError:
                points = points_for_batch(batch)
            return Prepared(inbound, Kind.BATCH, gateway_id, batch=batch, points=points,
                            faults=partial.faults, epoch=partial.epoch, urgent=urgent)
        if channel is Channel.STATUS:
            if not inbound.payload:
                # An empty retained message deletes the retained status (decommissioning a
                # gateway): nothing to store, nothing wrong.
                return Prepared(inbound, Kind.IGNORE, gateway_id)
            status = decode_status(inbound.payload)
            check_gateway(gateway_id, status)
            return Prepared(inbound, Kind.STATUS, gateway_id, status=status)
        if channel is Channel.HEALTH:
            health = decode_health(inbound.payload)
            check_gateway(gateway_id, health)
            return Prepared(inbound, Kind.HEALTH, gateway_id, health=health, epoch=health.epoch)
        if channel is Channel.CMD_ACK:
            ack = decode_ack(inbound.payload)  # answers to the collector's own commands
            return Prepared(inbound, Kind.ACK, gateway_id, ack=ack)
        return Prepared(inbound, Kind.IGNORE, gateway_id)  # cmd: the collector's own echo
    except WireError as e:
        return Prepared(inbound, Kind.REJECT, error=e)


class Decoder:
    """The decode thread: ``inbox`` (from paho) to ``outbox`` (to the writer), in order."""

    def __init__(self, inbox: queue.Queue[Inbound], outbox: queue.Queue[Prepared],
                 metrics: Metrics,
                 render: Callable[[Batch], Sequence[Storable]] = points_for_batch) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.metrics = metrics
        self.render = render
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                inbound = self.inbox.get(timeout=POLL_S)
            except queue.Empty:
                continue
            item = prepare(inbound, self.render)
            self.metrics.messages.inc(item.kind.value)
            if item.batch is not None:
                self.metrics.records_in.inc(n=len(item.batch.records))
            while not self.stop.is_set():
                try:
                    self.outbox.put(item, timeout=POLL_S)
                    break
                except queue.Full:
                    continue


class MqttIngest:
    """The paho client: connect, subscribe, hand messages over, acknowledge in order."""

    def __init__(self, config: MqttConfig, inbox: queue.Queue[Inbound], metrics: Metrics, *,
                 session_marker: Path | None = None) -> None:
        self.config = config
        self.inbox = inbox
        self.metrics = metrics
        self.session = SessionWatch(config.url, config.client_id, session_marker, metrics)
        """Whether the broker still had the session (``session_marker``: the state directory's
        ``mqtt-session.json``; None: reconnects of this process only)."""
        self._lock = threading.Lock()  # generation + connection state vs. acks
        self._generation = 0
        self._connected = False
        self._stopping = threading.Event()
        self._gone = threading.Event()  # disconnected after close(): the DISCONNECT is out
        self.subscribed = threading.Event()
        self.connected_since: float | None = None
        """``time.monotonic()`` of the last successful CONNACK."""
        self.last_error: str | None = None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if config.tls:
            client.tls_set(ca_certs=None if config.ca_file is None else str(config.ca_file),
                           certfile=None if config.cert_file is None else str(config.cert_file),
                           keyfile=None if config.key_file is None else str(config.key_file),
                           cert_reqs=ssl.CERT_REQUIRED)
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        """Connect in paho's thread (``connect_async``: DNS and TCP never block the caller);
        paho reconnects with back-off on its own after any loss."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        props.MaximumPacketSize = MAX_PACKET_BYTES
        self.client.connect_async(self.config.host, self.config.port,
                                  keepalive=self.config.keepalive_s, clean_start=False,
                                  properties=props)
        self.client.loop_start()

    def close(self) -> None:
        """Disconnect cleanly; the session (and every unacknowledged message) stays on the
        broker for ``session_expiry_s``."""
        self._stopping.set()
        # paho's loop_stop() ends the network thread at its next turn, written or not: the
        # PUBACKs queued just before (and the DISCONNECT) could be dropped, and the broker
        # would deliver those messages again. Wait until the DISCONNECT is out: packets leave
        # in order, so every ack queued before it has left too.
        if self.client.disconnect() == mqtt.MQTT_ERR_SUCCESS:
            self._gone.wait(CLOSE_FLUSH_S)
        self.client.loop_stop()

    def ack(self, items: Sequence[Inbound]) -> int:
        """PUBACK ``items`` (in the given order, which is arrival order). Messages from an
        earlier connection are skipped (see the module docstring). Returns how many were sent.
        """
        sent = skipped = 0
        with self._lock:
            generation, connected = self._generation, self._connected
            for item in items:
                if item.qos == 0:
                    continue
                if item.generation != generation or not connected:
                    skipped += 1
                    continue
                self.client.ack(item.mid, item.qos)
                sent += 1
        if sent:
            self.metrics.acks.inc(n=sent)
        if skipped:
            self.metrics.stale_acks.inc(n=skipped)
        return sent

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish with QoS 1 (a ``stored`` confirmation, a command to a gateway); False
        when not connected (nothing queued: a confirmation or a request not sent is made up
        for by the gateway's resend or the next request)."""
        if not self._connected:
            return False
        info = self.client.publish(topic, payload, qos=1)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def is_current(self, item: Inbound) -> bool:
        """Whether ``item`` can still be acknowledged (arrived on the live connection)."""
        return item.generation == self._generation and self._connected

    # -- paho callbacks (paho's thread) ------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode,
                    _p: Any) -> None:
        if reason.is_failure:
            self.last_error = f"connect refused: {reason}"
            log.error("broker %s refused the connection: %s", self.config.url, reason)
            return
        with self._lock:
            self._generation = next(_GENERATIONS)
            self._connected = True
        self.connected_since = time.monotonic()
        self.metrics.connected.set(1)
        log.info("connected to %s as %s (session present: %s)", self.config.url,
                 self.config.client_id, flags.session_present)
        # An expected session that is gone is an alarm (collector/session.py says why).
        self.session.connack(bool(flags.session_present), time.time_ns() // 1_000_000)
        # Subscribing again on every connect is harmless (same filters, same options) and
        # repairs a session the broker expired or lost; the retained statuses come again.
        subs = collector_subscriptions(self.config.share_group)
        client.subscribe([(s.filter, SubscribeOptions(qos=s.qos)) for s in subs])

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode],
                      _p: Any) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            self.last_error = f"subscription refused: {', '.join(refused)}"
            log.error("broker refused subscriptions: %s", refused)
            return
        self.subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode,
                       _p: Any) -> None:
        with self._lock:
            self._generation = next(_GENERATIONS)
            self._connected = False
        self.subscribed.clear()
        self.metrics.connected.set(0)
        if self._stopping.is_set():
            self._gone.set()
        else:
            self.last_error = f"disconnected: {reason}"
            log.warning("disconnected from %s: %s; reconnecting", self.config.url, reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = repr(msg._topic)[:200]  # still dead-lettered (bad_topic), and acked
        item = Inbound(topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain),
                       self._generation, time.time_ns() // 1_000_000, time.perf_counter_ns())
        while True:
            try:
                self.inbox.put(item, timeout=POLL_S)
                return
            except queue.Full:
                if self._stopping.is_set():
                    return  # not acknowledged: the broker keeps it
