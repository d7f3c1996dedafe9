"""Downstream information objects (GB/T 26875.3-2011 §8.3.2, 图31-图46): reads and controls
sent by the monitoring centre. None of them carries a time label.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from protocols.gb26875.fields import ComponentAddress
from protocols.gb26875.objects import InfoObject
from protocols.gb26875.timelabel import TimeLabel

_REF = struct.Struct("<BB4s")


@dataclass(frozen=True, slots=True)
class SystemRef(InfoObject):
    """A system (sys type, sys address): types 61 (图31), 65 (图35), 66 (图36), 68 (图38)."""

    BODY_SIZE: ClassVar[int] = 2
    system_type: int
    system_address: int

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(data[off], data[off + 1])

    def encode_body(self) -> bytes:
        return bytes((self.system_type, self.system_address))


@dataclass(frozen=True, slots=True)
class ComponentRef(InfoObject):
    """A component (sys type, sys address, component address; **no component type**):
    types 62 (图32), 63 (图33), 67 (图37)."""

    BODY_SIZE: ClassVar[int] = 6
    system_type: int
    system_address: int
    address: ComponentAddress

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        st, sa, addr = _REF.unpack_from(data, off)
        return cls(st, sa, ComponentAddress(addr))

    def encode_body(self) -> bytes:
        return _REF.pack(self.system_type, self.system_address, self.address.raw)


@dataclass(frozen=True, slots=True)
class ReadOperations(InfoObject):
    """Type 64 (图34): read facility operation records: system, how many (<= 102), from when."""

    BODY_SIZE: ClassVar[int] = 9
    system_type: int
    system_address: int
    count: int
    start: TimeLabel

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(data[off], data[off + 1], data[off + 2],
                   TimeLabel.from_bytes(bytes(data[off + 3:off + 9])))

    def encode_body(self) -> bytes:
        return bytes((self.system_type, self.system_address, self.count)) + self.start.to_bytes()


@dataclass(frozen=True, slots=True)
class ReadUitdOperations(InfoObject):
    """Type 84 (图40): read UITD operation records: how many (<= 102), from when."""

    BODY_SIZE: ClassVar[int] = 7
    count: int
    start: TimeLabel

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(data[off], TimeLabel.from_bytes(bytes(data[off + 1:off + 7])))

    def encode_body(self) -> bytes:
        return bytes((self.count,)) + self.start.to_bytes()


@dataclass(frozen=True, slots=True)
class Reserved(InfoObject):
    """The single reserved byte (预留, 0) of types 81, 85, 86, 88 and 89 (图39-图44)."""

    BODY_SIZE: ClassVar[int] = 1
    value: int = 0

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(data[off])

    def encode_body(self) -> bytes:
        return bytes((self.value,))


@dataclass(frozen=True, slots=True)
class ClockSync(InfoObject):
    """Type 90 (图45): the centre's time; exactly 6 bytes, no reserved byte before it."""

    BODY_SIZE: ClassVar[int] = 6
    clock: TimeLabel

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(TimeLabel.from_bytes(bytes(data[off:off + 6])))

    def encode_body(self) -> bytes:
        return self.clock.to_bytes()


@dataclass(frozen=True, slots=True)
class CheckPost(InfoObject):
    """Type 91 (图46): 查岗; the operator must answer within ``timeout_minutes`` (minutes)."""

    BODY_SIZE: ClassVar[int] = 1
    timeout_minutes: int

    @classmethod
    def decode_body(cls, data: bytes, off: int, time: TimeLabel | None) -> Self:
        return cls(data[off])

    def encode_body(self) -> bytes:
        return bytes((self.timeout_minutes,))
