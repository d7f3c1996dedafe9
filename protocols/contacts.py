"""Contacts in Modbus device maps: two-state points read as coils, discrete inputs or bits.

A supply valve's position switch, a fire pump's run feedback, a fan controller's auto/manual
selector: each is a :class:`BitPoint` with a :class:`Meaning`, a wiring (``invert``) and a
normal state. :data:`MEANINGS` maps each meaning to the wire contract's event type, as data.
:mod:`protocols.registers` re-exports everything here and places contacts in a
:class:`~protocols.registers.DeviceProfile`; docs/modbus-contacts.md is the design.

Pure and I/O-free like the rest of ``protocols``; imports nothing from ``registers`` at run
time (a contact in a register needs only its bit number), so the two modules do not cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from protocols.wire import EventType

if TYPE_CHECKING:
    from protocols.registers import RegisterType

__all__ = [
    "MAX_READ_BITS",
    "MEANINGS",
    "BitBlock",
    "BitPoint",
    "BitTable",
    "Channel",
    "ChannelBank",
    "ChannelError",
    "Meaning",
    "MeaningSpec",
]

MAX_READ_BITS = 2000  # Modbus V1.1b3 §6.1/§6.2: quantity of coils / inputs 1..2000 per read


# ---------------------------------------------------------------------------------------------
# Bit points: dry contacts read as coils (FC1), discrete inputs (FC2) or bits of a register.
# docs/modbus-contacts.md explains the model; in short, three layers:
#
#   raw bit  --invert-->  logical state  --compared with normal-->  event raised / cleared
#
# * the raw bit is what the device reports (1 = contact closed, for most DI modules);
# * ``invert`` says the contact is wired the other way round (normally closed where the
#   meaning expects normally open); after it, the logical state reads as the meaning's
#   ``states[1]``: valve open, pump running, fault, manual mode, door open, supervisory active;
# * ``normal`` is the logical state in which nothing needs reporting: a supply valve is
#   normally open, a pump normally stopped. Its meaning's event type is active while the logical
#   state differs from it.
# ---------------------------------------------------------------------------------------------

class BitTable(StrEnum):
    """The single-bit table a contact lives in, with the function code that reads it."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"

    @property
    def read_function(self) -> int:
        """Function code 0x01 (read coils) or 0x02 (read discrete inputs), V1.1b3 §6.1/§6.2."""
        return 1 if self is BitTable.COIL else 2


class Meaning(StrEnum):
    """What a contact tells: the keys an installer writes in ``channels.<n>``."""

    VALVE = "valve"
    """Position switch of a fire water supply valve (信号阀); logical 1 = open."""
    RUN = "run"
    """Run feedback of a fire pump or a smoke-exhaust / pressurisation fan; 1 = running."""
    FAULT = "fault"
    """Fault contact of a pump or fan controller (overload, phase loss); 1 = fault."""
    MANUAL = "manual"
    """Auto/manual selector of a controller; 1 = manual (not auto)."""
    DOOR = "door"
    """Fire door position contact; 1 = open."""
    SUPERVISORY = "supervisory"
    """Any other supervisory contact (flow switch, pressure switch, float); 1 = active."""


@dataclass(frozen=True, slots=True)
class MeaningSpec:
    """How a meaning becomes records: its event type, the names of its two logical states and
    its default normal state."""

    event: EventType
    states: tuple[str, str]  # names of logical 0 and logical 1
    normal: bool  # the default normal logical state
    normal_fixed: bool = True  # False: a point may declare the other state normal

    def state_name(self, state: bool) -> str:
        """``open`` / ``closed``, ``running`` / ``stopped``..."""
        return self.states[int(state)]


#: Each meaning's records. The event is active while the logical state is not the normal one.
#: Only a valve's normal position may be changed (a drain or test valve is normally closed); a
#: ``running`` or ``fault`` event that meant "stopped" or "healthy" would lie, so a contact that
#: reads the other way round is declared ``invert = true`` instead.
MEANINGS: Mapping[Meaning, MeaningSpec] = MappingProxyType({
    Meaning.VALVE: MeaningSpec(EventType.VALVE_OFF_NORMAL, ("closed", "open"), True,
                               normal_fixed=False),
    Meaning.RUN: MeaningSpec(EventType.RUNNING, ("stopped", "running"), False),
    Meaning.FAULT: MeaningSpec(EventType.FAULT, ("ok", "fault"), False),
    Meaning.MANUAL: MeaningSpec(EventType.MANUAL_MODE, ("auto", "manual"), False),
    Meaning.DOOR: MeaningSpec(EventType.DOOR_OPEN, ("closed", "open"), False),
    Meaning.SUPERVISORY: MeaningSpec(EventType.SUPERVISORY, ("inactive", "active"), False),
})


@dataclass(frozen=True, slots=True)
class BitPoint:
    """One two-state contact: where its bit is, what it means, how it is wired.

    ``table`` is a coil or discrete-input table (``bit`` None: one address per contact) or a
    register table (``bit`` 0..15, 0 = least significant: one of the contacts a module packs
    into a status register). ``channel`` is the terminal number printed on the module
    (DI1, DI2...), by which an installer configures it; None when it has none.
    """

    name: str
    meaning: Meaning
    table: BitTable | RegisterType
    address: int  # 0-based protocol address
    bit: int | None = None
    invert: bool = False
    normal: bool | None = None  # logical normal state; None: the meaning's default
    channel: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"{self.name}: address {self.address} outside 0..65535")
        if isinstance(self.table, BitTable):
            if self.bit is not None:
                raise ValueError(f"{self.name}: a {self.table} has no bit number (one address "
                                 f"per contact); bit is only for holding/input registers")
        elif self.bit is None or not 0 <= self.bit <= 15:
            raise ValueError(f"{self.name}: a contact in a {self.table} register needs a bit "
                             f"0..15 (0 = least significant)")
        spec = MEANINGS[self.meaning]
        if self.normal is not None and spec.normal_fixed and self.normal is not spec.normal:
            raise ValueError(
                f"{self.name}: a {self.meaning} contact is normally "
                f"{spec.state_name(spec.normal)}; one that reads "
                f"{spec.state_name(not spec.normal)} at rest is wired the other way: "
                f"set invert instead of normal")
        if self.channel is not None and not 1 <= self.channel <= 0xFFFF:
            raise ValueError(f"{self.name}: channel numbers start at 1")

    @property
    def spec(self) -> MeaningSpec:
        """The meaning's event type and state names."""
        return MEANINGS[self.meaning]

    @property
    def event_type(self) -> EventType:
        """The event this contact raises while not in its normal state."""
        return MEANINGS[self.meaning].event

    @property
    def normal_state(self) -> bool:
        """The logical state in which nothing is reported."""
        return MEANINGS[self.meaning].normal if self.normal is None else self.normal

    @property
    def in_register(self) -> bool:
        """True for a bit of a holding or input register."""
        return not isinstance(self.table, BitTable)

    def state(self, raw: bool) -> bool:
        """The logical state of a raw bit (``invert`` applied)."""
        return bool(raw) is not self.invert

    def raw(self, state: bool) -> bool:
        """The raw bit a device reports for a logical state (what a simulator serves)."""
        return bool(state) is not self.invert

    def is_abnormal(self, state: bool) -> bool:
        """Whether a logical state raises this contact's event."""
        return bool(state) is not self.normal_state

    def state_name(self, state: bool) -> str:
        """``open``, ``running``, ``manual``... for a logical state."""
        return MEANINGS[self.meaning].state_name(state)

    def set_in(self, word: int, state: bool) -> int:
        """A register word with this (register) contact's bit set for a logical state."""
        assert self.bit is not None, "only contacts in a register have a bit"
        mask = 1 << self.bit
        return (word | mask) if self.raw(state) else (word & ~mask & 0xFFFF)

    def get_from(self, word: int) -> bool:
        """The logical state of this (register) contact in a register word."""
        assert self.bit is not None, "only contacts in a register have a bit"
        return self.state(bool(word >> self.bit & 1))


@dataclass(frozen=True, slots=True)
class ChannelBank:
    """The numbered inputs of a generic I/O module (DI1..DIn) that an installer assigns
    meanings to. Channel ``n`` is the bit at ``first + n - 1`` of ``table``."""

    table: BitTable
    first: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_READ_BITS or not 0 <= self.first <= 0x10000 - self.count:
            raise ValueError(f"channel bank {self.first}+{self.count} outside 0..65535")

    def address(self, channel: int) -> int:
        """Protocol address of channel ``channel`` (1-based)."""
        return self.first + channel - 1


@dataclass(frozen=True, slots=True)
class Channel:
    """An installer's assignment of one channel (``channels.<n>`` in the gateway config).

    On a generic module it creates a contact; on a channel the profile already defines (a pump
    controller's run contact) it overrides what is given: None keeps the profile's value.
    """

    meaning: Meaning | None = None
    description: str | None = None
    invert: bool | None = None
    normal: bool | None = None


class ChannelError(ValueError):
    """A channel assignment that does not fit the profile (the message says why)."""


@dataclass(frozen=True, slots=True)
class BitBlock:
    """A run of coils or discrete inputs that one read request fetches."""

    table: BitTable
    start: int
    count: int
