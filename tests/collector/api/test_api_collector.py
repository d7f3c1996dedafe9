"""The API inside a real collector: a fire alarm published to a real Mosquitto reaches the
stream, the sites turn red, an operator acknowledges it over HTTP, the audit shows who and
from where; and ``firegate collector run`` (``collector.app.run``) serves it as a named task
and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.app import Collector, CollectorError
from protocols.wire import (
    Bus,
    Event,
    EventType,
    GatewayState,
    Source,
    Status,
    encode_batches,
    encode_status,
)
from tests.collector.conftest import (
    WAIT,
    CollectorProcess,
    config_data,
    running,
    wait_until,
    write_config,
)
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

from .conftest import ADMIN, FIRM, OPERATOR, USERS

NOW = 1_718_000_000_000
HOSTILE = '三层东走廊感烟探测器 <img src=x onerror=alert(1)>\n"'


def http_section(port: int) -> dict[str, Any]:
    return {"listen": f"127.0.0.1:{port}", "heartbeat_s": 1.0}


def users_section() -> list[dict[str, Any]]:
    return [{"name": u.name, "token": u.token, "role": u.role, "sites": list(u.sites)}
            for u in USERS]


@pytest.fixture
def gateway(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hz-gw-1", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    yield pub
    pub.disconnect()
    pub.loop_stop()


def fire(seq: int, active: bool = True) -> bytes:
    smoke = Source("panel/1-1/42-0x00000102", Bus.GB26875, description=HOSTILE)
    event = Event(source=smoke, type=EventType.FIRE_ALARM, receive_ms=NOW + seq, seq=seq,
                  active=active)
    return encode_batches("hz-gw-1", "hz-0042", NOW, [event], epoch=1)[0]


class StreamReader:
    """A stream client on a thread: every event it receives, in order."""

    def __init__(self, url: str, token: str) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.ready = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(WAIT, read=WAIT))
        self._thread = threading.Thread(target=self._run, args=(url, token), daemon=True)
        self._thread.start()
        assert self.ready.wait(WAIT), "no hello on the stream"

    def _run(self, url: str, token: str) -> None:
        try:
            with self._client.stream("GET", url + "/api/v1/stream",
                                     headers={"Authorization": f"Bearer {token}"}) as r:
                event = ""
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        if event == "hello":
                            self.ready.set()
                        self.events.put((event, json.loads(line[6:])))
        except httpx.HTTPError:
            pass

    def next(self, kind: str) -> dict[str, Any]:
        while True:
            event, data = self.events.get(timeout=WAIT)
            if event == kind:
                return data

    def close(self) -> None:
        self._client.close()


def test_fire_alarm_through_the_collector(mosquitto: Mosquitto, tmp_path: Path,
                                          gateway: mqtt.Client) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, http=http_section(port), user=users_section()))
    with running(cfg) as c:
        assert c.api is not None
        url = c.api.url
        reader = StreamReader(url, OPERATOR)
        outsider = StreamReader(url, "fm-" + "9a8b7c6d5e4f3a2b" * 3)  # hz-* only: sees it
        try:
            api = c.snapshot(0)["api"]  # what `collector status` shows
            assert isinstance(api, dict)
            assert (api["url"], api["stream_clients"], api["stream_dropped"]) == (url, 2, 0)
            gateway.publish("firegate/v1/hz-gw-1/status", encode_status(
                Status("hz-gw-1", GatewayState.ONLINE, NOW, site="hz-0042")), qos=1)
            gateway.publish("firegate/v1/hz-gw-1/records", fire(1), qos=1).wait_for_publish(10)
            raised = reader.next("alarm")
            assert raised["what"] == "raised"
            alarm = raised["alarm"]
            assert (alarm["site"], alarm["type"], alarm["priority"]) == \
                ("hz-0042", "fire_alarm", "fire")
            assert HOSTILE in alarm["description"]  # exact text; the console escapes it
            assert outsider.next("alarm")["alarm"]["id"] == alarm["id"]
            site = reader.next("site")
            assert site["site"] == "hz-0042" and site["colour"] == "red"

            op = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {OPERATOR}"},
                              timeout=WAIT)
            listed = op.get("/api/v1/alarms", params={"state": "active"}).json()["alarms"]
            assert [a["id"] for a in listed] == [alarm["id"]]
            wait_until(lambda: any(s["id"] == "hz-0042" and s["colour"] == "red"
                                   and s["gateways_online"] == 1 and s["open_alarms"] == 1
                                   for s in op.get("/api/v1/sites").json()["sites"]),
                       "the site red with its gateway online")
            gws = op.get("/api/v1/gateways").json()["gateways"]
            assert [(g["id"], g["site"], g["state"]) for g in gws] == \
                [("hz-gw-1", "hz-0042", "online")]

            r = op.post(f"/api/v1/alarms/{alarm['id']}/ack", json={"note": "已派人核查"})
            assert r.status_code == 200, r.text
            acked = reader.next("alarm")
            assert acked["what"] == "acknowledged"
            assert acked["alarm"]["acknowledged_by"] == "duty-officer"

            # The panel clears it: the alarm is closed (acknowledged and cleared).
            gateway.publish("firegate/v1/hz-gw-1/records", fire(2, active=False),
                            qos=1).wait_for_publish(10)
            cleared = reader.next("alarm")
            assert cleared["what"] == "cleared" and cleared["alarm"]["open"] is False

            audit = httpx.get(url + "/api/v1/audit", headers={
                "Authorization": f"Bearer {ADMIN}"}).json()["audit"]
            assert [(a["user"], a["action"], a["alarm_id"], a["origin"], a["detail"])
                    for a in audit] == [("duty-officer", "acknowledge", alarm["id"],
                                         "127.0.0.1", "已派人核查")]
            op.close()
        finally:
            reader.close()
            outsider.close()
    # Closed with the collector: nothing listens any more.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json")


def test_a_site_outside_the_users_scope_never_reaches_its_stream(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, http=http_section(free_port()), user=users_section()))
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sh-gw-9", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    with running(cfg) as c:
        assert c.api is not None
        firm = StreamReader(c.api.url, FIRM)
        everyone = StreamReader(c.api.url, OPERATOR)
        try:
            smoke = Source("panel/1", Bus.GB26875, description="other city")
            for gw, site, seq in (("sh-gw-9", "sh-0009", 1), ("sh-gw-9", "sh-0009", 2)):
                event = Event(source=smoke, type=EventType.FIRE_ALARM, receive_ms=NOW, seq=seq,
                              active=seq == 1)
                pub.publish(f"firegate/v1/{gw}/records",
                            encode_batches(gw, site, NOW, [event], epoch=1)[0],
                            qos=1).wait_for_publish(10)
            # Raised and cleared (one change when both records land in one write group).
            change = everyone.next("alarm")
            while change["what"] != "cleared":
                assert change["alarm"]["site"] == "sh-0009"
                change = everyone.next("alarm")
            # A marker the firm may see: everything before it on its stream has arrived.
            marker = Event(source=smoke, type=EventType.FAULT, receive_ms=NOW, seq=1)
            pub.publish("firegate/v1/hz-gw-7/records",
                        encode_batches("hz-gw-7", "hz-0007", NOW, [marker], epoch=1)[0],
                        qos=1).wait_for_publish(10)
            seen = []
            while True:
                event, data = firm.events.get(timeout=WAIT)
                if event == "alarm" and data["alarm"]["site"] == "hz-0007":
                    break
                seen.append((event, data))
        finally:
            firm.close()
            everyone.close()
        assert [e for e, _ in seen] == ["hello"], seen  # nothing of sh-0009, alarm or site
    pub.disconnect()
    pub.loop_stop()


def test_port_in_use_stops_the_collector_at_start(mosquitto: Mosquitto,
                                                  tmp_path: Path) -> None:
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path / "c.toml", config_data(
            tmp_path / "state", mosquitto, http=http_section(port), user=users_section()))
        with pytest.raises(CollectorError, match=f"listen 127.0.0.1:{port}"):
            Collector(cfg)


def test_collector_run_serves_the_api_and_stops_on_sigterm(mosquitto: Mosquitto,
                                                           tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "c.toml"
    write_config(path, config_data(tmp_path / "state", mosquitto, http=http_section(port),
                                   user=users_section()))
    proc = CollectorProcess(path).start()
    try:
        url = f"http://127.0.0.1:{port}"
        me = httpx.get(url + "/api/v1/me", headers={"Authorization": f"Bearer {OPERATOR}"})
        assert me.json()["name"] == "duty-officer"
        reader = StreamReader(url, OPERATOR)  # an open stream must not hold up the stop
        assert proc.stop() == 0
        reader.close()
    finally:
        proc.kill()
    log = proc.log.read_text()
    assert OPERATOR not in log and OPERATOR not in "".join(proc.lines)


def test_an_unloadable_certificate_stops_the_collector_at_start(mosquitto: Mosquitto,
                                                                tmp_path: Path) -> None:
    (tmp_path / "api.crt").write_text("not a certificate\n")
    (tmp_path / "api.key").write_text("not a key\n")
    http = {**http_section(free_port()), "cert_file": str(tmp_path / "api.crt"),
            "key_file": str(tmp_path / "api.key")}
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, http=http, user=users_section()))
    with pytest.raises(CollectorError, match=r"\[http\] cert_file / key_file .*api\.crt"):
        Collector(cfg)
