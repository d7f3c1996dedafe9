"""What a publishing gateway is told by Mosquitto 2.0 about the collector's queue (measured).

Issue 14 part 4: "delivered" must mean the next durable hop has it. These tests pin down what
Mosquitto 2.0.11 answers a QoS 1 publisher, so that the edge's end-to-end acknowledgement and
docs/collector.md ("The broker") rest on observed behaviour:

* no session subscribes the topic: PUBACK 0x10 "No matching subscribers" - not a delivery;
* the collector's persistent session is away: 0x00, queued for it;
* that queue is full (``max_queued_messages``): still 0x00 for every publish, and the excess
  is dropped silently - only ``$SYS/broker/publish/messages/dropped`` and the broker log
  show it;
* a shared subscription with one member away: its round-robin share queues in its session and
  overflows the same way, although another member is online;
* after a broker restart, a session's shared subscriptions are gone until it subscribes again.
"""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.infra.mosquitto import Mosquitto

from .conftest import wait_until

TOPIC = "firegate/v1/gw-1/records"
QUEUE = 5


class Client:
    def __init__(self, broker: Mosquitto, client_id: str, *, persistent: bool = False) -> None:
        self.acks: dict[int, ReasonCode] = {}
        self.received: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self._up = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.on_connect = lambda *_: self._up.set()
        c.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc)
        c.on_subscribe = lambda *_: self.subscribed.set()
        c.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600 if persistent else 0
        c.connect("127.0.0.1", broker.port, clean_start=not persistent, properties=props)
        c.loop_start()
        assert self._up.wait(30)
        self.client = c

    def subscribe(self, topic_filter: str) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic_filter, qos=1)
        assert self.subscribed.wait(30)

    def publish(self, n: int, topic: str = TOPIC) -> list[int]:
        infos = [self.client.publish(topic, f"m{i}".encode(), qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(30)
        wait_until(lambda: all(i.mid in self.acks for i in infos), "every PUBACK")
        return [self.acks[i.mid].value for i in infos]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _broker(tmp_path: Path) -> Mosquitto:
    m = Mosquitto(tmp_path / "broker")
    m.fragment = (f"allow_anonymous true\nmax_queued_messages {QUEUE}\nsys_interval 1\n"
                  f"listener {m.port} 127.0.0.1\n")
    return m.start()


def _dropped(broker: Mosquitto, at_least: int) -> int:
    """``$SYS/broker/publish/messages/dropped`` once it reaches ``at_least``."""
    seen: list[int] = []
    spy = Client(broker, "sys-spy")
    spy.client.on_message = lambda _c, _u, m: seen.append(int(m.payload))
    spy.subscribe("$SYS/broker/publish/messages/dropped")
    try:
        wait_until(lambda: bool(seen) and seen[-1] >= at_least, "the $SYS dropped counter")
        return seen[-1]
    finally:
        spy.close()


def test_no_subscriber_is_0x10_and_a_full_queue_is_a_silent_success(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    try:
        gw = Client(broker, "gw-1")
        assert gw.publish(2) == [0x10, 0x10]  # nobody subscribed: "No matching subscribers"
        collector = Client(broker, "collector", persistent=True)
        collector.subscribe("firegate/v1/+/records")
        collector.close()  # away: its session queues QoS 1 messages, at most QUEUE of them
        assert gw.publish(QUEUE + 3) == [0x00] * (QUEUE + 3)  # all "Success", 3 dropped
        assert _dropped(broker, 3) == 3
        assert "Outgoing messages are being dropped for client collector" in \
            broker.log.read_text()
        collector = Client(broker, "collector", persistent=True)
        gw.publish(1, topic="firegate/v1/gw-1/records")  # a marker after the backlog
        wait_until(lambda: len(collector.received) == QUEUE + 1, "the backlog and the marker")
        assert [p for _, p in collector.received] == \
            [f"m{i}".encode() for i in range(QUEUE)] + [b"m0"]
        collector.close()
        gw.close()
    finally:
        broker.stop()


def test_a_shared_member_away_loses_its_share_beyond_its_queue(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    try:
        online = Client(broker, "collector-1", persistent=True)
        online.subscribe("$share/firegate/firegate/v1/+/records")
        away = Client(broker, "collector-2", persistent=True)
        away.subscribe("$share/firegate/firegate/v1/+/records")
        away.close()
        gw = Client(broker, "gw-1")
        assert gw.publish(20) == [0x00] * 20  # another member is online: success for all
        dropped = _dropped(broker, 1)
        away = Client(broker, "collector-2", persistent=True)
        wait_until(lambda: len(away.received) == QUEUE, "the away member's queue")
        wait_until(lambda: len(online.received) + len(away.received) + dropped == 20,
                   "every message accounted for")
        assert len(online.received) + len(away.received) < 20  # lost, though PUBACK 0x00
        away.close()
        online.close()
        gw.close()
    finally:
        broker.stop()


def test_after_a_broker_restart_shared_subscriptions_are_gone_until_the_collector_returns(
        tmp_path: Path) -> None:
    """Mosquitto 2.0.11 restores a persistent session and its queued messages from its store,
    and plain subscriptions, but not ``$share/...`` ones: until the collector subscribes again,
    records are answered 0x10 (and the collector sees ``session_present = 1``)."""
    broker = _broker(tmp_path)
    try:
        collector = Client(broker, "collector", persistent=True)
        collector.subscribe("$share/firegate/firegate/v1/+/records")
        collector.subscribe("firegate/v1/+/status")
        collector.close()
        gw = Client(broker, "gw-1")
        assert gw.publish(1) == [0x00]  # queued in the session
        gw.close()
        broker.restart()  # SIGTERM: the store is saved and loaded again
        gw = Client(broker, "gw-1")
        assert gw.publish(1) == [0x10]  # the shared subscription did not come back
        assert gw.publish(1, topic="firegate/v1/gw-1/status") == [0x00]  # the plain one did
        collector = Client(broker, "collector", persistent=True)
        wait_until(lambda: len(collector.received) == 2, "what was queued")
        assert sorted(t for t, _ in collector.received) == ["firegate/v1/gw-1/records",
                                                            "firegate/v1/gw-1/status"]
        collector.close()
        gw.close()
    finally:
        broker.stop()
