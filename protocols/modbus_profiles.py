"""The built-in Modbus register maps: one :class:`~protocols.registers.DeviceProfile` per
device family, as data. :mod:`protocols.registers` re-exports :data:`PROFILES` and
:func:`get_profile` (lazily: this module imports that one, not the other way round).

Model names are generic: each stands for a family of real devices with this layout, not for
one vendor's product.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from protocols.contacts import BitPoint, BitTable, ChannelBank, Meaning
from protocols.registers import (
    DataType,
    DeviceProfile,
    PointSpec,
    RegisterType,
    StatusWord,
    Unit,
    WordOrder,
)
from protocols.wire import Quantity

__all__ = ["PROFILES", "get_profile"]

# ---------------------------------------------------------------------------------------------
# Built-in profiles. Model names are generic: each stands for a family of real devices with this
# layout, not for one vendor's product. Register maps of real products differ in exactly these
# respects (table, address, type, word order, scale/offset), which is what the set exercises.
# ---------------------------------------------------------------------------------------------

_HR, _IR = RegisterType.HOLDING, RegisterType.INPUT

_PROFILES = (
    DeviceProfile(
        key="pressure-a",
        model="Hydrant pressure transmitter, type A (u16 kPa)",
        description="0-1.6 MPa piezoresistive transmitter with native Modbus RTU; pressure as an "
                    "unsigned count of kPa in holding register 0 (the common low-cost layout).",
        points=(PointSpec("pressure", Quantity.PRESSURE, Unit.MPA, _HR, 0x0000, DataType.U16,
                          minimum=0.0, maximum=1.6, scale=0.001,
                          description="pipe pressure, 1 count = 1 kPa"),),
        status_words=(StatusWord("status", _HR, 0x0001, {0: "sensor_fault", 1: "over_range"}),),
    ),
    DeviceProfile(
        key="pressure-b",
        model="Sprinkler pressure transmitter, type B (f32 kPa, little word order)",
        description="4-20 mA transmitter behind an acquisition module; the module reports kPa "
                    "as an IEEE-754 float in input registers 0-1, low word first.",
        points=(PointSpec("pressure", Quantity.PRESSURE, Unit.KPA, _IR, 0x0000, DataType.F32,
                          minimum=0.0, maximum=1600.0, word_order=WordOrder.LITTLE,
                          description="pipe pressure in kPa"),),
        status_words=(StatusWord("status", _IR, 0x0002, {0: "sensor_fault", 1: "loop_open"},
                                 description="loop_open: 4-20 mA loop below 3.6 mA"),),
    ),
    DeviceProfile(
        key="pressure-c",
        model="Pipe network pressure transmitter, type C (u32 Pa, big word order)",
        description="Transmitter reporting pascals as an unsigned 32-bit value in holding "
                    "registers 0x0100-0x0101, high word first.",
        points=(PointSpec("pressure", Quantity.PRESSURE, Unit.KPA, _HR, 0x0100, DataType.U32,
                          minimum=0.0, maximum=2500.0, scale=0.001,
                          description="pipe pressure, 1 count = 1 Pa"),),
    ),
    DeviceProfile(
        key="level",
        model="Tank level transmitter (u16 mm)",
        description="Submersible hydrostatic level transmitter for high-level fire water tanks; "
                    "level as an unsigned count of millimetres in holding register 2.",
        points=(PointSpec("level", Quantity.LEVEL, Unit.METRE, _HR, 0x0002, DataType.U16,
                          minimum=0.0, maximum=10.0, scale=0.001,
                          description="water level above the tank floor, 1 count = 1 mm"),),
    ),
    DeviceProfile(
        key="level-cm",
        model="Fire pool level transmitter (i16 cm above the probe)",
        description="Level probe mounted 0.20 m above the pool floor; reports signed "
                    "centimetres of water above the probe in input register 0x0010.",
        points=(PointSpec("level", Quantity.LEVEL, Unit.METRE, _IR, 0x0010, DataType.I16,
                          minimum=0.0, maximum=6.0, scale=0.01, offset=0.20,
                          description="water level above the pool floor; raw is cm above "
                                      "the probe, which sits 0.20 m above the floor"),),
    ),
    DeviceProfile(
        key="elec-fire",
        model="Electrical fire monitoring detector (1 residual current + 4 temperatures)",
        description="Combined detector on a distribution board: residual current in mA and four "
                    "cable temperatures in 0.1 °C in holding registers 0-4, status word in 5.",
        points=(
            PointSpec("residual_current", Quantity.RESIDUAL_CURRENT, Unit.MILLIAMPERE, _HR, 0x0000,
                      DataType.U16, minimum=0.0, maximum=1000.0,
                      description="residual (leakage) current, 1 count = 1 mA"),
            *(PointSpec(f"temperature_{n}", Quantity.TEMPERATURE, Unit.CELSIUS, _HR, n,
                        DataType.I16, minimum=-40.0, maximum=140.0, scale=0.1,
                        description=f"cable temperature channel {n}, 1 count = 0.1 °C")
              for n in range(1, 5)),
        ),
        status_words=(StatusWord("status", _HR, 0x0005, {
            0: "residual_current_alarm", 1: "temperature_alarm",
            8: "residual_current_fault", 9: "temperature_fault"}),),
    ),
)

# Contact modules. A generic DI module's inputs carry no meaning until the installer assigns
# one per channel (``channels.<n>``); the valve monitor and the pump controller come wired.
_DI = BitTable.DISCRETE_INPUT

_CONTACT_PROFILES = (
    DeviceProfile(
        key="di-8",
        model="Generic 8-channel digital input module (FC2)",
        description="Dry-contact input module; DI1..DI8 are discrete inputs 0-7, 1 = contact "
                    "closed. Assign each channel a meaning in the gateway config.",
        points=(), bank=ChannelBank(_DI, 0, 8), bit_gap=7,
    ),
    DeviceProfile(
        key="di-16",
        model="Generic 16-channel digital input module (FC2)",
        description="Dry-contact input module; DI1..DI16 are discrete inputs 0-15, 1 = contact "
                    "closed. Assign each channel a meaning in the gateway config.",
        points=(), bank=ChannelBank(_DI, 0, 16), bit_gap=15,
    ),
    DeviceProfile(
        key="valve-4",
        model="Supply valve position monitor, 4 signal valves (FC2)",
        description="Monitors the position switches of four signal valves (信号阀) of the fire "
                    "water supply; discrete inputs 0-3, 1 = valve fully open.",
        points=(),
        bit_points=tuple(BitPoint(f"valve_{n}", Meaning.VALVE, _DI, n - 1, channel=n,
                                  description=f"valve {n}") for n in range(1, 5)),
        bit_gap=3,
    ),
    DeviceProfile(
        key="fire-pump",
        model="Fire pump controller (pressures + run / fault / auto contacts in a register)",
        description="Fire pump control cabinet with Modbus RTU: outlet and suction pressure in "
                    "kPa in holding registers 0-1, status bits in holding register 2 (bit 0 "
                    "running, bit 1 fault, bit 2 auto: 1 = auto, so manual reads inverted).",
        points=(
            PointSpec("outlet_pressure", Quantity.PRESSURE, Unit.KPA, _HR, 0x0000, DataType.U16,
                      minimum=0.0, maximum=2500.0, description="pump outlet pressure, kPa"),
            PointSpec("inlet_pressure", Quantity.PRESSURE, Unit.KPA, _HR, 0x0001, DataType.I16,
                      minimum=-100.0, maximum=1000.0,
                      description="pump suction pressure, kPa (negative: suction lift)"),
        ),
        bit_points=(
            BitPoint("run", Meaning.RUN, _HR, 0x0002, bit=0, channel=1,
                     description="run"),
            BitPoint("fault", Meaning.FAULT, _HR, 0x0002, bit=1, channel=2,
                     description="fault"),
            BitPoint("manual", Meaning.MANUAL, _HR, 0x0002, bit=2, invert=True, channel=3,
                     description="auto/manual"),
        ),
    ),
)

#: Built-in profiles by key.
PROFILES: Mapping[str, DeviceProfile] = MappingProxyType(
    {p.key: p for p in (*_PROFILES, *_CONTACT_PROFILES)})


def get_profile(key: str) -> DeviceProfile:
    """The built-in profile ``key``; the error lists the known keys."""
    try:
        return PROFILES[key]
    except KeyError:
        raise KeyError(f"unknown profile {key!r}; known: {', '.join(sorted(PROFILES))}") from None
