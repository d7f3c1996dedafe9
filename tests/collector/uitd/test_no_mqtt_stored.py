"""A UITD's upload is confirmed on its own TCP link (图3), never by an MQTT ``stored``
message: nobody listens for one, and it cost a QoS 1 publish and PUBACK per upload (issue 16).
The positive control, in the same collector and the same run: an MQTT gateway's batch does get
its ``stored`` (docs/wire-protocol.md, "Stored"). Real Mosquitto, a real collector with the
centre on loopback, a real subscriber on every gateway's ``stored`` topic."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocols.wire import (
    Bus,
    Measurement,
    Quantity,
    Source,
    Stored,
    decode_stored,
    encode_batches,
)
from tests.collector.conftest import wait_until
from tests.infra.mosquitto import Mosquitto

from .fake_uitd import FakeUitd, fire_alarm
from .helpers import ADDRESS, GATEWAY, centre, confirm_for, events

MQTT_GW = "gw-mqtt-control"
EPOCH = 0x0123456789ABCDEF
NOW = 1_718_000_000_000
SRC = Source("modbus/bus1/3/pressure", Bus.MODBUS)


class Listener:
    """A subscriber on ``firegate/v1/+/stored``: every ``stored`` message, of any gateway."""

    def __init__(self, port: int) -> None:
        self.seen: list[tuple[str, Stored]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="stored-listener",
                        protocol=mqtt.MQTTv5)
        c.on_message = self._on_message
        c.on_subscribe = lambda *_: subscribed.set()
        c.connect("127.0.0.1", port)
        c.subscribe("firegate/v1/+/stored", 1)
        c.loop_start()
        self.client = c
        assert subscribed.wait(30)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seen.append((msg.topic, decode_stored(bytes(msg.payload))))

    def seqs(self, gateway: str) -> set[int]:
        with self._lock:
            return {s for t, st in self.seen if t == f"firegate/v1/{gateway}/stored"
                    for a, b in st.ranges for s in range(a, b + 1)}

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, _ in self.seen}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish(client: mqtt.Client, seq: int) -> None:
    reading = Measurement(source=SRC, quantity=Quantity.PRESSURE, value=0.3,
                          receive_ms=NOW + seq, unit="MPa", seq=seq)
    for payload in encode_batches(MQTT_GW, "site-m", NOW, [reading], epoch=EPOCH):
        client.publish(f"firegate/v1/{MQTT_GW}/records", payload, qos=1).wait_for_publish(10)


def test_uitd_uploads_get_no_mqtt_stored_while_mqtt_batches_do(mosquitto: Mosquitto,
                                                                 tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    listener = Listener(mosquitto.port)
    gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=MQTT_GW, protocol=mqtt.MQTTv5)
    gw.connect("127.0.0.1", mosquitto.port)
    gw.loop_start()
    try:
        with centre(tmp_path, mosquitto) as (_, ctr, _sink):
            uitd = FakeUitd(ctr.port or 0, ADDRESS)
            for i in range(3):  # interleaved, so that some land in the same write group
                raw = uitd.upload(fire_alarm(address=7 + i, second=i))
                publish(gw, i + 1)
                assert confirm_for(uitd, raw), "the UITD's upload was not confirmed"
                wait_until(lambda n=i + 1: n in listener.seqs(MQTT_GW),
                           f"the MQTT gateway's stored for seq {i + 1}")
            # Stored, confirmed on the link: the UITD's records are there ...
            assert len(events(store, "fire_alarm")) == 3
            # ... and the collector published a stored for the MQTT gateway (same client,
            # QoS 1, in order), after each UITD upload's group: had one been sent for the
            # UITD, it would have been seen before the control's
            assert listener.seqs(MQTT_GW) == {1, 2, 3}
            assert listener.seqs(GATEWAY) == set()
            assert listener.topics() == {f"firegate/v1/{MQTT_GW}/stored"}
            uitd.close()
    finally:
        gw.loop_stop()
        gw.disconnect()
        listener.close()
