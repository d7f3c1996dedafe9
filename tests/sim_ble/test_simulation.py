"""The pure scheduler: which adverts are due when, and what they carry (no bus involved)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from simulators.ble import bthome
from simulators.ble.runner import run_simulation
from simulators.ble.sensors import (
    Action,
    Advertisement,
    Field,
    SensorConfig,
    SensorKind,
    Simulation,
    TimelineEvent,
)
from tests.sim_ble.helpers import decode

DOOR = SensorConfig(address="A4:C1:38:00:00:01", kind=SensorKind.DOOR, name="door", interval=5)
SMOKE = SensorConfig(address="A4:C1:38:00:00:02", kind=SensorKind.SMOKE, name="smoke",
                     interval=10)
KEY = bytes(range(16))


def decoded(advert: Advertisement, key: bytes | None = None) -> dict[str, Any]:
    return decode(advert.service_data[bthome.SERVICE_UUID], address=advert.address, key=key)


def test_sensors_advertise_at_start_then_every_interval() -> None:
    sim = Simulation([DOOR, SMOKE])
    first = sim.advance(0.5)
    assert [(a.address, a.at) for a in first] == [(DOOR.address, 0.0), (SMOKE.address, 0.01)]
    assert sim.next_deadline() == 5.0
    later = sim.advance(20.0)
    assert [(a.name, a.at) for a in later] == [
        ("door", 5.0), ("door", 10.0), ("smoke", 10.01), ("door", 15.0), ("door", 20.0),
    ]


def test_adverts_come_out_in_time_order() -> None:
    sim = Simulation([DOOR, SMOKE])
    times = [a.at for a in sim.advance(60.0)]
    assert times == sorted(times)


def test_a_state_change_is_sent_at_once_and_restarts_the_interval() -> None:
    sim = Simulation([DOOR], [TimelineEvent(at=2.0, address=DOOR.address, action=Action.OPEN)])
    adverts = sim.advance(8.0)
    assert [a.at for a in adverts] == [0.0, 2.0, 7.0]
    assert [decoded(a)["door"] for a in adverts] == [False, True, True]


def test_a_repeated_state_is_not_sent_early() -> None:
    sim = Simulation([DOOR], [TimelineEvent(at=2.0, address=DOOR.address, action=Action.CLOSE)])
    assert [a.at for a in sim.advance(8.0)] == [0.0, 5.0]


def test_a_new_value_waits_for_the_next_periodic_advert() -> None:
    pressure = SensorConfig(address="A4:C1:38:00:00:03", kind=SensorKind.PRESSURE, name="p",
                            interval=5)
    sim = Simulation([pressure], [
        TimelineEvent(at=1.0, address=pressure.address, action=Action.SET, value=0.12),
        TimelineEvent(at=1.0, address=pressure.address, action=Action.SET, value=20,
                      field=Field.BATTERY),
    ])
    adverts = sim.advance(5.0)
    assert [a.at for a in adverts] == [0.0, 5.0]
    first, second = (decoded(a) for a in adverts)
    assert bthome.hpa_to_mpa(first["pressure"]) == pytest.approx(0.35)
    assert bthome.hpa_to_mpa(second["pressure"]) == pytest.approx(0.12)
    assert second["battery"] == 20


def test_silence_stops_adverts_until_resume() -> None:
    sim = Simulation([DOOR, SMOKE], [
        TimelineEvent(at=6.0, address=DOOR.address, action=Action.SILENCE),
        TimelineEvent(at=23.0, address=DOOR.address, action=Action.RESUME),
    ])
    door_times = [a.at for a in sim.advance(30.0) if a.address == DOOR.address]
    assert door_times == [0.0, 5.0, 23.0, 28.0]


def test_a_silenced_sensor_does_not_send_its_state_changes() -> None:
    sim = Simulation([DOOR], [
        TimelineEvent(at=1.0, address=DOOR.address, action=Action.SILENCE),
        TimelineEvent(at=2.0, address=DOOR.address, action=Action.OPEN),
        TimelineEvent(at=3.0, address=DOOR.address, action=Action.RESUME),
    ])
    adverts = sim.advance(3.0)
    assert [a.at for a in adverts] == [0.0, 3.0]
    assert decoded(adverts[-1])["door"] is True


def test_nothing_left_to_do() -> None:
    sim = Simulation([DOOR], [TimelineEvent(at=1.0, address=DOOR.address, action=Action.SILENCE)])
    sim.advance(1.0)
    assert sim.next_deadline() is None


def test_button_press_is_sent_once() -> None:
    callpoint = SensorConfig(address="A4:C1:38:00:00:04", kind=SensorKind.CALLPOINT,
                             name="cp", interval=5)
    sim = Simulation([callpoint],
                     [TimelineEvent(at=1.0, address=callpoint.address, action=Action.PRESS)])
    events = [decoded(a).get("event:button") for a in sim.advance(11.0)]
    assert events == [None, "press", None, None]


def test_packet_id_and_counter_step_and_encrypted_adverts_decrypt() -> None:
    sensor = SensorConfig(address="A4:C1:38:00:00:05", kind=SensorKind.SMOKE, name="s",
                          interval=1, key=KEY)
    adverts = Simulation([sensor]).advance(3.0)
    data = [a.service_data[bthome.SERVICE_UUID] for a in adverts]
    assert [int.from_bytes(d[-8:-4], "little") for d in data] == [1, 2, 3, 4]
    assert [decoded(a, KEY)["packet_id"] for a in adverts] == [1, 2, 3, 4]
    assert all(decoded(a).get("smoke") is None for a in adverts)  # no key, no values


def test_a_long_step_sends_every_slot() -> None:
    sim = Simulation([DOOR])
    sim.advance(0.0)
    assert [a.at for a in sim.advance(17.0)] == [5.0, 10.0, 15.0]
    assert sim.next_deadline() == 20.0


async def test_run_simulation_scales_time() -> None:
    sim = Simulation([SensorConfig(address="A4:C1:38:00:00:01", kind=SensorKind.DOOR,
                                   name="d", interval=10)])
    got: list[Advertisement] = []
    # 30 simulated seconds at speed 300 take 0.1 s of wall time.
    await asyncio.wait_for(run_simulation(sim, got.append, speed=300, until=30), timeout=10)
    assert [a.at for a in got] == [0.0, 10.0, 20.0, 30.0]


async def test_run_simulation_rejects_a_bad_speed() -> None:
    with pytest.raises(ValueError, match="speed"):
        await run_simulation(Simulation([DOOR]), lambda a: None, speed=0)
