"""End to end: a gateway's fire alarm over a real Mosquitto into a real collector, escalation
steps POSTed to real local webhook receivers; and a collector killed with SIGKILL after the
raise (a real subprocess) that still sends the next step on time after its restart. The ack
link in step 0 is followed through the collector's own API (collector/api/)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import CollectorConfig, load_config
from protocols.wire import Bus, Event, EventType, Record, Source, encode_batches
from tests.collector.conftest import CollectorProcess, config_data, running, wait_until
from tests.collector.test_notify import SECRET, Receiver
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

# Step 1 falls due this long after the raise: the test acknowledges one alarm before then, so
# it must cover a loaded machine's publish -> webhook -> HTTP ack (3 s left little room beside
# stress-ng); the ignored alarm's step 1 is waited for, so a longer one costs test time.
STEP_1_S = 6.0
SMOKE = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
SMOKE_2 = Source("panel/1-1/42-0x00000103", Bus.GB26875, description="三层西走廊感烟探测器")


@pytest.fixture
def duty() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def station() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def publish(broker: Mosquitto, records: Sequence[Record], gateway: str = "gw-1") -> None:
    """What a gateway does: its batch, QoS 1, on its records topic."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{gateway}-test")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for payload in encode_batches(gateway, "north-1", int(time.time() * 1000), records):
            client.publish(f"firegate/v1/{gateway}/records", payload, qos=1
                           ).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def fire(src: Source, seq: int) -> Event:
    return Event(source=src, type=EventType.FIRE_ALARM, seq=seq,
                 receive_ms=int(time.time() * 1000), source_ms=int(time.time() * 1000) - 800)


def doc(state: Path, broker: Mosquitto, duty: Receiver, station: Receiver,
        step_1_s: float, **more: Any) -> dict[str, Any]:
    return config_data(
        state, broker,
        webhook=[{"name": "duty", "url": duty.url, "secret": SECRET, "events": [],
                  "retry_min_s": 0.05, "retry_max_s": 0.5},
                 {"name": "fire-station", "url": station.url, "secret": SECRET,
                  "events": [], "retry_min_s": 0.05, "retry_max_s": 0.5}],
        escalation=[{"name": "fire", "events": ["fire_alarm"], "step": [
            {"after_s": 0, "webhooks": ["duty"]},
            {"after_s": step_1_s, "webhooks": ["fire-station"]}]}], **more)


def write_config(path: Path, data: dict[str, Any]) -> CollectorConfig:
    # tomli-w: the suite's small writer has no arrays of tables inside arrays of tables.
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return load_config(path)


def steps(r: Receiver) -> list[dict[str, Any]]:
    return [d for d in r.delivered() if d["kind"] == "alarm_escalation"]


def ack(url: str, token: str, note: str) -> dict[str, Any]:
    """What the duty officer's phone does with the link in step 0: POST it, with their token."""
    request = urllib.request.Request(url, data=json.dumps({"note": note}).encode(),
                                     method="POST", headers={
                                         "Authorization": f"Bearer {token}",
                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


def test_a_fire_alarm_escalates_until_acknowledged_through_its_link(
        tmp_path: Path, mosquitto: Mosquitto, duty: Receiver, station: Receiver) -> None:
    port, token = free_port(), "k" * 48
    config = write_config(tmp_path / "c.toml",
                          doc(tmp_path / "state", mosquitto, duty, station, step_1_s=STEP_1_S,
                              http={"listen": f"127.0.0.1:{port}",
                                    "public_url": f"http://127.0.0.1:{port}/"},
                              user=[{"name": "duty-officer", "token": token,
                                     "role": "operator"}]))
    with running(config) as c:
        publish(mosquitto, [fire(SMOKE, 1), fire(SMOKE_2, 2)])
        # Step 0 of both at once, to duty only (events = [] takes nothing else).
        wait_until(lambda: len(steps(duty)) == 2, "step 0 of both alarms")
        first = {d["alarm"]["source"]: d for d in steps(duty)}
        ignored, acked = first[SMOKE.id], first[SMOKE_2.id]
        assert {ignored["alarm_id"], acked["alarm_id"]} == {a.id for a in c.alarms.list()}
        assert (ignored["step"], ignored["policy"], ignored["key"]) == \
            (0, "fire", f"alarm:{ignored['alarm_id']}:step:0")
        assert ignored["alarm"]["description"] == "三层东走廊感烟探测器"
        assert ignored["alarm"]["type"] == "fire_alarm" and ignored["alarm"]["site"] == "north-1"
        # The link for people opens the alarm in the console, served at that address
        # (the console reads the #alarm= fragment: tests/collector/api/test_console.py).
        page = acked["url"]
        assert page == f"http://127.0.0.1:{port}/#alarm={acked['alarm_id']}"
        assert ignored["url"] == f"http://127.0.0.1:{port}/#alarm={ignored['alarm_id']}"
        with urllib.request.urlopen(page.split("#")[0], timeout=30) as console:
            assert console.status == 200 and "text/html" in console.headers["content-type"]
            assert b'src="/console/app.js"' in console.read()
        # The route for integrators acknowledges the alarm through the collector's own API.
        link = acked["ack_url"]
        assert link == f"http://127.0.0.1:{port}/api/v1/alarms/{acked['alarm_id']}/ack"
        answer = ack(link, token, "on my way")
        assert answer["acknowledged"] and answer["acknowledged_by"] == "duty-officer"
        assert answer["acknowledged_ms"] < acked["alarm"]["raised_ms"] + STEP_1_S * 1000, \
            "acknowledged before step 1 was due (else this test proves nothing)"
        # Step 1 of the unacknowledged one reaches the fire station; the acknowledged one's,
        # due at the same instant, would have been queued with it, and was not.
        wait_until(lambda: len(steps(station)) >= 1, "step 1 of the unacknowledged alarm")
        later = steps(station)
        assert [(d["alarm_id"], d["step"]) for d in later] == [(ignored["alarm_id"], 1)]
        assert later[0]["alarm"]["raised_ms"] + STEP_1_S * 1000 <= later[0]["time_ms"]
        assert c.alarms.get(acked["alarm_id"]).escalation_step == 0  # type: ignore[union-attr]
        assert [e.what for e in c.alarms.timeline(ignored["alarm_id"])] == \
            ["raised", "notified", "notified"]
        assert [e.what for e in c.alarms.timeline(acked["alarm_id"])] == \
            ["raised", "notified", "acknowledged", "escalation_stopped"]
        assert c.alarms.audit()[0].action == "acknowledge"
        assert duty.sent_keys() == [f"alarm:{d['alarm_id']}:step:0" for d in steps(duty)]


def test_a_collector_killed_after_the_raise_escalates_on_time_after_restart(
        tmp_path: Path, mosquitto: Mosquitto, duty: Receiver, station: Receiver) -> None:
    step_1_s = 8.0  # longer than a restart takes (even on a busy machine): due after it
    path = tmp_path / "c.toml"
    write_config(path, doc(tmp_path / "state", mosquitto, duty, station, step_1_s))
    proc = CollectorProcess(path).start()
    try:
        publish(mosquitto, [fire(SMOKE, 1)])
        wait_until(lambda: len(steps(duty)) == 1, "step 0")
        assert proc.kill() == -9  # SIGKILL: no shutdown, no final flush
        proc = CollectorProcess(path).start()
        [zero] = steps(duty)
        due_ms = zero["alarm"]["raised_ms"] + step_1_s * 1000
        assert time.time() * 1000 < due_ms, "restarted before step 1 was due (the test's point)"
        wait_until(lambda: len(steps(station)) == 1, "step 1 after the restart")
        [one] = steps(station)
        assert (one["alarm_id"], one["step"]) == (zero["alarm_id"], 1)
        assert one["time_ms"] >= due_ms, "not before it was due"
        assert station.arrived[0] * 1000 >= due_ms
        assert one["alarm"]["raise_count"] == 1, "the redelivery, if any, was no re-raise"
        proc.stop()
        # Nothing sent twice across the kill: step 0 once, step 1 once.
        assert [json.loads(b)["key"] for _, b in duty.requests] == [zero["key"]]
    finally:
        proc.kill()
