"""MQTT in: decode stage (pure), persistent session with manual acks against a real Mosquitto,
and a gateway speaking for another one: refused by the broker's ACL, else by the collector."""

from __future__ import annotations

import contextlib
import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import MqttConfig
from collector.ingest import Inbound, Kind, MqttIngest, prepare
from collector.lineproto import lines_for_batch, to_line
from collector.metrics import Metrics
from collector.points import Line, Point
from protocols.wire import (
    Batch,
    Bus,
    Event,
    EventType,
    GatewayState,
    Measurement,
    Quantity,
    Source,
    Status,
    WireErrorReason,
    encode_batches,
    encode_status,
)
from simulators.fleet import FleetConfig, run_fleet
from tests.infra.mosquitto import Mosquitto

from .conftest import (
    async_wait_until,
    config_data,
    running,
    stored_records,
    wait_until,
    write_config,
)

NOW = 1_718_000_000_000
SRC = Source("modbus/bus1/3/pressure", Bus.MODBUS)
PANEL = Source("panel/1-1/42-0x00000102", Bus.GB26875)
TOPIC = "firegate/v1/gw-1/records"


def inbound(topic: str, payload: bytes) -> Inbound:
    return Inbound(topic, payload, 1, 1, False, 1, NOW, time.perf_counter_ns())


def measurement(seq: int) -> Measurement:
    return Measurement(source=SRC, quantity=Quantity.PRESSURE, value=0.3, receive_ms=NOW,
                       unit="MPa", seq=seq)


# -- the decode stage ----------------------------------------------------------------------------


def test_prepare_sorts_messages_by_channel_and_flags_fire_alarms() -> None:
    batch = encode_batches("gw-1", "s-1", NOW, [measurement(1)])[0]
    item = prepare(inbound("firegate/v1/gw-1/records", batch))
    assert item.kind is Kind.BATCH and item.gateway_id == "gw-1" and not item.urgent
    assert item.points is not None and len(item.points) == 1
    fire = Event(source=PANEL, type=EventType.FIRE_ALARM, receive_ms=NOW, seq=2)
    urgent = prepare(inbound("firegate/v1/gw-1/records",
                             encode_batches("gw-1", None, NOW, [measurement(1), fire])[0]))
    assert urgent.kind is Kind.BATCH and urgent.urgent
    status = prepare(inbound("firegate/v1/gw-1/status",
                             encode_status(Status("gw-1", GatewayState.ONLINE, NOW))))
    assert status.kind is Kind.STATUS and status.status is not None
    assert prepare(inbound("firegate/v1/gw-1/status", b"")).kind is Kind.IGNORE
    ack = prepare(inbound("firegate/v1/gw-1/cmd/ack", b'{"v":1,"id":"c1","ok":true,"ts":1}'))
    assert ack.kind is Kind.ACK


def test_prepare_renders_lines_for_a_sink_that_takes_them() -> None:
    payload = encode_batches("gw-1", "s-1", NOW, [measurement(1), measurement(2)])[0]
    points = prepare(inbound("firegate/v1/gw-1/records", payload)).points
    lines = prepare(inbound("firegate/v1/gw-1/records", payload), lines_for_batch).points
    assert points is not None and lines is not None
    assert lines == [to_line(p) for p in points if isinstance(p, Point)] and len(lines) == 2


def test_a_batch_the_renderer_refuses_keeps_its_points() -> None:
    # The sink then refuses the write and the writer dead-letters the message (as for any
    # point the store refuses); the decode thread never dies on it.
    def refuse(batch: Batch) -> list[Line]:
        raise ValueError("no line-protocol form")

    payload = encode_batches("gw-1", "s-1", NOW, [measurement(1)])[0]
    item = prepare(inbound("firegate/v1/gw-1/records", payload), refuse)
    assert item.kind is Kind.BATCH and item.points is not None
    assert [p.__class__ for p in item.points] == [Point]


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("firegate/v2/gw-1/records", b"{}", WireErrorReason.UNSUPPORTED_VERSION),
    ("elsewhere/gw-1/records", b"{}", WireErrorReason.BAD_TOPIC),
    ("firegate/v1/gw-1/nonsense", b"{}", WireErrorReason.BAD_TOPIC),
    ("firegate/v1/gw-2/records", None, WireErrorReason.GATEWAY_MISMATCH),
    ("firegate/v1/gw-2/status", b'{"v":1,"gw":"gw-1","state":"online","ts":1}',
     WireErrorReason.GATEWAY_MISMATCH),
    ("firegate/v1/gw-1/health", b'{"v":1,"gw":"gw-1"}', WireErrorReason.MISSING_FIELD),
])
def test_prepare_rejects_with_the_reason(topic: str, payload: bytes | None,
                                         reason: WireErrorReason) -> None:
    if payload is None:
        payload = encode_batches("gw-1", None, NOW, [measurement(1)])[0]
    item = prepare(inbound(topic, payload))
    assert item.kind is Kind.REJECT and item.error is not None
    assert item.error.reason is reason


@settings(max_examples=300, deadline=None)
@given(channel=st.sampled_from(["records", "status", "health", "cmd/ack", "cmd"]),
       payload=st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_prepare_never_raises(channel: str, payload: bytes) -> None:
    item = prepare(inbound(f"firegate/v1/gw-1/{channel}", payload))
    assert prepare(inbound(f"firegate/v1/gw-1/{channel}", payload), lines_for_batch).kind \
        is item.kind
    if item.kind is Kind.REJECT:
        assert item.error is not None and item.error.reason in WireErrorReason
    else:
        assert item.kind in (Kind.BATCH, Kind.STATUS, Kind.HEALTH, Kind.ACK, Kind.IGNORE)


# -- the persistent session ----------------------------------------------------------------------


def _ingest(port: int, inbox: queue.Queue[Inbound]) -> MqttIngest:
    cfg = MqttConfig(port=port, client_id="ingest-test", share_group=None, receive_maximum=5,
                     reconnect_min_s=1, reconnect_max_s=1)
    ingest = MqttIngest(cfg, inbox, Metrics())
    ingest.start()
    wait_until(ingest.subscribed.is_set, "subscribed")
    return ingest


def _drain(inbox: queue.Queue[Inbound], n: int) -> list[Inbound]:
    got: list[Inbound] = []
    deadline = time.monotonic() + 20
    while len(got) < n:
        assert time.monotonic() < deadline, f"got {len(got)} of {n}"
        with contextlib.suppress(queue.Empty):
            got.append(inbox.get(timeout=0.1))
    return got


def _nothing_before_a_marker(pub: mqtt.Client, inbox: queue.Queue[Inbound], name: str) -> None:
    """Prove that nothing more came, without waiting a while and looking. A QoS 0 message is
    outside the receive maximum (MQTT 5.0 §4.9: only QoS 1 and 2 count), so the broker sends
    it at once while it holds QoS 1 messages back; it was published after them, so had the
    broker been willing to send any of them, they would be in the inbox before it."""
    pub.publish(TOPIC, f"marker-{name}".encode(), qos=0).wait_for_publish(10)
    (got,) = _drain(inbox, 1)
    assert (got.payload, got.qos) == (f"marker-{name}".encode(), 0), got.payload
    assert inbox.empty()


def test_unacknowledged_messages_come_again_acknowledged_ones_do_not(
        mosquitto: Mosquitto) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    inbox: queue.Queue[Inbound] = queue.Queue()
    ingest = _ingest(mosquitto.port, inbox)
    topic = TOPIC
    for i in range(8):
        pub.publish(topic, f"m{i}".encode(), qos=1).wait_for_publish(10)
    # Receive maximum 5: the broker holds the rest until acks free the window.
    first = _drain(inbox, 5)
    _nothing_before_a_marker(pub, inbox, "held")
    assert ingest.ack(first[:3]) == 3
    more = _drain(inbox, 3)
    assert [m.payload for m in first + more] == [f"m{i}".encode() for i in range(8)]
    ingest.close()  # m3..m7 never acknowledged
    for i in range(8, 10):  # published while the collector is away: kept in its session
        pub.publish(topic, f"m{i}".encode(), qos=1).wait_for_publish(10)
    ingest = _ingest(mosquitto.port, inbox)
    again = _drain(inbox, 5)  # the unacknowledged ones first, in order; the window is full
    assert [m.payload for m in again] == [f"m{i}".encode() for i in range(3, 8)]
    # A message from the previous connection can no longer be acknowledged: its packet id
    # may be reused by now; its redelivered copy is the one to ack.
    assert ingest.ack(first[3:5]) == 0 and ingest.metrics.stale_acks.value() == 2
    _nothing_before_a_marker(pub, inbox, "window full")  # m8, m9 still held
    assert ingest.ack(again) == 5
    later = _drain(inbox, 2)
    assert [m.payload for m in later] == [b"m8", b"m9"]
    assert ingest.ack(later) == 2
    ingest.close()  # must flush the two acks before it disconnects
    ingest = _ingest(mosquitto.port, inbox)
    # Everything acknowledged: nothing comes a third time. The session delivers in order, so
    # a message published now arrives after anything the broker still held for us.
    pub.publish(topic, b"marker", qos=1).wait_for_publish(10)
    assert [m.payload for m in _drain(inbox, 1)] == [b"marker"]
    ingest.close()
    pub.disconnect()
    pub.loop_stop()


# -- a gateway speaking for another --------------------------------------------------------------


def _gateway_client(broker: Mosquitto, user: str, password: str) -> mqtt.Client:
    assert broker.ca is not None and broker.tls_port is not None
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(broker.ca.cert))
    c.username_pw_set(user, password)
    c.connect("127.0.0.1", broker.tls_port)
    c.loop_start()
    return c


async def test_tls_credentials_and_acl_refuse_a_gateway_speaking_for_another(
        tmp_path: Path) -> None:
    users = {"collector": "c-secret", "fleet-00001": "pw-1", "fleet-00002": "pw-2",
             "marker-1": "pw-m"}
    acl = ("user collector\ntopic read firegate/v1/#\ntopic write firegate/v1/+/stored\n\n"
           "pattern write firegate/v1/%u/#\npattern read firegate/v1/%u/stored\n")
    with Mosquitto(tmp_path / "broker", users=users, acl=acl, tls=True) as broker:
        assert broker.ca is not None
        (tmp_path / "pw").write_text("c-secret\n")
        cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", mqtt={
            "url": f"mqtts://127.0.0.1:{broker.tls_port}", "ca_file": str(broker.ca.cert),
            "username": "collector", "password_file": str(tmp_path / "pw")}))
        with running(cfg) as c:
            report = await run_fleet(FleetConfig(
                broker=f"mqtts://127.0.0.1:{broker.tls_port}", ca=broker.ca.cert, gateways=2,
                records=400, rate=200, batch_interval=0.1, username="{gateway}",
                password="pw-{index}", seed=2))
            assert report.ok, report.to_json()["errors"]
            # fleet-00001 publishes a batch claiming to be fleet-00002, on its topic.
            rogue = _gateway_client(broker, "fleet-00001", "pw-1")
            spoof = encode_batches("fleet-00002", None, NOW, [measurement(10_000)])[0]
            info = rogue.publish("firegate/v1/fleet-00002/records", spoof, qos=1)
            info.wait_for_publish(10)  # the broker has decided on it: PUBACK received
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
            rogue.loop_stop()
            # Positive control: a gateway's own batch published after that decision. Had the
            # broker passed the spoof on, it would reach the collector first (one session,
            # delivered in order; one decoder and one writer thread), so once the marker is
            # stored, the spoof would be too.
            marker = _gateway_client(broker, "marker-1", "pw-m")
            marker.publish("firegate/v1/marker-1/records", encode_batches(
                "marker-1", None, NOW, [measurement(1)])[0], qos=1).wait_for_publish(10)
            marker.loop_stop()
            await async_wait_until(lambda: c.metrics.records_stored.value() >= 401,
                                   "the fleet's records and the marker stored")
            assert c.metrics.records_stored.value() == 401
        assert "Denied PUBLISH from fleet-00001" in broker.log.read_text()
        stored = stored_records(cfg.sink.sqlite_path)
        assert stored["marker-1"] == {1: 1}
        assert 10_000 not in stored["fleet-00002"]


async def test_without_an_acl_the_collector_refuses_it(mosquitto: Mosquitto,
                                                        tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", mosquitto))
    with running(cfg) as c:
        rogue = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-a", protocol=mqtt.MQTTv5)
        rogue.connect("127.0.0.1", mosquitto.port)
        rogue.loop_start()
        # Its own records under another gateway's topic, and another's id under its own.
        for topic, gw in (("firegate/v1/gw-b/records", "gw-a"),
                          ("firegate/v1/gw-a/records", "gw-b")):
            rogue.publish(topic, encode_batches(gw, None, NOW, [measurement(5)])[0],
                          qos=1).wait_for_publish(10)
        await async_wait_until(
            lambda: c.metrics.dead_letters.value("gateway_mismatch") == 2, "dead letters")
        rogue.disconnect()
        rogue.loop_stop()
        assert c.metrics.records_stored.value() == 0
    assert stored_records(cfg.sink.sqlite_path) == {}
