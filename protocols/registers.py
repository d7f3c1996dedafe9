"""Modbus device register maps: what a field device keeps in which register, as data.

One model serves three readers: the Modbus simulator (``simulators/modbus``) serves these maps, the
edge gateway's Modbus driver reads them, and the firmware shares the same tables. A
:class:`PointSpec` says where one measured value lives (register type, 0-based protocol address,
data type, word order) and how the raw number becomes a physical one (``physical = raw * scale +
offset``) with its plausible range. A :class:`StatusWord` names the bits of one status register.
A :class:`BitPoint` is a two-state contact (a supply valve's position switch, a pump's run
feedback) read as a coil (FC1), a discrete input (FC2) or one bit of a register, with its
:class:`Meaning`, wiring (``invert``) and normal state (defined in :mod:`protocols.contacts`,
re-exported here); docs/modbus-contacts.md is its design.
A :class:`DeviceProfile` is a device model's whole map; :data:`PROFILES` holds the built-in ones
(data in :mod:`protocols.modbus_profiles`, re-exported here).
What a point measures is the wire contract's :class:`~protocols.wire.Quantity` (a point's
measurements are wire records); register maps carry the quantities of :data:`CANONICAL_UNIT`.

Why the raw <-> register conversion here uses ``struct`` and not pymodbus's
``ModbusClientMixin.convert_to_registers`` / ``convert_from_registers``:

* ``protocols`` is I/O-free. Importing that mixin imports pymodbus's client package, which pulls in
  asyncio, socket, ssl and pyserial (measured with ``python -X importtime``: ~80 ms).
* The firmware shares these tables and has no pymodbus.
* pymodbus renames its conversion API between minors (``BinaryPayloadBuilder`` went away in 3.x,
  ``word_order=`` arrived later); the wire layout of a u16/i16/u32/i32/f32 does not change.

The conversion is a dozen lines of ``struct``. The simulator deliberately encodes with pymodbus's
converter instead, so every client test compares two independent implementations, and
``tests/sim_modbus/test_registers.py`` checks the two agree for every data type and word order.

Conventions (Modbus Application Protocol V1.1b3, §4.2): a register is 16 bits sent big-endian;
there is no standard for 32-bit values, so the *word order* (which register holds the high word)
is a property of the device model. Byte-swapped layouts ("BADC") are not modelled.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from protocols.contacts import (
    MAX_READ_BITS,
    MEANINGS,
    BitBlock,
    BitPoint,
    BitTable,
    Channel,
    ChannelBank,
    ChannelError,
    Meaning,
    MeaningSpec,
)
from protocols.wire import Quantity

__all__ = [
    "CANONICAL_UNIT",
    "MAX_READ_BITS",
    "MEANINGS",
    "PROFILES",
    "BitBlock",
    "BitPoint",
    "BitTable",
    "Channel",
    "ChannelBank",
    "ChannelError",
    "DataType",
    "DeviceProfile",
    "Meaning",
    "MeaningSpec",
    "PointSpec",
    "Quantity",  # the wire contract's (protocols.wire), re-exported: PointSpec.quantity is one
    "ReadBlock",
    "RegisterError",
    "RegisterType",
    "StatusWord",
    "Unit",
    "WordOrder",
    "convert",
    "get_profile",
    "pack_raw",
    "unpack_raw",
]

MAX_READ_REGISTERS = 125  # Modbus V1.1b3 §6.3/§6.4: quantity of registers 1..125 per read


class RegisterType(StrEnum):
    """The register table a value lives in, with the function code that reads it."""

    HOLDING = "holding"
    INPUT = "input"

    @property
    def read_function(self) -> int:
        """Function code 0x03 (read holding registers) or 0x04 (read input registers)."""
        return 3 if self is RegisterType.HOLDING else 4


class DataType(StrEnum):
    """How a value is laid out in one or two registers."""

    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    F32 = "f32"

    @property
    def register_count(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return 1 if self in (DataType.U16, DataType.I16) else 2

    @property
    def is_integer(self) -> bool:
        """True for the integer types (raw values are rounded and range-checked)."""
        return self is not DataType.F32


_STRUCT = {DataType.U16: "H", DataType.I16: "h", DataType.U32: "I", DataType.I32: "i",
           DataType.F32: "f"}
_INT_LIMITS = {DataType.U16: (0, 0xFFFF), DataType.I16: (-0x8000, 0x7FFF),
               DataType.U32: (0, 0xFFFF_FFFF), DataType.I32: (-0x8000_0000, 0x7FFF_FFFF)}
_F32_MAX = 3.4028234663852886e38


class WordOrder(StrEnum):
    """Register order of a 32-bit value: ``big`` puts the high word at the lower address."""

    BIG = "big"
    LITTLE = "little"


class Unit(StrEnum):
    """Units the devices report in."""

    MPA = "MPa"
    KPA = "kPa"
    METRE = "m"
    CELSIUS = "°C"
    MILLIAMPERE = "mA"


#: The quantities a register map can carry, each with the unit it is normalised to in records
#: and scenarios (one the wire contract accepts for it: ``protocols.wire.UNITS``).
CANONICAL_UNIT: Mapping[Quantity, Unit] = MappingProxyType({
    Quantity.PRESSURE: Unit.MPA,
    Quantity.LEVEL: Unit.METRE,
    Quantity.TEMPERATURE: Unit.CELSIUS,
    Quantity.RESIDUAL_CURRENT: Unit.MILLIAMPERE,
})
# unit -> (quantity, factor to the canonical unit)
_UNITS: Mapping[Unit, tuple[Quantity, float]] = MappingProxyType({
    Unit.MPA: (Quantity.PRESSURE, 1.0),
    Unit.KPA: (Quantity.PRESSURE, 0.001),
    Unit.METRE: (Quantity.LEVEL, 1.0),
    Unit.CELSIUS: (Quantity.TEMPERATURE, 1.0),
    Unit.MILLIAMPERE: (Quantity.RESIDUAL_CURRENT, 1.0),
})


def convert(value: float, src: Unit, dst: Unit) -> float:
    """Convert ``value`` between two units of the same quantity (e.g. kPa -> MPa)."""
    (q_src, f_src), (q_dst, f_dst) = _UNITS[src], _UNITS[dst]
    if q_src is not q_dst:
        raise ValueError(f"cannot convert {src} ({q_src}) to {dst} ({q_dst})")
    return value if src is dst else value * f_src / f_dst


class RegisterError(ValueError):
    """A value does not fit its data type, or a register list has the wrong length or values."""


def pack_raw(raw: float, data_type: DataType, word_order: WordOrder = WordOrder.BIG) -> list[int]:
    """Lay a raw (unscaled) value out as registers. Integers must be in the type's range."""
    if data_type.is_integer:
        if not float(raw).is_integer():
            raise RegisterError(f"{data_type} needs an integer, got {raw!r}")
        low, high = _INT_LIMITS[data_type]
        if not low <= raw <= high:
            raise RegisterError(f"{raw!r} outside {data_type} range {low}..{high}")
        data = struct.pack(">" + _STRUCT[data_type], int(raw))
    else:
        if math.isfinite(raw) and abs(raw) > _F32_MAX:
            raise RegisterError(f"{raw!r} outside f32 range")
        data = struct.pack(">f", raw)
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if word_order is WordOrder.LITTLE else words


def unpack_raw(registers: Sequence[int], data_type: DataType,
               word_order: WordOrder = WordOrder.BIG) -> int | float:
    """Read a raw value back from exactly ``data_type.register_count`` registers."""
    if len(registers) != data_type.register_count:
        raise RegisterError(f"{data_type} needs {data_type.register_count} registers, "
                            f"got {len(registers)}")
    if any(not 0 <= r <= 0xFFFF for r in registers):
        raise RegisterError(f"registers must be 0..65535, got {list(registers)}")
    words = list(registers)[::-1] if word_order is WordOrder.LITTLE else list(registers)
    data = b"".join(w.to_bytes(2, "big") for w in words)
    value: int | float = struct.unpack(">" + _STRUCT[data_type], data)[0]
    return value


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One measured value in a device's register map. ``physical = raw * scale + offset``."""

    name: str
    quantity: Quantity
    unit: Unit
    register_type: RegisterType
    address: int  # 0-based protocol address (register 40001 of the old notation is address 0)
    data_type: DataType
    minimum: float  # plausible range in ``unit``; outside it a reading is suspect
    maximum: float
    scale: float = 1.0
    offset: float = 0.0
    word_order: WordOrder = WordOrder.BIG  # only meaningful for 32-bit types
    description: str = ""

    def __post_init__(self) -> None:
        if _UNITS[self.unit][0] is not self.quantity:
            raise ValueError(f"{self.name}: unit {self.unit} is not a unit of {self.quantity}")
        if not 0 <= self.address <= 0x10000 - self.data_type.register_count:
            raise ValueError(f"{self.name}: address {self.address} outside 0..65535")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f"{self.name}: scale must be finite and non-zero")
        if not self.minimum < self.maximum:
            raise ValueError(f"{self.name}: minimum must be below maximum")

    @property
    def register_count(self) -> int:
        """Number of registers the point occupies."""
        return self.data_type.register_count

    @property
    def canonical_unit(self) -> Unit:
        """The unit records use for this quantity (MPa, m, °C, mA)."""
        return CANONICAL_UNIT[self.quantity]

    @property
    def factor(self) -> float:
        """What a value in ``unit`` is multiplied by to be in the canonical unit (kPa: 0.001)."""
        return convert(1.0, self.unit, self.canonical_unit)

    @property
    def decimals(self) -> int | None:
        """Decimal places that carry information for an integer point in its canonical unit.

        ``raw * scale + offset`` in floating point leaves noise (0.35000000000000003 for
        350 x 0.001); rounding to the resolution of scale and offset removes it. The edge
        driver and the firmware (through provisioning) round to these. None for f32, which
        carries ~7 significant digits instead.
        """
        if self.data_type is DataType.F32:
            return None
        factor = self.factor
        return max(_places(self.scale * factor), _places(self.offset * factor))

    def in_range(self, value: float) -> bool:
        """True when ``value`` (in ``unit``) lies in the plausible range."""
        return self.minimum <= value <= self.maximum

    def raw_from_physical(self, value: float, *, saturate: bool = False) -> int | float:
        """The raw register value for a physical value in ``unit``.

        Integer types are rounded; a value the type cannot hold raises :class:`RegisterError`,
        or with ``saturate=True`` is clamped to the type's limits as a real transmitter does.
        """
        if math.isnan(value):
            raise RegisterError(f"{self.name}: NaN has no raw value")
        raw = (value - self.offset) / self.scale
        if not self.data_type.is_integer:
            if saturate and math.isfinite(raw):
                return max(-_F32_MAX, min(_F32_MAX, raw))
            return raw
        low, high = _INT_LIMITS[self.data_type]
        if math.isinf(raw) or not low <= round(raw) <= high:
            if not saturate:
                raise RegisterError(f"{self.name}: {value} {self.unit} does not fit "
                                    f"{self.data_type} (raw {raw})")
            return low if raw < low else high
        return round(raw)

    def physical_from_raw(self, raw: float) -> float:
        """The physical value (in ``unit``) of a raw register value."""
        return raw * self.scale + self.offset

    def encode(self, value: float, *, saturate: bool = False) -> list[int]:
        """Registers holding the physical ``value`` (in ``unit``)."""
        raw = self.raw_from_physical(value, saturate=saturate)
        return pack_raw(raw, self.data_type, self.word_order)

    def decode(self, registers: Sequence[int]) -> float:
        """The physical value (in ``unit``) held in this point's registers."""
        return self.physical_from_raw(unpack_raw(registers, self.data_type, self.word_order))


def _places(x: float) -> int:
    """The fewest decimal places (at most 12) that write ``x`` to within 1e-9 of itself."""
    for d in range(13):
        if abs(round(x, d) - x) <= 1e-9 * abs(x):
            return d
    return 12


@dataclass(frozen=True, slots=True)
class StatusWord:
    """A status register whose bits (0 = least significant) carry named flags."""

    name: str
    register_type: RegisterType
    address: int
    bits: Mapping[int, str] = field(hash=False)
    description: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"{self.name}: address {self.address} outside 0..65535")
        if any(not 0 <= b <= 15 for b in self.bits):
            raise ValueError(f"{self.name}: bit numbers must be 0..15")
        if len(set(self.bits.values())) != len(self.bits):
            raise ValueError(f"{self.name}: bit names must be unique")

    @property
    def register_count(self) -> int:
        """Always one register."""
        return 1

    @staticmethod
    def is_alarm(bit: str) -> bool:
        """Whether a bit is the device's own alarm (``*_alarm``) rather than a fault: an alarm
        is reported as ``threshold_high`` and leaves the values trustworthy (see
        :meth:`DeviceProfile.covered_by` for what a fault bit covers)."""
        return bit.endswith("_alarm")

    def encode(self, active: Iterable[str]) -> list[int]:
        """The register with the named flags set."""
        by_name = {name: bit for bit, name in self.bits.items()}
        word = 0
        for name in active:
            if name not in by_name:
                raise RegisterError(f"{self.name}: no bit named {name!r}; "
                                    f"known: {', '.join(sorted(by_name))}")
            word |= 1 << by_name[name]
        return [word]

    def decode(self, registers: Sequence[int]) -> frozenset[str]:
        """Names of the set bits; set bits without a name appear as ``bit<n>``."""
        if len(registers) != 1 or not 0 <= registers[0] <= 0xFFFF:
            raise RegisterError(f"{self.name}: needs one register 0..65535, got {registers}")
        return frozenset(self.bits.get(b, f"bit{b}") for b in range(16) if registers[0] >> b & 1)


Field = PointSpec | StatusWord


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """A run of adjacent registers that one read request can fetch."""

    register_type: RegisterType
    start: int
    count: int


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """A device model's register map: measured points, status words and contacts.

    A generic I/O module has no fixed contacts but a :class:`ChannelBank` of numbered inputs
    that the installer assigns meanings to (:meth:`with_channels`); until then it reads
    nothing. ``bit_gap`` is how many unmapped coils / inputs a read may pass over between two
    contacts: a module that serves all of its channels takes a gap (one request for DI1 and
    DI8), while a device that answers exception 2 for an unmapped address needs 0.
    """

    key: str  # the profile id used in scenarios and configs, e.g. "pressure-a"
    model: str
    description: str
    points: tuple[PointSpec, ...]
    status_words: tuple[StatusWord, ...] = ()
    bit_points: tuple[BitPoint, ...] = ()
    bank: ChannelBank | None = None
    bit_gap: int = 0

    def __post_init__(self) -> None:
        if not self.points and not self.bit_points and self.bank is None:
            raise ValueError(f"{self.key}: a profile needs at least one point or contact")
        names = [f.name for f in self.fields] + [b.name for b in self.bit_points]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.key}: field names must be unique")
        if not 0 <= self.bit_gap < MAX_READ_BITS:
            raise ValueError(f"{self.key}: bit_gap must be 0..{MAX_READ_BITS - 1}")
        taken: dict[tuple[RegisterType, int], str] = {}
        for f in self.fields:
            for a in range(f.address, f.address + f.register_count):
                other = taken.setdefault((f.register_type, a), f.name)
                if other != f.name:
                    raise ValueError(f"{self.key}: {f.name} overlaps {other} at "
                                     f"{f.register_type} {a}")
        bits: dict[tuple[BitTable | RegisterType, int, int | None], str] = {}
        channels: dict[int, str] = {}
        for b in self.bit_points:
            if isinstance(b.table, RegisterType) and (b.table, b.address) in taken:
                raise ValueError(f"{self.key}: {b.name} lies in {taken[(b.table, b.address)]}"
                                 f" ({b.table} {b.address}): a register holds a value, a "
                                 f"status word or contacts, not two of them")
            other = bits.setdefault((b.table, b.address, b.bit), b.name)
            if other != b.name:
                where = f"{b.table} {b.address}" + ("" if b.bit is None else f" bit {b.bit}")
                raise ValueError(f"{self.key}: {b.name} overlaps {other} at {where}")
            if b.channel is not None:
                other = channels.setdefault(b.channel, b.name)
                if other != b.name:
                    raise ValueError(f"{self.key}: {b.name} and {other} are both channel "
                                     f"{b.channel}")

    @property
    def fields(self) -> tuple[Field, ...]:
        """Points then status words (the register-valued fields; contacts are
        :attr:`bit_points`)."""
        return (*self.points, *self.status_words)

    @property
    def primary(self) -> PointSpec:
        """The device's main measurement (the first point)."""
        if not self.points:
            raise KeyError(f"{self.key} measures nothing: it has contacts only")
        return self.points[0]

    def point(self, name: str) -> PointSpec:
        """The point called ``name``."""
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"{self.key} has no point {name!r}; points: "
                       f"{', '.join(p.name for p in self.points)}")

    def bit_point(self, name: str) -> BitPoint:
        """The contact called ``name``."""
        for b in self.bit_points:
            if b.name == name:
                return b
        raise KeyError(f"{self.key} has no contact {name!r}; contacts: "
                       f"{', '.join(b.name for b in self.bit_points) or 'none'}")

    @property
    def channel_numbers(self) -> tuple[int, ...]:
        """Every channel number an installer may assign: the bank's and the fixed contacts'."""
        numbers = {b.channel for b in self.bit_points if b.channel is not None}
        if self.bank is not None:
            numbers.update(range(1, self.bank.count + 1))
        return tuple(sorted(numbers))

    def with_channels(self, assigned: Mapping[int, Channel]) -> DeviceProfile:
        """The profile with the installer's channel assignments applied.

        A channel the profile defines is overridden field by field; a channel of the bank
        becomes a contact named ``ch<n>`` (its source id ``.../<unit>/ch<n>``, stable whatever
        its description); any other number raises :class:`ChannelError`.
        """
        points = list(self.bit_points)
        by_channel = {b.channel: i for i, b in enumerate(points) if b.channel is not None}
        for n, ch in sorted(assigned.items()):
            if n in by_channel:
                old = points[by_channel[n]]
                meaning = ch.meaning or old.meaning
                normal = ch.normal if ch.normal is not None else (
                    old.normal if meaning is old.meaning else None)
                new = BitPoint(old.name, meaning, old.table, old.address, old.bit,
                               old.invert if ch.invert is None else ch.invert, normal, n,
                               old.description if ch.description is None else ch.description)
                points[by_channel[n]] = new
                continue
            bank = self.bank
            if bank is None or not 1 <= n <= bank.count:
                have = self.channel_numbers
                shown = _ranges(have) if have else "none"
                raise ChannelError(f"{self.key} has no channel {n}; channels: {shown}")
            if ch.meaning is None:
                raise ChannelError(f"channel {n} of {self.key} needs a meaning: "
                                   f"{', '.join(m.value for m in Meaning)}")
            try:
                points.append(BitPoint(f"ch{n}", ch.meaning, bank.table, bank.address(n),
                                       invert=bool(ch.invert), normal=ch.normal, channel=n,
                                       description=ch.description or ""))
            except ValueError as exc:
                raise ChannelError(str(exc)) from None
        try:
            return dataclasses.replace(self, bit_points=tuple(points))
        except ValueError as exc:
            raise ChannelError(str(exc)) from None

    def points_of(self, quantity: Quantity) -> tuple[PointSpec, ...]:
        """The points measuring ``quantity``."""
        return tuple(p for p in self.points if p.quantity is quantity)

    def covered_by(self, bit: str) -> tuple[str, ...]:
        """Names of the points a set fault bit makes untrustworthy, in point order.

        ``<x>_fault`` covers the points named ``<x>`` or ``<x>_*`` (``temperature_fault``: the
        four ``temperature_<n>`` channels); a fault bit naming no point (``sensor_fault``,
        ``loop_open``) covers every point of the device.
        """
        names = tuple(p.name for p in self.points)
        if bit.endswith("_fault"):
            prefix = bit.removesuffix("_fault")
            hit = tuple(n for n in names if n == prefix or n.startswith(prefix + "_"))
            if hit:
                return hit
        return names

    def read_blocks(self, max_count: int = MAX_READ_REGISTERS) -> list[ReadBlock]:
        """The fewest register reads that fetch every field and every contact kept in a
        register, merging only adjacent registers.

        Gaps are never bridged: many devices answer exception 2 (illegal data address) for an
        unmapped register, so a read across a gap may fail as a whole.
        """
        spans = {(f.register_type, f.address, f.register_count) for f in self.fields}
        spans.update((b.table, b.address, 1) for b in self.bit_points
                     if isinstance(b.table, RegisterType))
        blocks: list[ReadBlock] = []
        for rtype, address, count in sorted(spans):
            last = blocks[-1] if blocks else None
            if (last is not None and last.register_type is rtype
                    and last.start + last.count == address
                    and last.count + count <= max_count):
                blocks[-1] = ReadBlock(rtype, last.start, last.count + count)
            else:
                blocks.append(ReadBlock(rtype, address, count))
        return blocks

    def bit_blocks(self, max_count: int = MAX_READ_BITS, max_gap: int | None = None
                   ) -> list[BitBlock]:
        """The fewest coil / discrete-input reads that fetch every contact.

        Contacts of one table are merged while the unmapped addresses between two of them
        are at most ``max_gap`` (default :attr:`bit_gap`) and the read stays within
        ``max_count`` bits: the register planner's rule, with a gap a module may allow.
        """
        gap = self.bit_gap if max_gap is None else max_gap
        blocks: list[BitBlock] = []
        located = sorted({(b.table, b.address) for b in self.bit_points
                          if isinstance(b.table, BitTable)})
        for table, address in located:
            last = blocks[-1] if blocks else None
            if (last is not None and last.table is table
                    and address - (last.start + last.count) <= gap
                    and address - last.start + 1 <= max_count):
                blocks[-1] = BitBlock(table, last.start, address - last.start + 1)
            else:
                blocks.append(BitBlock(table, address, 1))
        return blocks

    def decode_block(self, block: ReadBlock, registers: Sequence[int]
                     ) -> dict[str, float | frozenset[str]]:
        """Decode every field lying wholly inside ``block`` from the registers read for it."""
        if len(registers) != block.count:
            raise RegisterError(f"{self.key}: block of {block.count} registers, "
                                f"got {len(registers)}")
        out: dict[str, float | frozenset[str]] = {}
        for f in self.fields:
            rel = f.address - block.start
            inside = 0 <= rel <= block.count - f.register_count
            if f.register_type is block.register_type and inside:
                out[f.name] = f.decode(registers[rel:rel + f.register_count])
        return out

    def decode_bits(self, block: ReadBlock | BitBlock, values: Sequence[int] | Sequence[bool]
                    ) -> dict[str, bool]:
        """The logical state (``invert`` applied) of every contact inside ``block``: from
        the bits of a coil / discrete-input read, or the registers of a register read."""
        if len(values) != block.count:
            raise RegisterError(f"{self.key}: block of {block.count}, got {len(values)} values")
        table = block.table if isinstance(block, BitBlock) else block.register_type
        out: dict[str, bool] = {}
        for b in self.bit_points:
            rel = b.address - block.start
            if b.table is not table or not 0 <= rel < block.count:
                continue
            if b.bit is None:
                out[b.name] = b.state(bool(values[rel]))
            else:
                word = int(values[rel])
                if not 0 <= word <= 0xFFFF:
                    raise RegisterError(f"{b.name}: register {word} outside 0..65535")
                out[b.name] = b.get_from(word)
        return out


def _ranges(numbers: Iterable[int]) -> str:
    """``1..8`` / ``1..3, 7`` for a set of channel numbers."""
    out: list[str] = []
    run: list[int] = []
    for n in sorted(numbers):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}")
        run = [n]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}")
    return ", ".join(out)


# Built-in profiles live in protocols/modbus_profiles.py (data, ~150 lines), which imports this
# module; they are re-exported here on first use so that ``from protocols.registers import
# PROFILES`` keeps working without an import cycle.
if TYPE_CHECKING:
    from protocols.modbus_profiles import PROFILES, get_profile


def __getattr__(name: str) -> object:
    if name in ("PROFILES", "get_profile"):
        from protocols import modbus_profiles
        return getattr(modbus_profiles, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
