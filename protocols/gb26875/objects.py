"""Upstream information objects (信息体, GB/T 26875.3-2011 §8.2.1, 图6-图16 and 图18-图30).

One frozen dataclass per upload type. Each knows its body layout; the ADU layer
(:mod:`protocols.gb26875.adu`) adds the optional 6-byte time label after each body, because which
types carry one is a property of the type *and* of the device's dialect.

All multi-byte integers are little-endian (表1 note; 图7 "低字节先传").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Self

from protocols.gb26875.errors import DecodeError, ErrorKind
from protocols.gb26875.fields import (
    DESCRIPTION_LEN,
    ComponentAddress,
    decode_text,
    encode_text,
)
from protocols.gb26875.tables import (
    ANALOG_TYPES,
    ComponentState,
    FacilityOperation,
    SystemState,
    UitdOperation,
    UitdState,
)
from protocols.gb26875.timelabel import TimeLabel


class InfoObject:
    """Base of all information objects: a fixed body size unless overridden."""

    __slots__ = ()
    BODY_SIZE: ClassVar[int] = 0

    @classmethod
    def body_size_at(cls, data: bytes, off: int) -> int:
        """Size of the body starting at ``off`` (constant except for text configurations)."""
        return cls.BODY_SIZE

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        """Decode one body at ``off``; the time label was read by the caller."""
        raise NotImplementedError

    def encode_body(self) -> bytes:
        """The body bytes, without the time label."""
        raise NotImplementedError


_SYS = struct.Struct("<BBH")

# IntFlag construction is slow (enum machinery per call); state words repeat, so cache them.
_SYSTEM_STATES: dict[int, SystemState] = {}
_COMPONENT_STATES: dict[int, ComponentState] = {}


def _system_state(value: int) -> SystemState:
    flag = _SYSTEM_STATES.get(value)
    if flag is None:
        flag = _SYSTEM_STATES[value] = SystemState(value)
    return flag


def _component_state(value: int) -> ComponentState:
    flag = _COMPONENT_STATES.get(value)
    if flag is None:
        flag = _COMPONENT_STATES[value] = ComponentState(value)
    return flag
_COMP = struct.Struct(f"<BBB4sH{DESCRIPTION_LEN}s")
_ANALOG = struct.Struct("<BBB4sBh")
_OP = struct.Struct("<BBBB")
_CCONF = struct.Struct(f"<BBB4s{DESCRIPTION_LEN}s")


@dataclass(frozen=True, slots=True)
class SystemStatus(InfoObject):
    """Type 1, 建筑消防设施系统状态 (图6, 图18): 4 bytes + time the state occurred."""

    BODY_SIZE: ClassVar[int] = 4
    system_type: int
    system_address: int
    state: SystemState
    time: TimeLabel | None = None

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        st, sa, state = _SYS.unpack_from(data, off)
        return cls(st, sa, _system_state(state), time)

    def encode_body(self) -> bytes:
        return _SYS.pack(self.system_type, self.system_address, int(self.state))


@dataclass(frozen=True, slots=True)
class ComponentStatus(InfoObject):
    """Type 2, 建筑消防设施部件运行状态 (图7, 图19): 40 bytes + time.

    ``description`` is the 31-byte 部件说明 in GB 18030, cut at the first NUL and trimmed;
    ``description_raw`` keeps the wire bytes (padding, trailing junk) for exact re-encoding.
    """

    BODY_SIZE: ClassVar[int] = 40
    system_type: int
    system_address: int
    component_type: int
    address: ComponentAddress
    state: ComponentState
    description: str = ""
    time: TimeLabel | None = None
    description_raw: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        st, sa, ct, addr, state, raw = _COMP.unpack_from(data, off)
        return cls(st, sa, ct, ComponentAddress(addr), _component_state(state),
                   decode_text(raw), time, raw)

    def encode_body(self) -> bytes:
        text = encode_text(self.description, self.description_raw, DESCRIPTION_LEN)
        return _COMP.pack(self.system_type, self.system_address, self.component_type,
                          self.address.raw, int(self.state), text)


@dataclass(frozen=True, slots=True)
class AnalogValue(InfoObject):
    """Type 3, 建筑消防设施部件模拟量值 (图8, 图20): 10 bytes + sample time.

    The value is a **signed** int16 (表6); the physical value is raw x the type's resolution.
    """

    BODY_SIZE: ClassVar[int] = 10
    system_type: int
    system_address: int
    component_type: int
    address: ComponentAddress
    analog_type: int
    raw_value: int
    time: TimeLabel | None = None

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        st, sa, ct, addr, at, raw = _ANALOG.unpack_from(data, off)
        return cls(st, sa, ct, ComponentAddress(addr), at, raw, time)

    def encode_body(self) -> bytes:
        return _ANALOG.pack(self.system_type, self.system_address, self.component_type,
                            self.address.raw, self.analog_type, self.raw_value)

    @classmethod
    def from_value(cls, system_type: int, system_address: int, component_type: int,
                   address: ComponentAddress, analog_type: int, value: float,
                   time: TimeLabel | None = None) -> AnalogValue:
        """Build from a physical value, rounding to the type's resolution."""
        spec = ANALOG_TYPES.get(analog_type)
        raw = round(value / spec.resolution) if spec else round(value)
        return cls(system_type, system_address, component_type, address, analog_type, raw, time)

    @property
    def value(self) -> float:
        """Physical value (raw x resolution); the raw number for reserved/user-defined types."""
        spec = ANALOG_TYPES.get(self.analog_type)
        if spec is None:
            return float(self.raw_value)
        return round(self.raw_value * spec.resolution, 6)

    @property
    def unit(self) -> str:
        """Unit from 表6; empty for reserved/user-defined types."""
        spec = ANALOG_TYPES.get(self.analog_type)
        return spec.unit if spec else ""


@dataclass(frozen=True, slots=True)
class FacilityOperationRecord(InfoObject):
    """Type 4, 建筑消防设施操作信息 (图9, 图21): flags, operator id (操作员编号) + time."""

    BODY_SIZE: ClassVar[int] = 4
    system_type: int
    system_address: int
    flags: FacilityOperation
    operator: int
    time: TimeLabel | None = None

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        st, sa, flags, op = _OP.unpack_from(data, off)
        return cls(st, sa, FacilityOperation(flags), op, time)

    def encode_body(self) -> bytes:
        return _OP.pack(self.system_type, self.system_address, int(self.flags), self.operator)


@dataclass(frozen=True, slots=True)
class FacilitySoftwareVersion(InfoObject):
    """Type 5, 建筑消防设施软件版本 (图10, 图22): 4 bytes, no time label in the standard."""

    BODY_SIZE: ClassVar[int] = 4
    system_type: int
    system_address: int
    major: int
    minor: int
    time: TimeLabel | None = None

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        st, sa, major, minor = _OP.unpack_from(data, off)
        return cls(st, sa, major, minor, time)

    def encode_body(self) -> bytes:
        return _OP.pack(self.system_type, self.system_address, self.major, self.minor)


@dataclass(frozen=True, slots=True)
class FacilityConfig(InfoObject):
    """Type 6, 建筑消防设施系统配置情况 (图11, 图23): length byte + GB 18030 text (0-255)."""

    system_type: int
    system_address: int
    description: str = ""
    time: TimeLabel | None = None
    description_raw: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def body_size_at(cls, data: bytes, off: int) -> int:
        if off + 3 > len(data):
            raise DecodeError(ErrorKind.OBJECT_SIZE, "configuration object cut short", off)
        return 3 + data[off + 2]

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        raw = bytes(data[off + 3:off + 3 + data[off + 2]])
        return cls(data[off], data[off + 1], decode_text(raw), time, raw)

    def encode_body(self) -> bytes:
        text = encode_text(self.description, self.description_raw, None)
        return bytes((self.system_type, self.system_address, len(text))) + text


@dataclass(frozen=True, slots=True)
class ComponentConfig(InfoObject):
    """Type 7, 建筑消防设施部件配置情况 (图12, 图24): 38 bytes, no time label."""

    BODY_SIZE: ClassVar[int] = 38
    system_type: int
    system_address: int
    component_type: int
    address: ComponentAddress
    description: str = ""
    time: TimeLabel | None = None
    description_raw: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        st, sa, ct, addr, raw = _CCONF.unpack_from(data, off)
        return cls(st, sa, ct, ComponentAddress(addr), decode_text(raw), time, raw)

    def encode_body(self) -> bytes:
        text = encode_text(self.description, self.description_raw, DESCRIPTION_LEN)
        return _CCONF.pack(self.system_type, self.system_address, self.component_type,
                           self.address.raw, text)


@dataclass(frozen=True, slots=True)
class FacilityTime(InfoObject):
    """Type 8, 建筑消防设施系统时间 (图25): the facility's clock is the payload."""

    BODY_SIZE: ClassVar[int] = 8
    system_type: int
    system_address: int
    clock: TimeLabel
    time: TimeLabel | None = None

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(data[off], data[off + 1], TimeLabel.from_bytes(bytes(data[off + 2:off + 8])),
                   time)

    def encode_body(self) -> bytes:
        return bytes((self.system_type, self.system_address)) + self.clock.to_bytes()


@dataclass(frozen=True, slots=True)
class UitdStatus(InfoObject):
    """Type 21, 用户信息传输装置运行状态 (图13, 图26): 1 byte + time."""

    BODY_SIZE: ClassVar[int] = 1
    state: UitdState
    time: TimeLabel | None = None

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(UitdState(data[off]), time)

    def encode_body(self) -> bytes:
        return bytes((int(self.state),))


@dataclass(frozen=True, slots=True)
class UitdOperationRecord(InfoObject):
    """Type 24, 用户信息传输装置操作信息 (图14, 图27): flags, operator id + time."""

    BODY_SIZE: ClassVar[int] = 2
    flags: UitdOperation
    operator: int
    time: TimeLabel | None = None

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(UitdOperation(data[off]), data[off + 1], time)

    def encode_body(self) -> bytes:
        return bytes((int(self.flags), self.operator))


@dataclass(frozen=True, slots=True)
class UitdSoftwareVersion(InfoObject):
    """Type 25, 用户信息传输装置软件版本 (图15, 图28): major, minor."""

    BODY_SIZE: ClassVar[int] = 2
    major: int
    minor: int
    time: TimeLabel | None = None

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(data[off], data[off + 1], time)

    def encode_body(self) -> bytes:
        return bytes((self.major, self.minor))


@dataclass(frozen=True, slots=True)
class UitdConfig(InfoObject):
    """Type 26, 用户信息传输装置配置情况 (图16, 图29): length byte + GB 18030 text."""

    description: str = ""
    time: TimeLabel | None = None
    description_raw: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def body_size_at(cls, data: bytes, off: int) -> int:
        if off + 1 > len(data):
            raise DecodeError(ErrorKind.OBJECT_SIZE, "configuration object cut short", off)
        return 1 + data[off]

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        raw = bytes(data[off + 1:off + 1 + data[off]])
        return cls(decode_text(raw), time, raw)

    def encode_body(self) -> bytes:
        text = encode_text(self.description, self.description_raw, None)
        return bytes((len(text),)) + text


@dataclass(frozen=True, slots=True)
class UitdTime(InfoObject):
    """Type 28, 用户信息传输装置系统时间 (图30): the UITD's clock is the payload."""

    BODY_SIZE: ClassVar[int] = 6
    clock: TimeLabel
    time: TimeLabel | None = None

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(TimeLabel.from_bytes(bytes(data[off:off + 6])), time)

    def encode_body(self) -> bytes:
        return self.clock.to_bytes()
