"""A gateway whose store was replaced (a new epoch: its seqs start again at 1) must not have its
first fire alarm taken for an old record of the condition. The risk board ignores a record
older (lower seq) than the last one applied to a condition; that holds within one store epoch
only (docs/wire-protocol.md, "Epochs"). First on the board, then through a real broker and an
in-process collector, read back with ``collector status --json``."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from collector.config import RiskRules, load_config
from collector.risk import Colour, Condition, RiskBoard
from firegate.cli.collector import register
from protocols.wire import Bus, Event, EventType, Measurement, Quantity, Source, encode_batches
from tests.infra.mosquitto import Mosquitto

from .conftest import config_data, running, toml, wait_until

NOW = 1_765_000_000_000
OLD, NEW = 0x1111, 0x2222
SMOKE = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
RESET_1 = Source("panel/1-1/system", Bus.GB26875)


def ev(kind: EventType, seq: int, active: bool = True, src: Source = SMOKE,
       ms: int | None = None) -> Event:
    return Event(source=src, type=kind, seq=seq, receive_ms=NOW + seq if ms is None else ms,
                 active=active)


def test_a_new_epochs_fire_alarm_is_raised_though_its_seq_is_lower() -> None:
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(EventType.FIRE_ALARM, 500, ms=NOW), OLD)
    board.apply_event("s1", "gw", ev(EventType.FIRE_ALARM, 501, False, ms=NOW + 1), OLD)
    assert board.assess("s1").colour is Colour.GREEN
    # Inside the old epoch an older record is still ignored ...
    assert not board.apply_event("s1", "gw", ev(EventType.FIRE_ALARM, 499, ms=NOW + 2), OLD)
    assert board.assess("s1").colour is Colour.GREEN
    # ... but the new store's seq 3 is a new record.
    assert board.apply_event("s1", "gw", ev(EventType.FIRE_ALARM, 3, ms=NOW + 3), NEW)
    assert board.assess("s1").colour is Colour.RED
    # And from then on the new epoch's seqs compare among themselves.
    assert not board.apply_event("s1", "gw", ev(EventType.FIRE_ALARM, 2, False, ms=NOW + 4),
                                 NEW)
    assert board.apply_event("s1", "gw", ev(EventType.FIRE_ALARM, 4, False, ms=NOW + 5), NEW)
    assert board.assess("s1").colour is Colour.GREEN


def test_a_water_reading_of_a_new_epoch_counts_too() -> None:
    board = RiskBoard(RiskRules(pressure_critical_mpa=0.05))
    gauge = Source("modbus/bus1/3/pressure", Bus.MODBUS)

    def reading(v: float, seq: int) -> Measurement:
        return Measurement(source=gauge, quantity=Quantity.PRESSURE, value=v, unit="MPa",
                           receive_ms=NOW + seq, seq=seq)

    board.apply_measurement("s1", "gw", reading(0.3, 900), OLD)
    assert board.apply_measurement("s1", "gw", reading(0.01, 1), NEW)
    assert board.assess("s1").colour is Colour.RED


def test_a_condition_loaded_without_its_epoch_is_only_kept_never_hidden() -> None:
    # Loaded from the registry after a restart: its epoch is not known. A new epoch's clear
    # with a lower seq is ignored (red on the safe side, until the next clear or reset) ...
    loaded = Condition("s1", "gw", SMOKE.id, "fire_alarm", NOW, 500, Colour.RED)
    board = RiskBoard(RiskRules(), [loaded])
    assert not board.apply_event("s1", "gw", ev(EventType.FIRE_ALARM, 3, False), NEW)
    assert board.assess("s1").colour is Colour.RED
    # ... and a later record of that epoch, now known, applies.
    assert board.apply_event("s1", "gw", ev(EventType.FIRE_ALARM, 501, False), NEW)
    assert board.assess("s1").colour is Colour.GREEN


def test_a_reset_in_the_same_second_from_another_epoch_keeps_the_alarm() -> None:
    # The same receive time, different stores: the seqs say nothing, so the alarm stays.
    board = RiskBoard(RiskRules())
    board.apply_event("s1", "gw", ev(EventType.FIRE_ALARM, 3, ms=NOW), NEW)
    assert not board.apply_event("s1", "gw", ev(EventType.RESET, 900, src=RESET_1, ms=NOW), OLD)
    assert board.assess("s1").colour is Colour.RED
    assert board.apply_event("s1", "gw", ev(EventType.RESET, 4, src=RESET_1, ms=NOW), NEW)
    assert board.assess("s1").colour is Colour.GREEN


def test_a_replaced_gateway_store_turns_its_site_red_through_the_collector(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    # Seqs 1..499 of the old life are never sent: no records_missing colour meanwhile.
    path.write_text(toml(config_data(tmp_path / "state", mosquitto,
                                     collector={"gap_grace_s": 3600.0})))
    root = typer.Typer()
    register(root)

    def colour() -> str | None:
        result = CliRunner().invoke(root, ["collector", "status", "--config", str(path),
                                           "--json"])
        assert result.exit_code == 0, result.output
        sites = {s["site"]: s["colour"] for s in json.loads(result.output)["sites"]}
        return sites.get("site-e")

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-e", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()

    def send(epoch: int, *records: Event) -> None:
        for payload in encode_batches("gw-e", "site-e", NOW, list(records), epoch=epoch):
            pub.publish("firegate/v1/gw-e/records", payload, qos=1).wait_for_publish(10)

    try:
        with running(load_config(path)) as c:
            send(OLD, ev(EventType.FIRE_ALARM, 500), ev(EventType.FIRE_ALARM, 501, False))
            wait_until(lambda: c.metrics.records_stored.value() == 2, "the old life stored")
            wait_until(lambda: colour() == "green", "site-e green after the restore")
            send(NEW, ev(EventType.FIRE_ALARM, 3))  # the re-flashed gateway's first alarm
            wait_until(lambda: c.metrics.records_stored.value() == 3, "the new life stored")
            wait_until(lambda: colour() == "red", "site-e red from the new store's alarm")
    finally:
        pub.loop_stop()
        pub.disconnect()
