"""The driver's contacts against the Modbus simulator (engineer G's side of issue 17), over
Modbus TCP and RTU on a pty: two independent implementations of the same register-map model
(the simulator lays raw bits out with ``BitPoint.raw``, the driver reads them back through the
adapter's FC1/FC2 and ``DeviceProfile.decode_bits``) must agree on every contact."""

from __future__ import annotations

import pytest

from protocols.registers import Channel, Meaning, get_profile
from protocols.wire import EventType, Quantity
from simulators.modbus.model import Action
from simulators.modbus.scenario import DeviceSpec

from .test_modbus_bits import contacts
from .test_modbus_driver import bus_config, running, served, wait_until

DI8 = get_profile("di-8")
SPECS = [
    DeviceSpec(8, get_profile("valve-4"), "valves", contacts={"valve_4": "closed"}),
    DeviceSpec(9, get_profile("fire-pump"), "pump-1", {"outlet_pressure": 0.35}),
]


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_valve_monitor_and_pump_controller_as_the_simulator_serves_them(
        transport: str) -> None:
    async with served(transport, SPECS) as (bus, address):
        cfg = bus_config(address, [contacts(8, get_profile("valve-4"), name="valves"),
                                   contacts(9, get_profile("fire-pump"), name="pump-1")],
                         rtu=transport == "rtu")
        async with running(cfg) as (_driver, _ctx, sink):
            # valve 4 starts closed: raised at the first poll; the others are open
            await wait_until(lambda: sink.states("8/valve_4", EventType.VALVE_OFF_NORMAL)
                             == [True], "valve 4 off normal")
            assert [sink.states(f"8/valve_{n}", EventType.VALVE_OFF_NORMAL)
                    for n in (1, 2, 3)] == [[], [], []]
            await wait_until(lambda: bool([m for m in sink.measurements("9/manual")
                                           if m.quantity is Quantity.STATE]), "pump states")
            assert sink.events("9/run", EventType.RUNNING) == []
            bus.trigger(8, Action.VALVE_CLOSE, point="valve_2")
            bus.trigger(8, Action.VALVE_OPEN, point="valve_4")
            bus.trigger(9, Action.MANUAL)
            await wait_until(lambda: sink.states("8/valve_2", EventType.VALVE_OFF_NORMAL)
                             == [True]
                             and sink.states("8/valve_4", EventType.VALVE_OFF_NORMAL)
                             == [True, False]
                             and sink.states("9/manual", EventType.MANUAL_MODE) == [True],
                             "valve 2 closed, valve 4 reopened, the pump in manual")
            assert sink.events("8/valve_2", EventType.VALVE_OFF_NORMAL)[0].detail == \
                "channel 2: closed (normal: open)"


async def test_a_di_module_channel_assigned_in_the_gateway_matches_the_simulator() -> None:
    """The simulator's DI module knows nothing of meanings: its input is a raw contact, open
    (0) or closed (1). The gateway says DI3 is a supply valve whose switch closes when the valve
    is open (1 = open): an open circuit is a closed valve."""
    profile = DI8.with_channels({3: Channel(Meaning.VALVE, "3F riser")})
    async with served("rtu", [DeviceSpec(7, DI8, "di")]) as (bus, address), \
            running(bus_config(address, [contacts(7, profile)], rtu=True)) as (_d, _c, sink):
        await wait_until(lambda: sink.states("7/ch3", EventType.VALVE_OFF_NORMAL) == [True],
                         "DI3 open circuit: the valve is closed")
        bus.trigger(7, Action.CONTACT, point="ch3", state="closed")
        await wait_until(lambda: sink.states("7/ch3", EventType.VALVE_OFF_NORMAL)
                         == [True, False], "DI3 closed circuit: the valve is open")
        assert [m.value for m in sink.measurements("7/ch3")
                if m.quantity is Quantity.STATE] == [0.0, 1.0]
