"""BLE driver: BTHome decoding rules on real bleak/bthome-ble types, then the real bleak
scanner over the mocked BlueZ fed by the BLE simulator.

Unit tests build bleak's ``BLEDevice``/``AdvertisementData`` directly (the real types, no
mocks) and hand them to the driver's detection callback, the entry point bleak calls. The
integration tests share one MockBluez per module (a scan round trip costs ~2 s) and give each
test its own device addresses. Nothing asserts on timing: every wait is for a condition, with
a generous limit.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from common.backoff import Backoff
from edge.config.ble import BleConfig, BleDeviceConfig, DeviceKind, ScanningMode
from edge.drivers.base import DriverContext, EmitRefused
from edge.drivers.ble import (
    SERVICE_UUID,
    BleDriver,
    BleUnavailable,
    Outcome,
    decode_advert,
    measurements_of,
)
from protocols.wire import Event, EventType, Measurement, Priority, Quantity, Record
from simulators.ble import bthome
from simulators.ble.bluez import ENV_VAR, Advert, MockBluez
from simulators.ble.bthome import ObjectId as O
from simulators.ble.runner import BluezPublisher, run_simulation
from simulators.ble.scenario import parse_scenario
from simulators.ble.sensors import Advertisement, Simulation

KEY_HEX = "231d39c1d7cc1ab1aee224cd096db932"
KEY = bytes.fromhex(KEY_HEX)
WRONG_KEY = bytes(range(16))
MAC = "A4:C1:38:00:00:01"
WAIT = 20.0


# -- helpers -----------------------------------------------------------------------------------


def raw(address: str, data: bytes | None, *, rssi: int = -60) -> tuple[BLEDevice,
                                                                        AdvertisementData]:
    """A bleak advert carrying ``data`` as 0xFCD2 service data (no service data if None)."""
    service = {} if data is None else {SERVICE_UUID: data}
    adv = AdvertisementData(local_name="sensor", manufacturer_data={}, service_data=service,
                            service_uuids=list(service), tx_power=None, rssi=rssi,
                            platform_data=())
    return BLEDevice(address, "sensor", {}), adv


def bthome_advert(objects: Sequence[tuple[O, Any]], *, address: str = MAC,
                  key: bytes | None = None, counter: int = 1, rssi: int = -60
                  ) -> tuple[BLEDevice, AdvertisementData]:
    data = bthome.encode_service_data(objects, key=key, counter=counter,
                                      mac=bthome.parse_mac(address) if key else None)
    return raw(address, data, rssi=rssi)


class Collector:
    """The real emit interface: an async function; ``fail`` makes the next calls raise."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.fail = 0

    async def __call__(self, records: Sequence[Record]) -> None:
        if self.fail:
            self.fail -= 1
            raise EmitRefused("full", "outbox full")  # what the pipeline raises
        self.records.extend(records)

    def events(self, source: str | None = None, kind: EventType | None = None) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event)
                and (source is None or r.source.id == source) and (kind is None or r.type is kind)]

    def values(self, source: str, quantity: Quantity) -> list[float]:
        return [r.value for r in self.records if isinstance(r, Measurement)
                and r.source.id == source and r.quantity is quantity]


def driver_for(*devices: BleDeviceConfig, previous: frozenset[tuple[str, str]] = frozenset(),
               **options: Any) -> tuple[BleDriver, Collector]:
    collect = Collector()
    return BleDriver(BleConfig(devices=devices, **options),
                     DriverContext(gateway_id="gw-test", emit=collect, previous=previous)
                     ), collect


async def feed(driver: BleDriver, *adverts: tuple[BLEDevice, AdvertisementData]) -> None:
    for device, adv in adverts:
        driver.on_advert(device, adv)
    await driver.process_queued()


async def wait_until(condition: Callable[[], bool], limit: float = WAIT) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), limit)


# -- decoding one advert -------------------------------------------------------------------------


def test_plaintext_advert_decodes_and_maps_pressure_to_mpa() -> None:
    decoded = decode_advert(*bthome_advert(
        [(O.PACKET_ID, 3), (O.BATTERY, 90), (O.PRESSURE, bthome.mpa_to_hpa(0.35)),
         (O.DOOR, True)]), None)
    assert decoded.outcome is Outcome.OK and decoded.problem is None
    assert (decoded.packet_id, decoded.encrypted, decoded.counter) == (3, False, None)
    assert decoded.sensors == {"battery": 90.0, "pressure": 3500.0}
    assert decoded.binary == {"door": True}
    assert sorted((q, v, u) for _, q, v, u, _ in measurements_of(decoded)) == [
        (Quantity.BATTERY, 90.0, "%"), (Quantity.PRESSURE, 0.35, "MPa")]


def test_encrypted_advert_needs_the_right_key() -> None:
    advert = bthome_advert([(O.PACKET_ID, 1), (O.TEMPERATURE, 31.5), (O.HUMIDITY, 40)],
                           key=KEY, counter=7)
    good = decode_advert(*advert, KEY)
    assert (good.outcome, good.encrypted, good.counter) == (Outcome.OK, True, 7)
    assert good.sensors == {"temperature": 31.5, "humidity": 40.0}
    wrong = decode_advert(*advert, WRONG_KEY)
    assert (wrong.outcome, wrong.problem) == (Outcome.DECRYPT_FAILED, "wrong key (MIC mismatch)")
    assert not wrong.sensors
    missing = decode_advert(*advert, None)
    assert (missing.outcome, missing.problem) == (Outcome.DECRYPT_FAILED,
                                                  "encrypted, but no key configured")


@pytest.mark.parametrize(("data", "key", "outcome", "problem"), [
    (bthome.encode_service_data([(O.DOOR, True)]), KEY, Outcome.DOWNGRADE,
     "plaintext advert from a device with a key"),
    (b"", None, Outcome.BAD_PAYLOAD, "service data of 0 byte(s)"),
    (bytes([0x20, 0x01, 0x50]), None, Outcome.BAD_PAYLOAD, "BTHome version 1, expected 2"),
    (bytes([0x40, 0x00]), None, Outcome.BAD_PAYLOAD, "object 0x00 at payload byte 0 is cut short"),
    (bytes([0x40, 0x3A, 0x00]), None, Outcome.BAD_PAYLOAD, "no BTHome objects"),
    (bytes([0x40, 0xEE, 0x01]), None, Outcome.BAD_PAYLOAD,
     "unknown object id 0xee at payload byte 0"),
    (bytes([0x41, 1, 2, 3]), KEY, Outcome.BAD_PAYLOAD, "encrypted payload too short"),
    (None, None, Outcome.NOT_BTHOME, None),
])
def test_refused_adverts_say_why(data: bytes | None, key: bytes | None, outcome: Outcome,
                                 problem: str | None) -> None:
    decoded = decode_advert(*raw(MAC, data), key)
    assert (decoded.outcome, decoded.problem) == (outcome, problem)


def test_objects_that_do_not_parse_whole_are_a_problem_but_the_rest_is_kept() -> None:
    whole = bthome.encode_service_data([(O.PACKET_ID, 9), (O.BATTERY, 80), (O.DOOR, True)])
    cut = decode_advert(*raw(MAC, whole[:-1]), None)
    assert (cut.outcome, cut.problem) == (Outcome.OK, "object 0x1a at payload byte 4 is cut short")
    assert (cut.packet_id, cut.sensors, cut.binary) == (9, {"battery": 80.0}, {})
    newer = decode_advert(*raw(MAC, whole + bytes([0xEE, 0x01])), None)
    assert newer.problem == "unknown object id 0xee at payload byte 6"
    assert newer.binary == {"door": True}


def test_mac_included_flag_is_honoured() -> None:
    objects = bthome.encode_objects([(O.PACKET_ID, 1), (O.SMOKE, True)])
    data = bytes([0x42]) + bthome.parse_mac(MAC)[::-1] + objects  # bit 1: MAC follows
    decoded = decode_advert(*raw(MAC, data), None)
    assert (decoded.outcome, decoded.problem, decoded.binary) == (Outcome.OK, None,
                                                                  {"smoke": True})


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_missing_extra_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bthome_ble", None)  # as if the package were absent
    with pytest.raises(BleUnavailable, match=r"\(bthome_ble\): install firegate\[ble\]"):
        driver_for(BleDeviceConfig(MAC))


# -- the driver's rules, fed through bleak's callback --------------------------------------------


async def test_allow_list_measurements_and_rssi() -> None:
    driver, out = driver_for(BleDeviceConfig(MAC, name="hydrant B1"))
    await feed(driver,
               bthome_advert([(O.PACKET_ID, 1), (O.BATTERY, 97), (O.PRESSURE, 1200.0)],
                             rssi=-72),
               bthome_advert([(O.PACKET_ID, 1), (O.DOOR, True)], address="A4:C1:38:00:00:99"))
    counters = driver.ctx.counters.snapshot()
    assert counters == {"adverts": 2, "ignored": 1}
    source = f"ble/{MAC}"
    assert out.values(source, Quantity.PRESSURE) == [0.12]
    assert out.values(source, Quantity.BATTERY) == [97.0]
    assert out.values(source, Quantity.RSSI) == [-72.0]
    assert {r.source.id for r in out.records} == {source}
    pressure = next(r for r in out.records if isinstance(r, Measurement)
                    and r.quantity is Quantity.PRESSURE)
    assert (pressure.unit, pressure.seq, pressure.source.description) == ("MPa", 0, "hydrant B1")
    link = driver.ctx.links.get(f"ble/{MAC}")
    assert link is not None and link.state.value == "up"


async def test_door_and_smoke_raise_and_restore_once_per_change() -> None:
    driver, out = driver_for(BleDeviceConfig(MAC))
    states = [(False, False), (True, False), (True, True), (True, True), (False, False)]
    await feed(driver, *(bthome_advert([(O.PACKET_ID, i), (O.DOOR, door), (O.SMOKE, smoke)])
                         for i, (door, smoke) in enumerate(states)))
    door = out.events(f"ble/{MAC}", EventType.DOOR_OPEN)
    assert [(e.active, e.priority, e.detail) for e in door] == [
        (True, Priority.ALARM, "door"), (False, Priority.ALARM, None)]
    fire = out.events(f"ble/{MAC}", EventType.FIRE_ALARM)
    assert [(e.active, e.priority) for e in fire] == [(True, Priority.FIRE),
                                                     (False, Priority.FIRE)]


async def test_objects_of_one_event_type_are_ored() -> None:
    driver, out = driver_for(BleDeviceConfig(MAC))
    steps = [(O.SMOKE, True), (O.TAMPER, True), (O.SMOKE, False), (O.TAMPER, False)]
    await feed(driver, *(bthome_advert([(O.PACKET_ID, i), step]) for i, step in enumerate(steps)))
    assert [(e.type, e.active) for e in out.events()] == [
        (EventType.FIRE_ALARM, True), (EventType.SUPERVISORY, True),
        (EventType.FIRE_ALARM, False), (EventType.SUPERVISORY, False)]
    # Two objects mapped to one type (door + opening): raised while either is on.
    driver, out = driver_for(BleDeviceConfig(MAC))
    pairs = [(True, False), (True, True), (False, True), (False, False)]
    await feed(driver, *(bthome_advert([(O.PACKET_ID, i), (O.OPENING, a), (O.DOOR, b)])
                         for i, (a, b) in enumerate(pairs)))
    assert [(e.active, e.detail) for e in out.events()] == [(True, "opening"), (False, None)]


async def test_duplicates_are_dropped_but_prove_the_device_is_alive() -> None:
    driver, out = driver_for(BleDeviceConfig(MAC))
    first = bthome_advert([(O.PACKET_ID, 5), (O.BATTERY, 99)])
    await feed(driver, first, first, bthome_advert([(O.PACKET_ID, 5), (O.BATTERY, 98)]))
    assert driver.ctx.counters.get("duplicate") == 1
    # Same packet id, other objects: a device breaking the rule loses nothing.
    assert out.values(f"ble/{MAC}", Quantity.BATTERY) == [99.0, 98.0]


async def test_keys_decrypt_wrong_keys_count_and_replays_are_refused() -> None:
    other = "A4:C1:38:00:00:02"
    driver, out = driver_for(BleDeviceConfig(MAC, key=KEY), BleDeviceConfig(other, key=WRONG_KEY))
    def sealed(counter: int, address: str = MAC) -> tuple[BLEDevice, AdvertisementData]:
        return bthome_advert([(O.PACKET_ID, counter % 256), (O.PRESSURE, 4200.0)],
                             address=address, key=KEY, counter=counter)
    await feed(driver, sealed(200), sealed(150), sealed(201), sealed(3), sealed(7, other),
               raw(MAC, bthome.encode_service_data([(O.PRESSURE, 100.0)])))
    counters = driver.ctx.counters
    assert (counters.get("replay"), counters.get("decrypt_failed"),
            counters.get("downgrade")) == (1, 1, 1)
    # 200 and 201 in order; 150 is a replay; 3 is a restart (below 100) and is accepted.
    assert out.values(f"ble/{MAC}", Quantity.PRESSURE) == [0.42, 0.42, 0.42]
    assert not [r for r in out.records if r.source.id == f"ble/{other}"]
    link = driver.ctx.links.get(f"ble/{other}")
    assert link is None or link.state.value == "down"  # a wrong key is not "heard"


async def test_callpoint_press_is_a_fire_alarm() -> None:
    plain = "A4:C1:38:00:00:02"
    driver, out = driver_for(BleDeviceConfig(MAC, kind=DeviceKind.CALLPOINT),
                             BleDeviceConfig(plain))
    for address in (MAC, plain):
        press = bthome_advert([(O.PACKET_ID, 2), (O.BUTTON, 1)], address=address)
        await feed(driver, bthome_advert([(O.PACKET_ID, 1), (O.BUTTON, 0)], address=address),
                   press, press)  # the press, repeated on air: one alarm
    assert [(e.source.id, e.type, e.active, e.priority, e.detail) for e in out.events()] == [
        (f"ble/{MAC}", EventType.FIRE_ALARM, True, Priority.FIRE, "manual call point: press")]


async def test_failed_emit_is_counted_and_the_state_change_retried() -> None:
    driver, out = driver_for(BleDeviceConfig(MAC))
    out.fail = 1
    await feed(driver, bthome_advert([(O.PACKET_ID, 1), (O.BATTERY, 90), (O.DOOR, True)]))
    assert driver.ctx.counters.get("emit_failed") == 3  # door_open, battery, rssi
    assert out.records == []
    await feed(driver, bthome_advert([(O.PACKET_ID, 2), (O.BATTERY, 90), (O.DOOR, True)]))
    assert [(e.type, e.active) for e in out.events()] == [(EventType.DOOR_OPEN, True)]


async def test_after_a_restart_the_first_authentic_advert_restores_what_cleared() -> None:
    door, smoke, keyed = "A4:C1:38:00:00:0A", "A4:C1:38:00:00:0B", "A4:C1:38:00:00:0C"
    previous = frozenset({(f"ble/{door}", "door_open"), (f"ble/{door}", "sensor_offline"),
                          (f"ble/{smoke}", "fire_alarm"), (f"ble/{keyed}", "door_open"),
                          (f"ble/{door}/2", "fault")})  # not a source of this driver
    driver, out = driver_for(BleDeviceConfig(door), BleDeviceConfig(smoke),
                             BleDeviceConfig(keyed, key=KEY), previous=previous)
    await feed(driver,
               bthome_advert([(O.PACKET_ID, 1), (O.DOOR, False)], address=door),
               bthome_advert([(O.PACKET_ID, 2), (O.DOOR, False)], address=door),
               bthome_advert([(O.PACKET_ID, 1), (O.SMOKE, True)], address=smoke),  # still on
               bthome_advert([(O.PACKET_ID, 1), (O.DOOR, False)], address=keyed, key=WRONG_KEY,
                             counter=5))  # not authentic: proves nothing
    assert [(e.source.id, e.type, e.active) for e in out.events()] == [
        (f"ble/{door}", EventType.SENSOR_OFFLINE, False),
        (f"ble/{door}", EventType.DOOR_OPEN, False)]
    await feed(driver,
               bthome_advert([(O.PACKET_ID, 2), (O.SMOKE, False)], address=smoke),
               bthome_advert([(O.PACKET_ID, 1), (O.DOOR, False)], address=keyed, key=KEY,
                             counter=6),
               bthome_advert([(O.PACKET_ID, 3), (O.DOOR, True)], address=door))
    assert [(e.source.id, e.type, e.active) for e in out.events()][2:] == [
        (f"ble/{smoke}", EventType.FIRE_ALARM, False),
        (f"ble/{keyed}", EventType.DOOR_OPEN, False),
        (f"ble/{door}", EventType.DOOR_OPEN, True)]  # from here on, plain diffs
    assert driver.ctx.counters.get("decrypt_failed") == 1


# -- the real scanner over the mocked BlueZ ------------------------------------------------------


@pytest.fixture(scope="module")
def bluez() -> Iterator[MockBluez]:
    """One mocked BlueZ for the module; each test has its own event loop, hence its own bleak
    manager, so sharing the bus needs no reset."""
    with MockBluez() as mock, pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VAR, mock.address)
        yield mock


async def start(driver: BleDriver) -> asyncio.Task[None]:
    task = asyncio.create_task(driver.run(), name="ble-driver")
    await wait_until(lambda: driver.scanning or task.done())
    assert not task.done(), task
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


DOOR, SMOKE, HYDRANT, CABLE, SPRINKLER, WRONG, STRANGER, ROOF = (
    f"A4:C1:38:00:01:0{i}" for i in range(1, 9))
SCENARIO = parse_scenario({"ble": {
    "sensors": [
        {"address": DOOR, "kind": "door", "name": "stair-2F", "interval": 0.5},
        {"address": SMOKE, "kind": "smoke", "interval": 0.5, "battery": 80},
        {"address": HYDRANT, "kind": "pressure", "interval": 0.5, "value": 0.35, "rssi": -72},
        {"address": CABLE, "kind": "temperature", "interval": 0.5, "value": 31.5,
         "humidity": 40},
        {"address": SPRINKLER, "kind": "pressure", "interval": 0.5, "value": 0.42,
         "key": KEY_HEX},
        {"address": WRONG, "kind": "pressure", "interval": 0.5, "key": KEY_HEX},
        {"address": STRANGER, "kind": "door", "interval": 0.5},
        {"address": ROOF, "kind": "door", "name": "roof-door", "interval": 0.25},
    ],
    "events": [
        {"at": 1.0, "sensor": "stair-2F", "action": "open"},
        {"at": 1.0, "sensor": SMOKE, "action": "smoke"},
        {"at": 1.0, "sensor": "roof-door", "action": "silence"},
        {"at": 1.5, "sensor": HYDRANT, "action": "set", "value": 0.12},
        {"at": 3.0, "sensor": "stair-2F", "action": "close"},
        {"at": 3.0, "sensor": SMOKE, "action": "clear"},
        {"at": 6.0, "sensor": "roof-door", "action": "resume"},
    ],
}})


async def test_scenario_arrives_as_records(bluez: MockBluez) -> None:
    devices = [BleDeviceConfig(a, expected_interval_s=0.5, offline_after_s=30.0)
               for a in (DOOR, SMOKE, HYDRANT, CABLE)]
    devices += [BleDeviceConfig(SPRINKLER, key=KEY, expected_interval_s=0.5, offline_after_s=30),
                BleDeviceConfig(WRONG, key=WRONG_KEY, expected_interval_s=0.5,
                                offline_after_s=30),
                BleDeviceConfig(ROOF, name="roof door", expected_interval_s=0.25,
                                offline_after_s=2.0)]
    driver, out = driver_for(*devices)
    published: list[Advertisement] = []
    publisher = BluezPublisher(bluez)

    def publish(advert: Advertisement) -> None:
        publisher(advert)
        published.append(advert)

    task = await start(driver)
    try:
        await run_simulation(Simulation(SCENARIO.sensors, SCENARIO.events), publish, speed=1,
                             until=6.5)
        counters = driver.ctx.counters
        await wait_until(lambda: counters.get("adverts") >= len(published)
                         and len(out.events(f"ble/{ROOF}", EventType.SENSOR_OFFLINE)) == 2)
        # A packet heard twice (a repeat on air) is dropped as a duplicate.
        last = next(a for a in reversed(published) if a.address == HYDRANT)
        bluez.advertise(HYDRANT, Advert(last.rssi, last.service_data, {}))
        await wait_until(lambda: counters.get("duplicate") == 1)
        await driver.process_queued()
    finally:
        await stop(task)

    def sent(address: str) -> int:
        return sum(a.address == address for a in published)

    assert counters.get("adverts") == len(published) + 1
    assert counters.get("ignored") == sent(STRANGER) > 0
    assert counters.get("decrypt_failed") == sent(WRONG) > 0
    assert all(counters.get(reason) == 0 for reason in ("bad_payload", "emit_failed", "replay"))
    # Values as the scenario set them; pressure in MPa; RSSI from the advert.
    hydrant = out.values(f"ble/{HYDRANT}", Quantity.PRESSURE)
    assert hydrant[0] == 0.35 and hydrant[-1] == 0.12 and len(hydrant) == sent(HYDRANT)
    assert set(out.values(f"ble/{HYDRANT}", Quantity.RSSI)) == {-72.0}
    assert set(out.values(f"ble/{SMOKE}", Quantity.BATTERY)) == {80.0}
    assert set(out.values(f"ble/{CABLE}", Quantity.TEMPERATURE)) == {31.5}
    assert set(out.values(f"ble/{CABLE}", Quantity.HUMIDITY)) == {40.0}
    assert set(out.values(f"ble/{SPRINKLER}", Quantity.PRESSURE)) == {0.42}
    assert not [r for r in out.records if r.source.id in (f"ble/{WRONG}", f"ble/{STRANGER}")]
    # Door and smoke: one raise and one restore each.
    assert [e.active for e in out.events(f"ble/{DOOR}", EventType.DOOR_OPEN)] == [True, False]
    fire = out.events(f"ble/{SMOKE}", EventType.FIRE_ALARM)
    assert [(e.active, e.priority) for e in fire] == [(True, Priority.FIRE),
                                                     (False, Priority.FIRE)]
    # The silenced roof door: offline once, restored when it came back; nobody else offline.
    offline = out.events(kind=EventType.SENSOR_OFFLINE)
    assert [(e.source.id, e.active) for e in offline] == [(f"ble/{ROOF}", True),
                                                          (f"ble/{ROOF}", False)]
    assert offline[0].source.description == "roof door"
    links = driver.ctx.links
    assert [links.get(f"ble/{a}").state.value for a in (ROOF, DOOR, WRONG)] == [  # type: ignore[union-attr]
        "up", "up", "down"]
    assert not out.events(kind=EventType.LINK_FAULT)


async def test_after_a_restart_scanner_and_devices_restore_and_raise_nothing_twice(
        bluez: MockBluez) -> None:
    door, smoke, gone, control = (f"A4:C1:38:00:04:0{i}" for i in range(1, 5))
    previous = frozenset({(f"ble/{bluez.adapter}", "link_fault"),
                          (f"ble/{door}", "door_open"), (f"ble/{smoke}", "fire_alarm"),
                          (f"ble/{gone}", "sensor_offline")})
    # door and smoke advertise once: a long offline_after_s keeps them from going offline
    # while the test waits for the control's (a loaded machine once took over a second).
    driver, out = driver_for(*(BleDeviceConfig(a, expected_interval_s=0.5, offline_after_s=1.0)
                               for a in (gone, control)),
                             *(BleDeviceConfig(a, expected_interval_s=0.5, offline_after_s=60.0)
                               for a in (door, smoke)), previous=previous)

    def heard(address: str) -> bool:
        return bool(out.values(f"ble/{address}", Quantity.RSSI))

    task = await start(driver)
    try:
        for address, kind, obj, on in ((door, "door", O.DOOR, False),
                                       (smoke, "smoke", O.SMOKE, True)):
            data = bthome.encode_service_data([(O.PACKET_ID, 1), (obj, on)])
            bluez.add_device(address, kind, Advert(-60, {SERVICE_UUID: data}, {}))
        await wait_until(lambda: heard(door) and heard(smoke))
        # The control device, silent and without previous conditions, goes offline; the
        # same check passes over the silent device that was offline before the restart.
        await wait_until(lambda: bool(out.events(f"ble/{control}", EventType.SENSOR_OFFLINE)))
    finally:
        await stop(task)
    assert [(e.source.id, e.type, e.active) for e in out.events()
            if e.source.id != f"ble/{control}"] == [
        (f"ble/{bluez.adapter}", EventType.LINK_FAULT, False),
        (f"ble/{door}", EventType.DOOR_OPEN, False)]
    link = driver.ctx.links.get(f"ble/{gone}")
    assert link is not None and link.state.value == "down"


def _bluez_mock(bluez: MockBluez) -> Any:
    import dbus
    import dbus.bus

    conn = dbus.bus.BusConnection(bluez.address)
    return dbus.Interface(conn.get_object("org.bluez", "/"), "org.bluez.Mock")


async def test_adapter_removed_link_down_restarts_with_backoff_and_recovers(
        bluez: MockBluez) -> None:
    address = "A4:C1:38:00:02:01"
    driver, out = driver_for(
        BleDeviceConfig(address, expected_interval_s=0.5, offline_after_s=1.0),
        # Active here (the other tests scan passively): both of bleak's BlueZ paths are run.
        scanning_mode=ScanningMode.ACTIVE,
        watchdog_s=0.1, restart_backoff_s=0.1, restart_backoff_max_s=0.4)
    counters, links = driver.ctx.counters, driver.ctx.links
    mock = _bluez_mock(bluez)

    def advertise(packet_id: int) -> None:
        data = bthome.encode_service_data([(O.PACKET_ID, packet_id), (O.DOOR, False)])
        if bluez.has_device(address):
            bluez.advertise(address, Advert(-60, {SERVICE_UUID: data}, {}))
        else:
            bluez.add_device(address, "door", Advert(-60, {SERVICE_UUID: data}, {}))

    task = await start(driver)
    try:
        advertise(1)
        await wait_until(lambda: len(out.values(f"ble/{address}", Quantity.RSSI)) == 1)
        mock.RemoveAdapter(bluez.adapter)
        await wait_until(lambda: not driver.scanning)
        # Five restarts wait at least 0.1 + 0.2 + 0.4 + 0.4 + 0.4 s: longer than the device's
        # offline limit, which must not fire while the silence is the scanner's fault.
        await wait_until(lambda: counters.get("scanner_restart") >= 5)
        link = links.get("ble")
        assert link is not None and link.state.value == "down"
        assert link.detail is not None and "restart in 0.4 s" in link.detail
        during_outage = list(out.records)
        mock.AddAdapter(bluez.adapter, bluez.alias)
        await wait_until(lambda: driver.scanning)
        advertise(2)
        await wait_until(lambda: len(out.values(f"ble/{address}", Quantity.RSSI)) == 2)
    finally:
        await stop(task)
    link = links.get("ble")
    assert link is not None and link.state.value == "up"
    assert not [e for e in during_outage if isinstance(e, Event)
                and e.type is EventType.SENSOR_OFFLINE]
    faults = out.events(f"ble/{bluez.adapter}", EventType.LINK_FAULT)
    assert [e.active for e in faults] == [True, False]
    assert faults[0].detail is not None and bluez.adapter in faults[0].detail


async def test_bluez_and_dbus_restart_is_survived(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole BlueZ side goes away (bluetoothd and the bus restart on a new socket)."""
    address = "A4:C1:38:00:03:01"
    data = bthome.encode_service_data([(O.PACKET_ID, 1), (O.SMOKE, False)])
    driver, out = driver_for(BleDeviceConfig(address), watchdog_s=0.1, restart_backoff_s=0.1,
                             restart_backoff_max_s=0.4)
    first, second = MockBluez(), MockBluez()
    try:
        first.start()
        monkeypatch.setenv(ENV_VAR, first.address)
        task = await start(driver)
        try:
            first.stop()
            await wait_until(lambda: not driver.scanning)
            second.start()
            os.environ[ENV_VAR] = second.address  # where the restarted BlueZ listens now
            await wait_until(lambda: driver.scanning)
            second.add_device(address, "smoke", Advert(-50, {SERVICE_UUID: data}, {}))
            await wait_until(lambda: out.values(f"ble/{address}", Quantity.RSSI) == [-50.0])
        finally:
            await stop(task)
    finally:
        first.stop()
        second.stop()
    assert driver.ctx.counters.get("scanner_restart") >= 1
    assert [e.active for e in out.events(kind=EventType.LINK_FAULT)] == [True, False]

