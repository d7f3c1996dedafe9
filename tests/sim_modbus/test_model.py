"""The device model on a manual clock: dynamics, faults, status bits, no I/O."""

from __future__ import annotations

import pytest

from protocols.registers import get_profile
from simulators.modbus.model import (
    Action,
    Approach,
    BusModel,
    DeviceModel,
    ManualClock,
    Ramp,
    ScaledClock,
    Signal,
    TimelineEvent,
)


def bus_of(*devices: DeviceModel, events: tuple[TimelineEvent, ...] = ()
           ) -> tuple[BusModel, ManualClock]:
    clock = ManualClock()
    return BusModel(devices, events, clock), clock


def device(dev_id: int, profile: str, **initial: float) -> DeviceModel:
    return DeviceModel(dev_id, get_profile(profile), initial=initial, noise=0.0)


def test_signal_motions() -> None:
    s = Signal(1.0)
    s.move(0.0, Ramp(0.5, 2.0))
    assert s.at(1.0) == pytest.approx(1.5)
    assert s.at(10.0) == 2.0  # stops at the limit
    s.move(10.0, Ramp(0.5, 0.0))  # the limit below: moves down at |rate|
    assert s.at(12.0) == pytest.approx(1.0)
    s.move(12.0, Approach(0.0, 2.0))
    assert s.at(14.0) == pytest.approx(1.0 / 2.718281828, rel=1e-6)
    assert s.at(5.0) == pytest.approx(1.0)  # never evaluated before its reference time


def test_hydrant_open_then_pump_then_close() -> None:
    dev = device(1, "pressure-a", pressure=0.35)
    bus, clock = bus_of(dev, events=(
        TimelineEvent(5.0, 1, Action.HYDRANT_OPEN),
        TimelineEvent(20.0, 1, Action.PUMP_START, {"to": 0.6}),
        TimelineEvent(40.0, 1, Action.PUMP_STOP),
        TimelineEvent(40.0, 1, Action.HYDRANT_CLOSE),
    ))
    clock.advance(4.0)
    bus.advance()
    assert dev.value("pressure", clock.now()) == pytest.approx(0.35)
    clock.advance(11.0)  # t=15: 10 s after opening, tau 1.5 s
    assert [e.action for e in bus.advance()] == [Action.HYDRANT_OPEN]
    assert dev.value("pressure", clock.now()) < 0.06
    clock.advance(15.0)  # t=30: pump running for 10 s
    bus.advance()
    assert dev.value("pressure", clock.now()) == pytest.approx(0.6, abs=0.02)
    clock.advance(30.0)  # t=60: everything closed and stopped: back to static
    bus.advance()
    assert dev.value("pressure", clock.now()) == pytest.approx(0.35, abs=0.01)
    assert bus.pending == 0


def test_pump_stop_with_hydrant_still_open_falls_again() -> None:
    dev = device(1, "pressure-b")
    bus, clock = bus_of(dev)
    bus.trigger(1, Action.HYDRANT_OPEN, to=0.1)
    bus.trigger(1, Action.PUMP_START)
    clock.advance(30.0)
    bus.trigger(1, Action.PUMP_STOP)
    clock.advance(30.0)
    assert dev.value("pressure", clock.now()) == pytest.approx(0.1, abs=0.001)
    assert dev.reading(clock.now()).values["pressure"] == pytest.approx(100.0, abs=1)  # kPa


def test_tank_drains_and_refills_to_its_normal_level() -> None:
    dev = device(3, "level", level=4.0)
    bus, clock = bus_of(dev)
    bus.trigger(3, Action.DRAIN, rate=0.1)
    clock.advance(10.0)
    assert dev.value("level", clock.now()) == pytest.approx(3.0)
    clock.advance(100.0)
    assert dev.value("level", clock.now()) == 0.0  # empty, not negative
    bus.trigger(3, Action.REFILL, rate=0.5)
    clock.advance(100.0)
    assert dev.value("level", clock.now()) == 4.0  # the float valve closes at the normal level


def test_leak_creep_and_overheat_raise_alarm_bits() -> None:
    dev = device(5, "elec-fire", residual_current=20.0)
    bus, clock = bus_of(dev)
    assert dev.reading(0.0).status["status"] == frozenset()
    bus.trigger(5, Action.LEAK_CREEP, rate=10.0)
    clock.advance(30.0)  # 320 mA
    reading = dev.reading(clock.now())
    assert reading.values["residual_current"] == pytest.approx(320.0)
    assert reading.status["status"] == {"residual_current_alarm"}
    bus.trigger(5, Action.OVERHEAT, point="temperature_3", rate=2.0)
    clock.advance(30.0)
    reading = dev.reading(clock.now())
    assert reading.values["temperature_3"] == pytest.approx(90.0)
    assert reading.values["temperature_1"] == pytest.approx(30.0)
    assert reading.status["status"] == {"residual_current_alarm", "temperature_alarm"}
    bus.trigger(5, Action.HOLD)
    clock.advance(30.0)
    assert dev.reading(clock.now()).values["temperature_3"] == pytest.approx(90.0)


def test_faults_and_restore() -> None:
    dev = device(1, "pressure-a")
    bus, _ = bus_of(dev)
    bus.trigger(1, Action.SILENCE)
    bus.trigger(1, Action.EXCEPTION, code=6)
    bus.trigger(1, Action.SENSOR_FAULT)
    bus.trigger(1, Action.OUT_OF_RANGE)
    assert dev.silenced and dev.exception_code == 6
    reading = dev.reading(0.0)
    assert reading.values["pressure"] == pytest.approx(1.6 + 1.5 * 1.6)
    assert reading.status["status"] == {"sensor_fault", "over_range"}
    bus.trigger(1, Action.RESTORE)
    assert not dev.silenced and dev.exception_code is None
    assert dev.reading(0.0).values["pressure"] == pytest.approx(0.35)
    assert dev.reading(0.0).status["status"] == frozenset()


def test_out_of_range_value_is_canonical_units() -> None:
    dev = device(2, "pressure-b")
    bus, _ = bus_of(dev)
    bus.trigger(2, Action.OUT_OF_RANGE, value=-0.2)  # MPa -> the kPa device reports -200
    assert dev.reading(0.0).values["pressure"] == pytest.approx(-200.0)


def test_noise_is_small_and_seeded() -> None:
    a = DeviceModel(1, get_profile("pressure-a"), noise=1.0, seed=42)
    b = DeviceModel(1, get_profile("pressure-a"), noise=1.0, seed=42)
    values = [a.reading(0.0).values["pressure"] for _ in range(200)]
    assert values == [b.reading(0.0).values["pressure"] for _ in range(200)]
    assert len(set(values)) > 1
    assert all(abs(v - 0.35) < 0.02 for v in values)


def test_events_apply_at_their_own_time_not_when_observed() -> None:
    """Reading late gives the same value as reading on time: no dependence on polling."""
    events = (TimelineEvent(1.0, 1, Action.DRAIN, {"rate": 0.1}),)
    late_bus, late_clock = bus_of(device(1, "level"), events=events)
    late_clock.advance(11.0)
    late_bus.advance()
    on_time_bus, on_time_clock = bus_of(device(1, "level"), events=events)
    for _ in range(110):
        on_time_clock.advance(0.1)
        on_time_bus.advance()
    assert late_bus.devices[1].value("level", 11.0) == pytest.approx(
        on_time_bus.devices[1].value("level", 11.0))
    assert late_bus.devices[1].value("level", 11.0) == pytest.approx(2.0)


def test_clocks() -> None:
    clock = ManualClock()
    assert clock.advance(2.5) == 2.5
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1.0)
    with pytest.raises(ValueError, match="speed"):
        ScaledClock(0.0)
    assert ScaledClock(1000.0).now() >= 0.0


def test_every_applied_event_is_reported_once() -> None:
    seen: list[TimelineEvent] = []
    bus, clock = bus_of(device(1, "level"), events=(TimelineEvent(1.0, 1, Action.DRAIN),
                                                    TimelineEvent(2.0, 1, Action.HOLD)))
    bus.on_event = seen.append
    clock.advance(1.5)
    bus.advance()
    bus.advance()
    bus.trigger(1, Action.SILENCE)
    clock.advance(1.0)
    bus.advance()
    assert [(e.at, e.action) for e in seen] == [
        (1.0, Action.DRAIN), (1.5, Action.SILENCE), (2.0, Action.HOLD)]
