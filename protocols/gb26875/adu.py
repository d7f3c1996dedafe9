"""Application data units (应用数据单元, GB/T 26875.3-2011 §7, 图5): type mark, object count,
objects, each optionally followed by a 6-byte time label.

A registry keyed by type mark (表3) says which object class, whether the standard gives it a time
label, its maximum count and its direction. Unknown type marks (reserved, user-defined 128-254, 255)
and ADUs shorter than two bytes decode to :class:`RawApplicationData`, never to a crash.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from protocols.gb26875 import objects as up
from protocols.gb26875 import requests as down
from protocols.gb26875.constants import STD_MAX_ADU, TIME_LABEL_LEN
from protocols.gb26875.errors import DecodeError, EncodeError, ErrorKind
from protocols.gb26875.objects import InfoObject
from protocols.gb26875.profile import STANDARD, Profile
from protocols.gb26875.timelabel import TimeLabel


class TypeMark(IntEnum):
    """类型标志 (表3) with an implementation."""

    SYSTEM_STATE = 1
    COMPONENT_STATE = 2
    ANALOG_VALUE = 3
    FACILITY_OPERATION = 4
    FACILITY_SOFTWARE_VERSION = 5
    FACILITY_CONFIG = 6
    COMPONENT_CONFIG = 7
    FACILITY_TIME = 8
    UITD_STATE = 21
    UITD_OPERATION = 24
    UITD_SOFTWARE_VERSION = 25
    UITD_CONFIG = 26
    UITD_TIME = 28
    READ_SYSTEM_STATE = 61
    READ_COMPONENT_STATE = 62
    READ_ANALOG_VALUE = 63
    READ_FACILITY_OPERATIONS = 64
    READ_FACILITY_SOFTWARE_VERSION = 65
    READ_FACILITY_CONFIG = 66
    READ_COMPONENT_CONFIG = 67
    READ_FACILITY_TIME = 68
    READ_UITD_STATE = 81
    READ_UITD_OPERATIONS = 84
    READ_UITD_SOFTWARE_VERSION = 85
    READ_UITD_CONFIG = 86
    READ_UITD_TIME = 88
    INITIALIZE_UITD = 89
    SYNC_UITD_CLOCK = 90
    CHECK_POST = 91


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """What the standard says about one type mark."""

    mark: TypeMark
    cls: type[InfoObject]
    time_label: bool  # per-object time label in the standard text
    max_count: int
    direction: Literal["up", "down"]
    zh: str
    figure: str


def _s(mark: TypeMark, cls: type[InfoObject], tl: bool, n: int, zh: str, fig: str) -> TypeSpec:
    return TypeSpec(mark, cls, tl, n, "up" if mark < 61 else "down", zh, fig)


T = TypeMark
# §8.2.1 / §8.3.2. Max counts keep 2 + n x size <= 1024 (e.g. 22 x 46 + 2 = 1014).
SPECS: Mapping[int, TypeSpec] = {s.mark: s for s in (
    _s(T.SYSTEM_STATE, up.SystemStatus, True, 102, "上传建筑消防设施系统状态", "图6 图18"),
    _s(T.COMPONENT_STATE, up.ComponentStatus, True, 22, "上传建筑消防设施部件运行状态",
       "图7 图19"),
    _s(T.ANALOG_VALUE, up.AnalogValue, True, 63, "上传建筑消防设施部件模拟量值", "图8 图20"),
    _s(T.FACILITY_OPERATION, up.FacilityOperationRecord, True, 102, "上传建筑消防设施操作信息",
       "图9 图21"),
    _s(T.FACILITY_SOFTWARE_VERSION, up.FacilitySoftwareVersion, False, 1,
       "上传建筑消防设施软件版本", "图10 图22"),
    _s(T.FACILITY_CONFIG, up.FacilityConfig, False, 3, "上传建筑消防设施系统配置情况",
       "图11 图23"),
    _s(T.COMPONENT_CONFIG, up.ComponentConfig, False, 26, "上传建筑消防设施部件配置情况",
       "图12 图24"),
    _s(T.FACILITY_TIME, up.FacilityTime, False, 1, "上传建筑消防设施系统时间", "图25"),
    _s(T.UITD_STATE, up.UitdStatus, True, 1, "上传用户信息传输装置运行状态", "图13 图26"),
    _s(T.UITD_OPERATION, up.UitdOperationRecord, True, 127, "上传用户信息传输装置操作信息",
       "图14 图27"),
    _s(T.UITD_SOFTWARE_VERSION, up.UitdSoftwareVersion, False, 1,
       "上传用户信息传输装置软件版本", "图15 图28"),
    _s(T.UITD_CONFIG, up.UitdConfig, False, 1, "上传用户信息传输装置配置情况", "图16 图29"),
    _s(T.UITD_TIME, up.UitdTime, False, 1, "上传用户信息传输装置系统时间", "图30"),
    _s(T.READ_SYSTEM_STATE, down.SystemRef, False, 102, "读建筑消防设施系统状态", "图31"),
    _s(T.READ_COMPONENT_STATE, down.ComponentRef, False, 22, "读建筑消防设施部件运行状态",
       "图32"),
    _s(T.READ_ANALOG_VALUE, down.ComponentRef, False, 63, "读建筑消防设施部件模拟量值", "图33"),
    _s(T.READ_FACILITY_OPERATIONS, down.ReadOperations, False, 1, "读建筑消防设施操作信息",
       "图34"),
    _s(T.READ_FACILITY_SOFTWARE_VERSION, down.SystemRef, False, 1, "读建筑消防设施软件版本",
       "图35"),
    _s(T.READ_FACILITY_CONFIG, down.SystemRef, False, 3, "读建筑消防设施系统配置情况", "图36"),
    _s(T.READ_COMPONENT_CONFIG, down.ComponentRef, False, 26, "读建筑消防设施部件配置情况",
       "图37"),
    _s(T.READ_FACILITY_TIME, down.SystemRef, False, 1, "读建筑消防设施系统时间", "图38"),
    _s(T.READ_UITD_STATE, down.Reserved, False, 1, "读用户信息传输装置运行状态", "图39"),
    _s(T.READ_UITD_OPERATIONS, down.ReadUitdOperations, False, 1,
       "读用户信息传输装置操作信息记录", "图40"),
    _s(T.READ_UITD_SOFTWARE_VERSION, down.Reserved, False, 1, "读用户信息传输装置软件版本",
       "图41"),
    _s(T.READ_UITD_CONFIG, down.Reserved, False, 1, "读用户信息传输装置配置情况", "图42"),
    _s(T.READ_UITD_TIME, down.Reserved, False, 1, "读用户信息传输装置系统时间", "图43"),
    _s(T.INITIALIZE_UITD, down.Reserved, False, 1, "初始化用户信息传输装置", "图44"),
    _s(T.SYNC_UITD_CLOCK, down.ClockSync, False, 1, "同步用户信息传输装置时钟", "图45"),
    _s(T.CHECK_POST, down.CheckPost, False, 1, "查岗命令", "图46"),
)}

# §5 query flow: a read (61-88) is answered (command 5) with the matching upload type.
RESPONSE_TYPE: Mapping[int, int] = {61: 1, 62: 2, 63: 3, 64: 4, 65: 5, 66: 6, 67: 7, 68: 8,
                                    81: 21, 84: 24, 85: 25, 86: 26, 88: 28}


def type_name(mark: int) -> str:
    """A readable name for any type mark."""
    try:
        return TypeMark(mark).name.lower()
    except ValueError:
        if 128 <= mark <= 254:
            return f"user_defined_{mark}"
        return f"reserved_{mark}"


@dataclass(frozen=True, slots=True)
class ApplicationData:
    """A decoded ADU of a known type mark."""

    type_mark: int
    objects: tuple[InfoObject, ...]

    @property
    def spec(self) -> TypeSpec:
        """The registry entry for this type mark."""
        return SPECS[self.type_mark]


@dataclass(frozen=True, slots=True)
class RawApplicationData:
    """An ADU kept as bytes: unknown type mark, or shorter than type mark + count.

    ``count`` is None for a 1-byte ADU (the "handshake" dialect sends ``0x16`` alone).
    """

    type_mark: int
    count: int | None
    payload: bytes = b""


Adu = ApplicationData | RawApplicationData


def decode_adu(adu: bytes, profile: Profile = STANDARD) -> Adu | None:
    """Decode an ADU; None when it is empty (confirm, deny). Raise :class:`DecodeError` when a
    known type's objects do not fit (reference checklist item 4 tolerance applied first)."""
    if not adu:
        return None
    if len(adu) < 2:
        return RawApplicationData(adu[0], None)
    mark, count = adu[0], adu[1]
    spec = SPECS.get(mark)
    if spec is None:
        return RawApplicationData(mark, count, bytes(adu[2:]))
    timed = spec.direction == "up"
    has_tl = timed and profile.has_time_label(mark, spec.time_label)
    try:
        objs = _decode_objects(spec.cls, adu, count, has_tl)
    except DecodeError as first:
        if not (timed and profile.tolerant_object_sizes):
            raise
        try:
            objs = _decode_objects(spec.cls, adu, count, not has_tl)
        except DecodeError:
            raise first from None
    return ApplicationData(mark, objs)


_TIME_CACHE: dict[bytes, TimeLabel] = {}


def _time_label(raw: bytes) -> TimeLabel:
    """Time labels repeat (every object of a frame, consecutive frames): share the immutable
    objects instead of building one per object. The cache is bounded."""
    t = _TIME_CACHE.get(raw)
    if t is None:
        if len(_TIME_CACHE) >= 4096:
            _TIME_CACHE.clear()
        t = _TIME_CACHE[raw] = TimeLabel(raw[0], raw[1], raw[2], raw[3], raw[4], raw[5])
    return t


def _decode_objects(cls: type[InfoObject], adu: bytes, count: int,
                    has_tl: bool) -> tuple[InfoObject, ...]:
    n = len(adu)
    extra = TIME_LABEL_LEN if has_tl else 0
    size = cls.BODY_SIZE
    if size:  # fixed size: check the total first, then cut without further checks
        step = size + extra
        if 2 + count * step != n:
            raise DecodeError(ErrorKind.OBJECT_SIZE,
                              f"{count} objects of {step} bytes need {2 + count * step} bytes, "
                              f"ADU has {n}", 0, adu)
        decode = cls.decode_body
        if not has_tl:
            return tuple([decode(adu, 2 + k * step, None) for k in range(count)])
        out = []
        for off in range(2, n, step):
            out.append(decode(adu, off, _time_label(adu[off + size:off + step])))
        return tuple(out)
    off = 2
    out = []
    for _ in range(count):
        end = off + cls.body_size_at(adu, off)
        stop = end + extra
        if stop > n:
            raise DecodeError(ErrorKind.OBJECT_SIZE,
                              f"object at byte {off} runs past the ADU end ({stop} > {n})",
                              off, adu)
        tl = _time_label(adu[end:stop]) if has_tl else None
        out.append(cls.decode_body(adu, off, tl))
        off = stop
    if off != n:
        raise DecodeError(ErrorKind.OBJECT_SIZE, f"{n - off} bytes left after {count} objects",
                          off, adu)
    return tuple(out)


def encode_adu(data: Adu, max_adu: int = STD_MAX_ADU) -> bytes:
    """Serialise an ADU. Objects with a ``time`` get their time label appended; all objects of
    one ADU must agree on having one (a receiver cannot tell them apart otherwise)."""
    if isinstance(data, RawApplicationData):
        head = bytes((data.type_mark,)) if data.count is None else bytes((data.type_mark,
                                                                         data.count))
        out = head + data.payload
    else:
        spec = SPECS.get(data.type_mark)
        if spec is None:
            raise EncodeError(f"type mark {data.type_mark} has no object layout; "
                              "use RawApplicationData")
        if len(data.objects) > spec.max_count:
            raise EncodeError(f"type {data.type_mark} allows at most {spec.max_count} objects "
                              f"({spec.figure}), got {len(data.objects)}")
        parts = [bytes((data.type_mark, len(data.objects)))]
        timed: set[bool] = set()
        for obj in data.objects:
            if not isinstance(obj, spec.cls):
                raise EncodeError(f"type {data.type_mark} carries {spec.cls.__name__} objects, "
                                  f"not {type(obj).__name__}")
            try:
                parts.append(obj.encode_body())
            except (struct.error, ValueError, OverflowError) as exc:
                if isinstance(exc, EncodeError):
                    raise
                raise EncodeError(f"{type(obj).__name__}: field out of range: {exc}") from None
            time: TimeLabel | None = getattr(obj, "time", None)
            timed.add(time is not None)
            if time is not None:
                parts.append(time.to_bytes())
        if len(timed) > 1:
            raise EncodeError("either every object of an ADU has a time label or none has")
        out = b"".join(parts)
    if len(out) > max_adu:
        raise EncodeError(f"ADU of {len(out)} bytes exceeds the maximum of {max_adu}")
    return out
