"""The broker side ``firegate provision`` writes, in a real Mosquitto 2.0 run from it.

The broker's main config is Debian's shape (persistence location, log file) and includes
``mosquitto-firegate.conf`` exactly as provisioning writes it, with the password and ACL lines
of two gateways and a collector. Issue 14 part 4: with the old entries, gateway A's credentials
could connect with the collector's client id and a clean start, wiping the collector's
persistent session and the fire alarm gateway B had queued in it (B got PUBACK 0x10 "no
matching subscribers" and deleted its record). The fragment binds every client id to its user
(``use_username_as_clientid`` on the listener), and the ACL keeps each gateway in its own
channels. The unbound variants show the loss, so this test fails with the old entries.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from firegate.provision import (
    BrokerPaths,
    Provisioned,
    broker_config,
    load_site,
    provision,
    provision_collector,
)
from protocols.wire import (
    Bus,
    Event,
    EventType,
    Measurement,
    Quantity,
    Source,
    collector_subscriptions,
    decode_batch,
    encode_batches,
)

from .helpers import ProvisionedBroker

WAIT = 30.0
NOW = 1_718_000_000_000
SITE = """
[site]
id = "sh-pd-017"

[uplink]
url = "mqtts://localhost:{port}"
ca_file = "{ca_file}"
"""
BIND = "use_username_as_clientid true"


class Client:
    """A paho MQTT v5 client: CONNACK, PUBACK and SUBACK reason codes, messages received."""

    def __init__(self, broker: ProvisionedBroker, user: str, password: str, client_id: str, *,
                 clean_start: bool = True, expiry: int = 0) -> None:
        assert broker.ca is not None and broker.tls_port is not None
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.received: list[tuple[str, bytes]] = []
        self.session_present: bool | None = None
        self.connack: ReasonCode | None = None
        self._connected = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(user, password)
        c.tls_set(ca_certs=str(broker.ca.cert))
        c.on_connect = self._on_connect
        c.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc)
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self.subacks.__setitem__(mid, rcs)
        c.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = expiry
        self.client = c
        c.connect("localhost", broker.tls_port, clean_start=clean_start, properties=props)
        c.loop_start()
        assert self._connected.wait(WAIT), "no CONNACK"

    def _on_connect(self, _c: mqtt.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Any
                    ) -> None:
        self.connack, self.session_present = rc, flags.session_present
        self._connected.set()

    def publish(self, topic: str, payload: bytes = b"{}") -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT)
        return self.acks[info.mid]

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        _, mid = self.client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        assert mid is not None
        wait(lambda: mid in self.subacks, "SUBACK")
        return self.subacks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def fire_batch(gateway: str, seq: int) -> bytes:
    smoke = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="smoke detector 3F")
    return encode_batches(gateway, "sh-pd-017", NOW, [
        Event(source=smoke, type=EventType.FIRE_ALARM, receive_ms=NOW, seq=seq)])[0]


def reading(gateway: str, seq: int) -> bytes:
    src = Source("modbus/bus1/3/pressure", Bus.MODBUS)
    return encode_batches(gateway, "sh-pd-017", NOW, [Measurement(
        source=src, quantity=Quantity.PRESSURE, value=0.3, receive_ms=NOW, unit="MPa",
        seq=seq)])[0]


Site = tuple[ProvisionedBroker, Provisioned, Provisioned, Provisioned]


@contextlib.contextmanager
def _broker(tmp_path: Path, variant: str) -> Iterator[Site]:
    broker = ProvisionedBroker(tmp_path / "broker", tls=True)
    assert broker.ca is not None and broker.tls_port is not None
    site_file = tmp_path / "site.toml"
    site_file.write_text(SITE.format(port=broker.tls_port, ca_file=broker.ca.cert), "utf-8")
    site = load_site(site_file)
    paths = BrokerPaths(password_file=str(broker.passwd_file), acl_file=str(broker.acl_file),
                        certfile=str(broker.server_cert.cert),
                        keyfile=str(broker.server_cert.key), bind="127.0.0.1")
    a, b = (provision(site, "agent", gateway_id=g, broker_paths=paths)
            for g in ("pump-a", "pump-b"))
    col = provision_collector(site, broker_paths=paths)
    fragment = col.files["mosquitto-firegate.conf"][0].decode()
    assert fragment == broker_config(site, paths)  # the same for every run of the site
    assert fragment.count(BIND) == 1
    assert fragment.index(BIND) > fragment.index("\nlistener ")
    if variant == "unbound":  # the broker as it was: no binding at all
        fragment = fragment.replace(BIND, "")
    elif variant == "before the listener":  # looks bound, binds nothing (measured, 2.0.11)
        fragment = fragment.replace(BIND, "").replace("per_listener_settings false",
                                                      f"per_listener_settings false\n{BIND}")
    broker.fragment = fragment
    broker.passwd_lines = [p.passwd_line for p in (a, b, col)]
    broker.acl = "".join("\n".join(p.acl) + "\n\n" for p in (a, b, col))
    broker.start()
    try:
        yield broker, a, b, col
    finally:
        broker.stop()


@pytest.fixture
def provisioned(tmp_path: Path) -> Iterator[Site]:
    with _broker(tmp_path, "provisioned") as site:
        yield site


def _collector(broker: ProvisionedBroker, col: Provisioned) -> Client:
    """The collector as collector/ingest.py connects: its user, client id = user name,
    persistent session, its subscriptions (shared records, health, cmd/ack; plain status)."""
    c = col.credentials
    client = Client(broker, c.username, c.password, c.username, clean_start=False, expiry=3600)
    granted = client.subscribe(*(s.filter for s in collector_subscriptions("firegate")))
    assert [r.value for r in granted] == [1, 1, 1, 1], granted
    return client


@pytest.mark.parametrize("variant", ["provisioned", "unbound", "before the listener"])
def test_a_gateway_cannot_take_the_collectors_session(tmp_path: Path, variant: str) -> None:
    with _broker(tmp_path, variant) as (broker, a, b, col):
        collector = _collector(broker, col)
        collector.close()  # away (a restart, a deploy): its session keeps what comes meanwhile
        # Gateway A's credentials, the collector's client id, a clean start.
        thief = Client(broker, a.credentials.username, a.credentials.password,
                       col.credentials.username, clean_start=True)
        assert thief.connack is not None and not thief.connack.is_failure
        thief.close()
        gw_b = Client(broker, b.credentials.username, b.credentials.password, "pump-b")
        fire_ack = gw_b.publish("firegate/v1/pump-b/records", fire_batch("pump-b", 1))
        collector = Client(broker, col.credentials.username, col.credentials.password,
                           col.credentials.username, clean_start=False, expiry=3600)
        collector.subscribe(*(s.filter for s in collector_subscriptions("firegate")))
        # a marker published now arrives after whatever the session still held
        assert not gw_b.publish("firegate/v1/pump-b/records", reading("pump-b", 2)).is_failure
        wait(lambda: any(decode_batch(p).records[-1].seq == 2 for _, p in collector.received),
             "the marker")
        seqs = [r.seq for _, p in collector.received for r in decode_batch(p).records]
        gw_b.close()
        collector.close()
        if variant == "provisioned":
            assert fire_ack.value == 0  # queued in the collector's session
            assert collector.session_present is True
            assert seqs == [1, 2]  # the fire alarm was kept for the collector and delivered
            log = broker.log.read_text()
            assert f"as pump-a (p5, c1, k60, u'{a.credentials.username}')" in log
        else:
            # the old entries: the session is gone, B's PUBACK says nobody subscribed (an
            # agent deleted its record on it), and the fire alarm never reaches the collector
            assert (fire_ack.value, fire_ack.getName()) == (0x10, "No matching subscribers")
            assert collector.session_present is False
            assert seqs == [2]


def test_gateways_and_the_collector_write_only_their_own_channels(provisioned: Site) -> None:
    broker, a, _, col = provisioned
    ca, cc = a.credentials, col.credentials
    collector = _collector(broker, col)
    gw = Client(broker, ca.username, ca.password, "ignored-the-broker-uses-the-user-name")
    try:
        assert gw.subscribe("firegate/v1/pump-a/cmd", "firegate/v1/pump-a/stored",
                            "firegate/v1/pump-b/stored")[0].value == 1
        for channel in ("records", "status", "health", "cmd/ack"):
            assert not gw.publish(f"firegate/v1/pump-a/{channel}").is_failure, channel
        for channel in ("stored", "cmd"):  # the collector's to write
            assert not collector.publish(f"firegate/v1/pump-a/{channel}").is_failure
            assert not collector.publish(f"firegate/v1/pump-b/{channel}").is_failure
        wait(lambda: len(gw.received) == 2, "pump-a's cmd and stored")
        assert sorted(t for t, _ in gw.received) == ["firegate/v1/pump-a/cmd",
                                                     "firegate/v1/pump-a/stored"]
        # a collector's credentials cannot forge a gateway's records (Mosquitto 2.0.11 then
        # drops the connection, so each refusal is the last act of its client)
        refused = collector.publish("firegate/v1/pump-a/records", reading("pump-a", 9))
        assert refused.value == 0x87 and refused.getName() == "Not authorized"
    finally:
        collector.close()
        gw.close()
    for topic in ("firegate/v1/pump-b/records", "firegate/v1/pump-a/stored",
                  "firegate/v1/pump-a/cmd"):
        gw = Client(broker, ca.username, ca.password, ca.username)
        try:
            refused = gw.publish(topic, reading("pump-b", 9))
            assert refused.value == 0x87, (topic, refused)
        finally:
            gw.close()
    wrong = Client(broker, cc.username, cc.password + "x", cc.username)
    try:
        assert wrong.connack is not None and wrong.connack.is_failure
    finally:
        wrong.close()
