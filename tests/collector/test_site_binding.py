"""A gateway speaks only for its own site (issue 14, part 5): a batch from gateway X saying
``"site": "victim"`` must not turn that site red. Real Mosquitto, real collector, SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import ConfigError, parse_config
from collector.deadletter import DeadLetters
from protocols.wire import (
    Bus,
    Event,
    EventType,
    GatewayState,
    Status,
    encode_batches,
    encode_status,
)
from tests.infra.mosquitto import Mosquitto

from .conftest import config_data, running, stored_records, wait_until, write_config

NOW = 1_718_000_000_000
SMOKE_ID = "panel/1-1/42-0x00000102"


def fire(seq: int) -> Event:
    from protocols.wire import Source

    return Event(source=Source(SMOKE_ID, Bus.GB26875), type=EventType.FIRE_ALARM,
                 receive_ms=NOW + seq, seq=seq)


class Gateway:
    def __init__(self, port: int, gateway: str) -> None:
        self.id = gateway
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gateway,
                                  protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def records(self, site: str, seq: int) -> None:
        (payload,) = encode_batches(self.id, site, NOW, [fire(seq)])
        self.client.publish(f"firegate/v1/{self.id}/records", payload, qos=1
                            ).wait_for_publish(10)

    def status(self, site: str) -> None:
        payload = encode_status(Status(self.id, GatewayState.ONLINE, NOW, site=site))
        self.client.publish(f"firegate/v1/{self.id}/status", payload, qos=1
                            ).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _letters(path: Path) -> list[tuple[str, str, str | None]]:
    letters = DeadLetters(path)
    try:
        return sorted((d.topic, d.reason, d.path) for d in letters.recent(100))
    finally:
        letters.close()


def test_a_gateway_cannot_turn_another_site_red(mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, gateways={"sites": {"gw-listed": "site-b"}}))
    assert cfg.gateways.unknown == "bind_first"
    a, listed = Gateway(mosquitto.port, "gw-a"), Gateway(mosquitto.port, "gw-listed")
    try:
        with running(cfg) as c:
            a.records("site-a", 1)  # first site named: gw-a is bound to site-a
            a.records("victim", 2)  # ... so this is refused
            a.status("victim")
            listed.records("victim", 1)  # bound by the config
            listed.records("site-b", 2)
            wait_until(lambda: c.metrics.records_stored.value() == 2 and
                       c.metrics.site_mismatch.value() == 3, "stored and refused")
            assert c.registry.sites.get("victim") is None
            assert c.registry.sites["site-a"].colour == "red"
            assert c.registry.site_of("gw-a") == "site-a"
    finally:
        a.close()
        listed.close()
    assert {gw: sorted(seqs) for gw, seqs in stored_records(cfg.sink.sqlite_path).items()} == \
        {"gw-a": [1], "gw-listed": [2]}
    assert _letters(cfg.deadletter_path) == [
        ("firegate/v1/gw-a/records", "site_mismatch", "site"),
        ("firegate/v1/gw-a/status", "site_mismatch", "site"),
        ("firegate/v1/gw-listed/records", "site_mismatch", "site")]


def test_refuse_takes_only_listed_gateways(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sites = tmp_path / "gateway-sites.toml"
    sites.write_text('[sites]\n"gw-listed" = "site-b"\n', encoding="utf-8")
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, gateways={"unknown": "refuse",
                                                 "sites_file": str(sites)}))
    stranger, listed = Gateway(mosquitto.port, "gw-x"), Gateway(mosquitto.port, "gw-listed")
    try:
        with running(cfg) as c:
            stranger.records("site-x", 1)
            listed.records("site-b", 1)
            wait_until(lambda: c.metrics.records_stored.value() == 1 and
                       c.metrics.dead_letters.value("unknown_gateway") == 1, "sorted out")
    finally:
        stranger.close()
        listed.close()
    assert set(stored_records(cfg.sink.sqlite_path)) == {"gw-listed"}


@pytest.mark.parametrize(("section", "message"), [
    ({"unknown": "maybe"}, "gateways.unknown: must be one of 'bind_first', 'refuse', 'open'"),
    ({"sites": {"gw 1": "s"}}, "gateways.sites.gw 1: a gateway id must be"),
    ({"sites": {"gw-1": "a site"}}, "gateways.sites.gw-1: must be"),
    ({"site": {}}, "gateways.site: unknown key; allowed here: sites, sites_file, unknown"),
])
def test_bad_bindings_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"gateways": section})
    assert str(info.value).startswith(message), str(info.value)
