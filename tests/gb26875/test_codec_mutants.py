"""The GB/T 26875.3 encoder's limits and refusals, checked at their boundaries (issue 19).

Every expected byte below is worked out by hand from the standard's frame layout (表1, notes
/work/shared/reference/gb26875-3.md §1): start "@@", serial LE, version, time label (s, min, h,
d, mon, y), source and destination low byte first, ADU length LE, command, ADU, checksum (the
sum of bytes 3..27+L modulo 256, §1.3), end "##".
"""

from __future__ import annotations

import pytest

from protocols.gb26875.adu import (
    SPECS,
    ApplicationData,
    RawApplicationData,
    TypeSpec,
    _s,
    encode_adu,
    type_name,
)
from protocols.gb26875.errors import EncodeError
from protocols.gb26875.frame import Frame, address_from_int, encode_frame, peek_header
from protocols.gb26875.objects import SystemStatus
from protocols.gb26875.tables import SystemState
from protocols.gb26875.timelabel import TimeLabel

Z6 = b"\x00" * 6
# serial 0, version 1.0, time 00:00:00 1/1/00, zero addresses, ADU length 0: sum of the control
# unit without the command = 1 (main version) + 1 (day) + 1 (month) = 3.
CONTROL_NO_CMD = b"\x00\x00" + b"\x01\x00" + b"\x00\x00\x00\x01\x01\x00" + Z6 + Z6 + b"\x00\x00"


# -- 表1 byte 27: the command is one byte, 0..255 -------------------------------------------

def test_command_zero_encodes() -> None:
    assert encode_frame(Frame(serial=0, command=0)) == b"@@" + CONTROL_NO_CMD + b"\x00\x03##"


def test_command_255_encodes() -> None:
    # checksum (3 + 255) mod 256 = 2
    assert encode_frame(Frame(serial=0, command=255)) == b"@@" + CONTROL_NO_CMD + b"\xff\x02##"


@pytest.mark.parametrize("command", [-1, 256])
def test_command_outside_a_byte_is_refused(command: int) -> None:
    with pytest.raises(EncodeError, match=f"command {command} is not a byte"):
        encode_frame(Frame(serial=0, command=command))


# -- 表1 bytes 3-4: the serial is a uint16 --------------------------------------------------

@pytest.mark.parametrize("serial", [-1, 0x10000])
def test_serial_outside_uint16_is_refused(serial: int) -> None:
    with pytest.raises(EncodeError, match=f"serial {serial} is not a uint16"):
        encode_frame(Frame(serial=serial, command=2))


# -- 表1 bytes 13-24: each address is 6 bytes -----------------------------------------------

@pytest.mark.parametrize("which", ["source", "destination"])
def test_one_short_address_is_refused(which: str) -> None:
    frame = Frame(serial=0, command=2, **{which: b"\x00" * 5})  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match=r"^addresses are 6 bytes$"):
        encode_frame(frame)


# -- 表1 bytes 25-26: the ADU "should not exceed 1024" bytes ----------------------------------

def test_adu_of_exactly_1024_bytes_encodes() -> None:
    out = encode_frame(Frame(serial=0, command=2, adu=b"\x00" * 1024))
    assert len(out) == 1054  # the standard's maximum frame, 30 + 1024
    assert out[24:26] == b"\x00\x04"  # 1024 low byte first


def test_adu_of_1025_bytes_is_refused() -> None:
    with pytest.raises(EncodeError, match="ADU of 1025 bytes exceeds the maximum of 1024"):
        encode_frame(Frame(serial=0, command=2, adu=b"\x00" * 1025))


def test_header_field_out_of_range_is_named() -> None:
    # 表1 byte 5: the version is one byte; 256 cannot be sent
    with pytest.raises(EncodeError, match=r"^header field out of range: "):
        encode_frame(Frame(serial=0, command=2, version=(256, 0)))


# -- addresses: 6 bytes, low byte first (表1 bytes 13-18) -----------------------------------

def test_address_default_is_low_byte_first() -> None:
    assert address_from_int(0x010203040506) == b"\x06\x05\x04\x03\x02\x01"
    assert address_from_int(1) == b"\x01\x00\x00\x00\x00\x00"


def test_address_big_endian_on_request() -> None:
    assert address_from_int(0x010203040506, "big") == b"\x01\x02\x03\x04\x05\x06"


def test_address_limits_encode() -> None:
    assert address_from_int(0) == Z6
    assert address_from_int((1 << 48) - 1) == b"\xff" * 6


@pytest.mark.parametrize("value", [-1, 1 << 48])
def test_address_outside_6_bytes_is_refused(value: int) -> None:
    with pytest.raises(EncodeError, match=f"^address {value} does not fit 6 bytes$"):
        address_from_int(value)


# -- §6.5.3: a deny is addressed from the 27 header bytes alone -----------------------------

def test_peek_header_on_exactly_the_27_header_bytes() -> None:
    src = b"\x01\x02\x03\x04\x05\x06"
    dst = b"\x0a\x0b\x0c\x0d\x0e\x0f"
    head = (b"@@" + b"\x34\x12" + b"\x01\x00" + b"\x00\x00\x00\x01\x01\x00" + src + dst
            + b"\x00\x00" + b"\x02")
    assert len(head) == 27
    assert peek_header(head) == (0x1234, src, dst)
    assert peek_header(head[:26]) is None


# -- §8.2.1 / §8.3.2: type marks ------------------------------------------------------------

@pytest.mark.parametrize(("mark", "name"), [
    (127, "reserved_127"), (128, "user_defined_128"), (254, "user_defined_254"),
    (255, "reserved_255"),
])
def test_user_defined_type_marks_are_128_to_254(mark: int, name: str) -> None:
    assert type_name(mark) == name


def test_registry_directions_split_at_61() -> None:
    # 1..28 go up (UITD -> centre), 61..91 go down (centre -> UITD)
    assert {m: s.direction for m, s in SPECS.items() if m < 61} == dict.fromkeys(
        (m for m in SPECS if m < 61), "up")
    assert SPECS[61].direction == "down"
    assert SPECS[1].mark == 1 and SPECS[1].cls is SystemStatus and SPECS[1].time_label is True
    assert SPECS[1].zh == "上传建筑消防设施系统状态" and SPECS[1].figure == "图6 图18"


@pytest.mark.parametrize(("mark", "direction"),
                         [(28, "up"), (60, "up"), (61, "down"), (91, "down")])
def test_registry_entry_direction_from_the_mark(mark: int, direction: str) -> None:
    # §8.2.1 / §8.3.2 table: 1..60 (with the reserved 41..60) are uploads, 61.. are the centre's
    # commands. `_s` runs only while the module is imported, before mutmut switches a mutant
    # on, so the registry is also checked here by building an entry at test time.
    spec = _s(mark, SystemStatus, True, 7, "zh", "fig")  # type: ignore[arg-type]
    assert spec == TypeSpec(mark, SystemStatus, True, 7, direction, "zh", "fig")  # type: ignore[arg-type]


# -- encode_adu's refusals ------------------------------------------------------------------

T = TimeLabel(0, 0, 0, 1, 1, 0)


def test_adu_at_exactly_max_encodes_and_one_more_is_refused() -> None:
    # type mark 1 + 1023 payload bytes = 1024
    assert len(encode_adu(RawApplicationData(1, None, b"\x00" * 1023))) == 1024
    with pytest.raises(EncodeError, match=r"^ADU of 1025 bytes exceeds the maximum of 1024$"):
        encode_adu(RawApplicationData(1, None, b"\x00" * 1024))


def test_unknown_type_mark_points_to_raw() -> None:
    with pytest.raises(EncodeError,
                       match=r"^type mark 200 has no object layout; use RawApplicationData$"):
        encode_adu(ApplicationData(200, ()))


def test_wrong_object_class_is_named() -> None:
    obj = SystemStatus(1, 0, SystemState.NORMAL, T)
    with pytest.raises(EncodeError,
                       match=r"^type 21 carries UitdStatus objects, not SystemStatus$"):
        encode_adu(ApplicationData(21, (obj,)))


def test_field_out_of_range_names_the_object() -> None:
    # 图6: the system type is one byte
    obj = SystemStatus(256, 0, SystemState.NORMAL, T)
    with pytest.raises(EncodeError, match=r"^SystemStatus: field out of range: "):
        encode_adu(ApplicationData(1, (obj,)))


def test_time_labels_all_or_none() -> None:
    # 图6/图18: type 1 carries up to 102 objects, each with its time label
    objs = (SystemStatus(1, 0, SystemState.NORMAL, T), SystemStatus(1, 0, SystemState.NORMAL, None))
    with pytest.raises(EncodeError,
                       match=r"^either every object of an ADU has a time label or none has$"):
        encode_adu(ApplicationData(1, objs))
