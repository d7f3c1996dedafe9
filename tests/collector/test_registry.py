"""The gateway registry: status, last will and heartbeats; persisted and read by another
connection; and a silent gateway going offline through a running collector."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.points import GATEWAY, RISK
from collector.registry import Registry, read_status
from protocols.wire import (
    GatewayState,
    Health,
    LinkState,
    Status,
    encode_health,
    encode_status,
    last_will,
)
from tests.infra.mosquitto import Mosquitto

from .conftest import config_data, running, stored_points, wait_until, write_config

NOW = 1_718_000_000_000


def health(gw: str, depth: int = 0) -> Health:
    return Health(gateway_id=gw, ts_ms=NOW, uptime_s=1.0, version="2.0", outbox_depth=depth,
                  last_seq=7, links={"uplink": LinkState.UP, "gb26875/com1": LinkState.DOWN},
                  evicted={"measurement": 4, "event": 1})


def test_status_will_and_heartbeats(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.sqlite")
    t = reg.on_status(Status("gw", GatewayState.ONLINE, NOW, version="1.0", site="s1"), NOW + 5)
    assert t is not None and t.online and t.previous == "unknown"
    assert reg.on_status(Status("gw", GatewayState.ONLINE, NOW), NOW + 6) is None  # retained again
    t = reg.on_status(last_will("gw", NOW), NOW + 100)
    assert t is not None and not t.online and t.reason == "lwt"
    assert t.time_ms == NOW + 100  # the will's ts is its connect time: the loss is "now"
    assert t.key == f"offline:gw:{NOW}"
    assert reg.on_status(last_will("gw", NOW), NOW + 200) is None  # the same episode again
    # Offline by its will: a late message from before the loss does not bring it back ...
    assert reg.seen("gw", None, NOW + 300) is None
    assert reg.gateways["gw"].state == "offline"
    # ... its online status does.
    t = reg.on_status(Status("gw", GatewayState.ONLINE, NOW + 400), NOW + 400)
    assert t is not None and t.online and t.previous == "offline"
    # Silent for too long: stale; any message brings it back.
    assert reg.check_stale(NOW + 1000, 1000) == []
    (t,) = reg.check_stale(NOW + 1401, 1000)
    assert (t.online, t.reason, t.key) == (False, "stale", f"offline:gw:stale:{NOW + 400}")
    assert reg.on_status(last_will("gw", NOW + 400), NOW + 1500) is None  # same episode
    assert reg.gateways["gw"].reason == "lwt"
    t = reg.on_status(Status("gw", GatewayState.ONLINE, NOW + 2000), NOW + 2000)
    assert t is not None and t.online
    (t,) = reg.check_stale(NOW + 5000, 1000)
    assert reg.on_health(health("gw", depth=12), NOW + 5001) is not None  # stale -> online
    info = reg.gateways["gw"]
    assert (info.state, info.site, info.version, info.outbox_depth) == ("online", "s1", "2.0", 12)
    assert (info.evicted, info.last_seq, info.links_down) == (5, 7, ["gb26875/com1"])
    reg.close()


def test_persisted_and_read_while_open(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    reg = Registry(path)
    reg.on_status(Status("gw-1", GatewayState.ONLINE, NOW, site="s1"), NOW)
    reg.on_health(health("gw-2"), NOW)
    reg.save_snapshot("c1", NOW, {"records_per_s": 12.5, "dead_letters": {"not_json": 1}})
    reg.flush()
    view = read_status(path)  # another connection, read-only, while the writer is open
    assert [(g.id, g.state, g.site) for g in view.gateways] == [("gw-1", "online", "s1"),
                                                               ("gw-2", "online", None)]
    assert view.snapshots == {"c1": (NOW, {"records_per_s": 12.5,
                                           "dead_letters": {"not_json": 1}})}
    reg.close()
    again = Registry(path)
    assert again.gateways["gw-2"].links_down == ["gb26875/com1"]
    again.close()
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        db.execute("DELETE FROM gateway")
        raise AssertionError("a read-only connection wrote")
    except sqlite3.OperationalError:
        pass
    finally:
        db.close()


def test_a_silent_gateway_goes_offline_and_comes_back(mosquitto: Mosquitto,
                                                      tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto,
        collector={"health_interval_s": 0.4, "offline_factor": 2.0}))
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-9", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    with running(cfg) as c:
        online = Status("gw-9", GatewayState.ONLINE, NOW, site="s9")
        pub.publish("firegate/v1/gw-9/status", encode_status(online), qos=1,
                    retain=True).wait_for_publish(10)
        wait_until(lambda: "gw-9" in c.registry.gateways and
                   c.registry.gateways["gw-9"].state == "offline", "stale")
        assert c.registry.gateways["gw-9"].reason == "stale"
        wait_until(lambda: c.registry.sites.get("s9") is not None and
                   c.registry.sites["s9"].colour == "yellow", "site yellow")
        back = dataclasses.replace(health("gw-9"), last_seq=0)  # no records announced: no gap
        pub.publish("firegate/v1/gw-9/health", encode_health(back), qos=1).wait_for_publish(10)
        wait_until(lambda: c.registry.gateways["gw-9"].state == "online" and
                   c.registry.sites["s9"].colour == "green", "back online, green")
    pub.disconnect()
    pub.loop_stop()
    states = [(p.field("state"), p.field("reason")) for p in
              sorted(stored_points(cfg.sink.sqlite_path, GATEWAY), key=lambda p: p.time_ns)]
    assert states[:2] == [("online", None), ("offline", "stale")]
    colours = [p.field("colour") for p in
               sorted(stored_points(cfg.sink.sqlite_path, RISK), key=lambda p: p.time_ns)]
    assert colours == ["yellow", "green"]
