"""The test infrastructure itself works against the real parts."""

from __future__ import annotations

import os
import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.infra.mosquitto import Mosquitto


def _roundtrip(port: int, **tls: object) -> bytes:
    got: list[bytes] = []
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if tls:
        c.tls_set(**tls)  # type: ignore[arg-type]

    def on_connect(cl: mqtt.Client, *_: object) -> None:
        cl.subscribe("t/#", qos=1)

    def on_subscribe(cl: mqtt.Client, *_: object) -> None:
        cl.publish("t/x", b"hello", qos=1)

    def on_message(cl: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload)
        done.set()

    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        assert done.wait(10)
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0]


def test_broker_plain_and_tls_and_stop_by_pid(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "b", tls=True).start()
    pid = broker.pid
    assert pid is not None
    try:
        assert _roundtrip(broker.port) == b"hello"
        assert broker.ca is not None and broker.tls_port is not None
        assert _roundtrip(broker.tls_port, ca_certs=str(broker.ca.cert),
                          cert_reqs=ssl.CERT_REQUIRED) == b"hello"
    finally:
        broker.stop()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError("broker process still alive")
