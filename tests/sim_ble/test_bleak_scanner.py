"""End to end: the real bleak scanner on the private bus sees the simulated sensors, and
bthome-ble decodes what it sees, as the edge agent will.

No timing assertions: the simulation runs at speed 10 and the test waits (with a generous
limit) until the scanner has seen every advert that was published.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType

from simulators.ble import bthome
from simulators.ble.bluez import Advert, MockBluez
from simulators.ble.runner import BluezPublisher, run_simulation
from simulators.ble.scenario import parse_scenario
from simulators.ble.sensors import Advertisement, Simulation
from simulators.ble.testing import use_bus
from tests.sim_ble.helpers import Seen, pid_alive

KEY_HEX = "231d39c1d7cc1ab1aee224cd096db932"
KEY = bytes.fromhex(KEY_HEX)
DOOR, SMOKE, HYDRANT, CABLE, SPRINKLER, CALLPOINT, ROOF = (
    f"A4:C1:38:00:00:0{i}" for i in range(1, 8))

SCENARIO = parse_scenario({"ble": {
    "sensors": [
        {"address": DOOR, "kind": "door", "name": "stair-2F", "interval": 2},
        {"address": SMOKE, "kind": "smoke", "name": "corridor-3F", "interval": 2, "battery": 80},
        {"address": HYDRANT, "kind": "pressure", "name": "hydrant-B1", "interval": 2,
         "value": 0.35, "rssi": -72},
        {"address": CABLE, "kind": "temperature", "name": "cable-tray", "interval": 2,
         "value": 31.5, "humidity": 40},
        {"address": SPRINKLER, "kind": "pressure", "name": "sprinkler-5F", "interval": 2,
         "value": 0.42, "key": KEY_HEX},
        {"address": CALLPOINT, "kind": "callpoint", "name": "callpoint-1F", "interval": 2},
        {"address": ROOF, "kind": "door", "name": "roof-door", "interval": 1},
    ],
    "events": [
        {"at": 3, "sensor": "stair-2F", "action": "open"},
        {"at": 3, "sensor": "corridor-3F", "action": "smoke"},
        {"at": 4, "sensor": "hydrant-B1", "action": "set", "value": 0.12},
        {"at": 5, "sensor": "callpoint-1F", "action": "press"},
        {"at": 5, "sensor": "roof-door", "action": "silence"},
    ],
}})
SILENCED_AT = 5.0

# How the edge agent scans: passively, for BTHome service data (AD type 0x16, UUID 0xFCD2).
BTHOME_PATTERN = OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xd2\xfc")


async def wait_until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), limit)


async def test_passive_scanner_sees_the_scenario_and_bthome_ble_decodes_it(
        bluez: MockBluez) -> None:
    seen = Seen()
    published: list[Advertisement] = []
    publisher = BluezPublisher(bluez)

    def publish(advert: Advertisement) -> None:
        publisher(advert)
        published.append(advert)

    scanner = BleakScanner(detection_callback=seen, scanning_mode="passive",
                           bluez=BlueZScannerArgs(or_patterns=[BTHOME_PATTERN]))
    async with scanner:
        await run_simulation(Simulation(SCENARIO.sensors, SCENARIO.events), publish,
                             speed=10, until=12)
        await wait_until(lambda: len(seen.adverts) >= len(published))
    assert len(seen.adverts) == len(published)

    # Fire door: closed at first, then open.
    _, door = seen.decoded(DOOR)
    assert door[0]["door"] is False
    assert door[-1]["door"] is True
    assert {h["battery"] for h in door} == {100}

    # Smoke detector: smoke, and its configured battery.
    _, smoke = seen.decoded(SMOKE)
    assert [h["smoke"] for h in smoke][:2] == [False, False]
    assert smoke[-1]["smoke"] is True
    assert smoke[-1]["battery"] == 80

    # Hydrant pressure: MPa carried as hPa; the drop to 0.12 MPa arrives; RSSI passes through.
    _, hydrant = seen.decoded(HYDRANT)
    assert bthome.hpa_to_mpa(hydrant[0]["pressure"]) == pytest.approx(0.35)
    assert bthome.hpa_to_mpa(hydrant[-1]["pressure"]) == pytest.approx(0.12)
    assert {adv.rssi for adv in seen.of(HYDRANT)} == {-72}

    # Cable temperature and humidity.
    _, cable = seen.decoded(CABLE)
    assert cable[-1]["temperature"] == pytest.approx(31.5)
    assert cable[-1]["humidity"] == pytest.approx(40)

    # Encrypted sprinkler pressure: decoded with the key, nothing without it.
    parser, sprinkler = seen.decoded(SPRINKLER, KEY)
    assert parser.bindkey_verified is True
    assert bthome.hpa_to_mpa(sprinkler[-1]["pressure"]) == pytest.approx(0.42)
    _, blind = seen.decoded(SPRINKLER)
    assert all("pressure" not in h for h in blind)

    # Manual call point: exactly one "press" event.
    _, callpoint = seen.decoded(CALLPOINT)
    assert [h.get("event:button") for h in callpoint].count("press") == 1

    # The silenced roof door stops appearing while the others carry on.
    roof_published = [a for a in published if a.address == ROOF]
    assert roof_published and all(a.at < SILENCED_AT for a in roof_published)
    assert len(seen.of(ROOF)) == len(roof_published)
    last_roof = max(i for i, (dev, _) in enumerate(seen.adverts) if dev.address == ROOF)
    assert len(seen.adverts[last_roof + 1:]) >= 10


async def test_active_scanner_sees_rssi_service_and_manufacturer_data(bluez: MockBluez) -> None:
    seen = Seen()
    data = bthome.encode_service_data([(bthome.ObjectId.DOOR, True)])
    async with BleakScanner(detection_callback=seen):
        bluez.add_device(DOOR, "stair-2F", Advert(-60, {bthome.SERVICE_UUID: data}, {}))
        bluez.advertise(DOOR, Advert(-41, {bthome.SERVICE_UUID: data}, {0xFFFF: b"\x01\x02"}))
        await wait_until(lambda: len(seen.adverts) >= 2)
    first, second = seen.of(DOOR)
    device = seen.adverts[0][0]
    assert (device.address, device.name) == (DOOR, "stair-2F")
    assert (first.rssi, first.service_data, first.manufacturer_data) == (
        -60, {bthome.SERVICE_UUID: data}, {})
    assert (second.rssi, second.manufacturer_data) == (-41, {0xFFFF: b"\x01\x02"})


async def test_removed_device_is_dropped_by_the_scanner(bluez: MockBluez) -> None:
    data = bthome.encode_service_data([(bthome.ObjectId.SMOKE, False)])
    async with BleakScanner() as scanner:
        bluez.add_device(SMOKE, "corridor-3F", Advert(-60, {bthome.SERVICE_UUID: data}, {}))
        await wait_until(lambda: SMOKE in {d.address for d in scanner.discovered_devices})
        bluez.remove_device(SMOKE)
        await wait_until(lambda: SMOKE not in {d.address for d in scanner.discovered_devices})
    assert not bluez.has_device(SMOKE)


def test_stop_ends_the_bus_processes_by_pid() -> None:
    bluez = MockBluez()
    bluez.start()
    pids = bluez.pids
    workdir = bluez._dir
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    assert workdir is not None and workdir.exists()
    bluez.stop()
    assert not any(pid_alive(p) for p in pids)
    assert not workdir.exists()
    bluez.stop()  # idempotent


async def test_bleak_needs_a_reset_to_follow_a_new_bus_in_the_same_loop() -> None:
    """bleak keeps one BlueZ manager per event loop; ``use_bus`` makes it follow a new bus.

    (Tests with their own event loop, the pytest-asyncio default, need none of this.)
    """
    data = bthome.encode_service_data([(bthome.ObjectId.DOOR, False)])

    async def scan(bluez: MockBluez, address: str) -> set[str]:
        seen = Seen()
        async with BleakScanner(detection_callback=seen):
            bluez.add_device(address, "d", Advert(-60, {bthome.SERVICE_UUID: data}, {}))
            await wait_until(lambda: bool(seen.adverts))
        return {dev.address for dev, _ in seen.adverts}

    old_env = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    first, second, third = MockBluez(), MockBluez(), MockBluez()
    try:
        first.start()
        await use_bus(first)
        assert await scan(first, DOOR) == {DOOR}
        first.stop()  # this bus is gone: without the reset the next scan fails with EBADF
        second.start()
        await use_bus(second)
        assert await scan(second, SMOKE) == {SMOKE}
        third.start()  # the second bus still runs: without the reset bleak would stay on it
        await use_bus(third)
        assert await scan(third, HYDRANT) == {HYDRANT}
    finally:
        for bus in (first, second, third):
            bus.stop()
        if old_env is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = old_env
