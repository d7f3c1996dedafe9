"""Every upload type, written by hand from GB/T 26875.3-2011, with its meaning written by hand.

The golden files under ``tests/data/gb26875/`` are *regression files*: their frames were made
with firegate's encoder and their ``expected.json`` written by firegate's decoder, so they
prove that the output did not change, not that it is right. The cases here are independent
of the code: each frame is written out byte by byte from the standard (the reference notes,
shared/reference/gb26875-3.md, §1 frame, §2-§3 objects, §4 code tables), its markers, length
field and checksum are checked by the small helper below (not firegate's encoder), and its
expected meaning - system and component types with their names from 表4/表5, addresses,
state and operation flags by name, analog values scaled with their unit from 表6, operators,
versions, configuration text, time labels - is literal data read off the standard. The test
decodes the bytes with firegate's decoder and compares. K1-K8 (``test_reference.py``) are the
same kind of case for the control, query and confirm flows.

Every frame comes from the UITD ``79 03 00 00 00 00`` (0x000000000379) to a centre with the
all-zero address, sent at 2025-03-14 15:09:26 (time label ``1a 09 0f 0e 03 19``: second,
minute, hour, day, month, year - plain binary, §1.2), version ``01 00`` unless the case says
otherwise, in command 2 (发送数据, 表2) unless it is a response (command 5, §5).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import IntFlag

import pytest

from protocols.gb26875 import (
    ANALOG_TYPES,
    COMPONENT_TYPES,
    SPECS,
    SYSTEM_TYPES,
    AnalogValue,
    ApplicationData,
    ComponentAddress,
    ComponentState,
    FacilityOperation,
    Frame,
    InfoObject,
    RawApplicationData,
    StreamDecoder,
    SystemState,
    TimeLabel,
    UitdOperation,
    UitdState,
    address_to_int,
    decode_adu,
    decode_frame,
)
from protocols.gb26875.tables import flag_names

UITD = 0x0379
CENTRE = 0
SENT = datetime(2025, 3, 14, 15, 9, 26)

Meaning = dict[str, object]


def at(second: int, minute: int = 9) -> datetime:
    """An object time label on the day of the frames, 2025-03-14 15:mm:ss."""
    return datetime(2025, 3, 14, 15, minute, second)


@dataclass(frozen=True)
class Header:
    """The meaning of the control unit (表1 bytes 3-27)."""

    serial: int
    command: int
    adu_length: int
    version: tuple[int, int] = (1, 0)
    time: datetime = SENT
    source: int = UITD
    destination: int = CENTRE


@dataclass(frozen=True)
class Case:
    name: str
    cites: str  # where in the standard (and the reference notes) the layout and codes are
    frame: str  # the bytes as hex, '#' starts a comment
    header: Header
    type_mark: int
    objects: tuple[Meaning, ...]

    @property
    def raw(self) -> bytes:
        return hand_hex(self.frame)


def hand_hex(text: str) -> bytes:
    """Hex bytes, one group per line, with '#' comments."""
    return bytes.fromhex(" ".join(line.split("#")[0] for line in text.splitlines()))


def check_by_hand(frame: bytes) -> None:
    """The frame rules of 表1, independent of firegate: ``@@`` ... ``##``, the ADU length at
    bytes 25-26 (low byte first), and the checksum - the sum of bytes 3 to 27+L, low 8 bits
    (§1.3). Catches a slip in the hand-written bytes before firegate is asked anything."""
    assert frame[:2] == b"@@" and frame[-2:] == b"##"
    assert frame[24] + 256 * frame[25] == len(frame) - 30, "length field"
    assert sum(frame[2:-3]) % 256 == frame[-3], f"checksum should be {sum(frame[2:-3]) % 256:02x}"


# The standard's names: 表4 system types, 表5 component types, 表6 analog types.
FIRE_ALARM_SYSTEM = (1, "火灾报警系统")
HYDRANT_SYSTEM = (11, "消火栓系统")
SPRINKLER_SYSTEM = (12, "自动喷水灭火系统")
SMOKE_CONTROL_SYSTEM = (18, "防烟排烟系统")
DOOR_SHUTTER_SYSTEM = (19, "防火门及卷帘系统")


CASES: tuple[Case, ...] = (
    Case(
        "type 1, facility system state",
        "表3 type 1; §8.2.1, 图18 (object: 4 bytes + time), 图6 (state bits); 表4; "
        "notes §3.1, §4.3",
        """
        40 40                  # 启动符 @@
        01 00                  # serial 1 (low byte first)
        01 00                  # version: main 1, user 0
        1a 09 0f 0e 03 19      # time label 2025-03-14 15:09:26
        79 03 00 00 00 00      # source: the UITD
        00 00 00 00 00 00      # destination: the centre
        20 00                  # ADU length 32
        02                     # command 2, send data
        01 03                  # type mark 1, 3 objects
        01 01 03 00            #   system type 1, address 1, state 0x0003 (bits 0, 1)
        14 09 0f 0e 03 19      #   at 15:09:20
        0b 02 e1 00            #   system type 11, address 2, state 0x00e1 (bits 0, 5, 6, 7)
        15 09 0f 0e 03 19      #   at 15:09:21
        01 03 1c 3f            #   system type 1, address 3, state 0x3f1c (bits 2-4, 8-13;
        16 09 0f 0e 03 19      #   bit 0 clear = test), at 15:09:22
        57                     # checksum: bytes 3-59 summed, low 8 bits
        23 23                  # 结束符 ##
        """,
        Header(serial=1, command=2, adu_length=32),
        1,
        (
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "state": (0x0003, ("normal", "fire_alarm")), "time": at(20)},
            {"system_type": HYDRANT_SYSTEM, "system_address": 2,
             "state": (0x00E1, ("normal", "started", "feedback", "delay")), "time": at(21)},
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 3,
             "state": (0x3F1C, ("fault", "disabled", "supervisory", "mains_power_fault",
                                "backup_power_fault", "bus_fault", "manual_mode",
                                "config_changed", "reset")),
             "time": at(22)},
        ),
    ),
    Case(
        "type 2, component running state",
        "表3 type 2; §8.2.1, 图19 (object: 40 bytes + time), 图7 (state bits); 表5; "
        "部件说明 31 bytes GB 18030; notes §3.1, §4.4",
        """
        40 40 02 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        5e 00                  # ADU length 94
        02
        02 02                  # type mark 2, 2 objects
        01 01                  #   system type 1, address 1
        2a                     #   component type 42, point photoelectric smoke detector
        02 01 00 00            #   component address 0x00000102
        03 00                  #   state 0x0003 (bits 0, 1)
        c8 fd b2 e3 b6 ab d7 df c0 c8 b8 d0 d1 cc     # 三层东走廊感烟 (GB 18030)
        00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  # NUL padding to 31
        17 09 0f 0e 03 19      #   at 15:09:23
        01 01                  #   system type 1, address 1
        17                     #   component type 23, manual call point
        07 00 03 00            #   component address 0x00030007
        fc 01                  #   state 0x01fc (bits 2-8; bit 0 clear = test)
        ca d6 b1 a8 20 37 2d 33                       # 手报 7-3
        20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 00
                               #   22 spaces and a NUL (a padding seen in the field)
        18 09 0f 0e 03 19      #   at 15:09:24
        d2 23 23               # checksum, ##
        """,
        Header(serial=2, command=2, adu_length=94),
        2,
        (
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "component_type": (42, "点型光电感烟火灾探测器"), "address": 0x00000102,
             "state": (0x0003, ("normal", "fire_alarm")), "description": "三层东走廊感烟",
             "time": at(23)},
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "component_type": (23, "手动火灾报警按钮"), "address": 0x00030007,
             "state": (0x01FC, ("fault", "disabled", "supervisory", "started", "feedback",
                                "delay", "power_fault")),
             "description": "手报 7-3", "time": at(24)},
        ),
    ),
    Case(
        "type 3, component analog values: every analog type of 表6",
        "表3 type 3; §8.2.1, 图20 (object: 10 bytes + time), 图8; 表6 (signed int16, "
        "value = raw x resolution); notes §3.1, §4.8",
        """
        40 40 03 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        c2 00                  # ADU length 194
        02
        03 0c                  # type mark 3, 12 objects; each sampled at 15:09:25
        01 01 01 01 00 00 00   01 11 00   19 09 0f 0e 03 19   # event count, raw 17
        0b 01 5c 02 00 00 00   02 d2 04   19 09 0f 0e 03 19   # height, raw 1234
        01 01 12 03 00 00 00   03 56 f5   19 09 0f 0e 03 19   # temperature, raw -2730
        0c 01 63 04 00 00 00   04 0c 00   19 09 0f 0e 03 19   # pressure MPa, raw 12
        0c 01 63 05 00 00 00   05 ac 0d   19 09 0f 0e 03 19   # pressure kPa, raw 3500
        01 01 0b 06 00 00 00   06 ff 00   19 09 0f 0e 03 19   # gas, raw 255
        01 01 52 07 00 00 00   07 00 7d   19 09 0f 0e 03 19   # time, raw 32000
        01 01 10 08 00 00 00   08 98 08   19 09 0f 0e 03 19   # voltage, raw 2200
        01 01 11 78 56 34 12   09 0f 00   19 09 0f 0e 03 19   # current, raw 15
        0c 01 60 0a 00 00 00   0a fa 00   19 09 0f 0e 03 19   # flow, raw 250
        12 01 6f 0b 00 00 00   0b 0d 07   19 09 0f 0e 03 19   # air volume, raw 1805
        12 01 68 0c 00 00 00   0c 14 00   19 09 0f 0e 03 19   # wind speed, raw 20
        2d 23 23               # checksum, ##
        """,
        Header(serial=3, command=2, adu_length=194),
        3,
        (
            # 表6 unit of type 1 is 件 (a count); firegate writes a count without a unit.
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "component_type": (1, "火灾报警控制器"), "address": 1,
             "analog_type": (1, "事件计数"), "raw_value": 17, "value": 17.0, "unit": "",
             "time": at(25)},
            {"system_type": HYDRANT_SYSTEM, "system_address": 1,
             "component_type": (92, "消防水箱"), "address": 2,
             "analog_type": (2, "高度"), "raw_value": 1234, "value": 12.34, "unit": "m",
             "time": at(25)},
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "component_type": (18, "测温式电气火灾监控探测器"), "address": 3,
             "analog_type": (3, "温度"), "raw_value": -2730, "value": -273.0, "unit": "°C",
             "time": at(25)},
            {"system_type": SPRINKLER_SYSTEM, "system_address": 1,
             "component_type": (99, "压力开关"), "address": 4,
             "analog_type": (4, "压力"), "raw_value": 12, "value": 1.2, "unit": "MPa",
             "time": at(25)},
            {"system_type": SPRINKLER_SYSTEM, "system_address": 1,
             "component_type": (99, "压力开关"), "address": 5,
             "analog_type": (5, "压力"), "raw_value": 3500, "value": 350.0, "unit": "kPa",
             "time": at(25)},
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "component_type": (11, "点型可燃气体探测器"), "address": 6,
             "analog_type": (6, "气体浓度"), "raw_value": 255, "value": 25.5, "unit": "%LEL",
             "time": at(25)},
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "component_type": (82, "消防电气控制装置"), "address": 7,
             "analog_type": (7, "时间"), "raw_value": 32000, "value": 32000.0, "unit": "s",
             "time": at(25)},
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "component_type": (16, "电气火灾监控报警器"), "address": 8,
             "analog_type": (8, "电压"), "raw_value": 2200, "value": 220.0, "unit": "V",
             "time": at(25)},
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "component_type": (17, "剩余电流式电气火灾监控探测器"), "address": 0x12345678,
             "analog_type": (9, "电流"), "raw_value": 15, "value": 1.5, "unit": "A",
             "time": at(25)},
            {"system_type": SPRINKLER_SYSTEM, "system_address": 1,
             "component_type": (96, "水流指示器"), "address": 10,
             "analog_type": (10, "流量"), "raw_value": 250, "value": 25.0, "unit": "L/s",
             "time": at(25)},
            {"system_type": SMOKE_CONTROL_SYSTEM, "system_address": 1,
             "component_type": (111, "防烟排烟风机"), "address": 11,
             "analog_type": (11, "风量"), "raw_value": 1805, "value": 180.5,
             "unit": "m³/min", "time": at(25)},
            {"system_type": SMOKE_CONTROL_SYSTEM, "system_address": 1,
             "component_type": (104, "通风空调"), "address": 12,
             "analog_type": (12, "风速"), "raw_value": 20, "value": 20.0, "unit": "m/s",
             "time": at(25)},
        ),
    ),
    Case(
        "type 4, facility operation records",
        "表3 type 4; §8.2.1, 图21 (object: 4 bytes + time), 图9 (operation flags); "
        "notes §3.1, §4.6",
        """
        40 40 04 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        16 00                  # ADU length 22
        02
        04 02                  # type mark 4, 2 objects
        01 01 23 07            #   system type 1, address 1, flags 0x23 (bits 0, 1, 5), operator 7
        00 08 0f 0e 03 19      #   at 15:08:00
        01 01 5c ff            #   flags 0x5c (bits 2, 3, 4, 6), operator 255
        1e 08 0f 0e 03 19      #   at 15:08:30
        24 23 23               # checksum, ##
        """,
        Header(serial=4, command=2, adu_length=22),
        4,
        (
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "flags": (0x23, ("reset", "silence", "acknowledge")), "operator": 7,
             "time": at(0, minute=8)},
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "flags": (0x5C, ("manual_alarm", "alarm_cleared", "self_test", "test")),
             "operator": 255, "time": at(30, minute=8)},
        ),
    ),
    Case(
        "type 5, facility software version",
        "表3 type 5; §8.2.1, 图22 (object: 4 bytes, no time label), 图10; notes §3.1",
        """
        40 40 05 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        06 00                  # ADU length 6
        02
        05 01                  # type mark 5, 1 object
        01 01 02 11            #   system type 1, address 1, main version 2, minor version 17
        01 23 23               # checksum, ##
        """,
        Header(serial=5, command=2, adu_length=6),
        5,
        ({"system_type": FIRE_ALARM_SYSTEM, "system_address": 1, "major": 2, "minor": 17},),
    ),
    Case(
        "type 6, facility system configuration",
        "表3 type 6; §8.2.1, 图23 (object: 3 bytes + description of L bytes, L 0-255, "
        "GB 18030, no time label), 图11; notes §3.1",
        """
        40 40 06 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        18 00                  # ADU length 24
        02
        06 02                  # type mark 6, 2 objects
        01 01 10               #   system type 1, address 1, 16 bytes of text:
        4a 42 2d 54 47 2d 32 30 30 30 20 32 bb d8 c2 b7   # JB-TG-2000 2回路
        0b 02 00               #   system type 11, address 2, no text (L = 0)
        c1 23 23               # checksum, ##
        """,
        Header(serial=6, command=2, adu_length=24),
        6,
        (
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "description": "JB-TG-2000 2回路"},
            {"system_type": HYDRANT_SYSTEM, "system_address": 2, "description": ""},
        ),
    ),
    Case(
        "type 7, component configuration",
        "表3 type 7; §8.2.1, 图24 (object: 38 bytes, no time label), 图12; 表4, 表5; "
        "notes §3.1",
        """
        40 40 07 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        4e 00                  # ADU length 78
        02
        07 02                  # type mark 7, 2 objects
        01 01 1f 05 01 00 00   #   system type 1, address 1, component type 31, 0x00000105
        42 31 20 b3 f8 b7 bf b8 d0 ce c2                 # B1 厨房感温
        00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00   # NUL padding to 31
        13 01 75 0a 00 00 00   #   system type 19, address 1, component type 117, 0x0000000a
        31 46 20 be ed c1 b1 c3 c5                       # 1F 卷帘门
        00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00   # NUL padding
        fb 23 23               # checksum, ##
        """,
        Header(serial=7, command=2, adu_length=78),
        7,
        (
            {"system_type": FIRE_ALARM_SYSTEM, "system_address": 1,
             "component_type": (31, "点型感温火灾探测器"), "address": 0x105,
             "description": "B1 厨房感温"},
            {"system_type": DOOR_SHUTTER_SYSTEM, "system_address": 1,
             "component_type": (117, "防火卷帘控制器"), "address": 10,
             "description": "1F 卷帘门"},
        ),
    ),
    Case(
        "type 8, facility system time",
        "表3 type 8; §8.2.1, 图25 (object: 2 bytes + the facility's clock as a time label); "
        "notes §3.1",
        """
        40 40 08 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        0a 00                  # ADU length 10
        02
        08 01                  # type mark 8, 1 object
        01 01                  #   system type 1, address 1
        3b 08 0f 0e 03 19      #   its clock: 2025-03-14 15:08:59
        74 23 23               # checksum, ##
        """,
        Header(serial=8, command=2, adu_length=10),
        8,
        ({"system_type": FIRE_ALARM_SYSTEM, "system_address": 1, "clock": at(59, minute=8)},),
    ),
    Case(
        "type 21, UITD running state",
        "表3 type 21; §8.2.1, 图26 (object: 1 byte + time), 图13 (state bits); "
        "notes §3.1, §4.5",
        """
        40 40 09 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        09 00                  # ADU length 9
        02
        15 01                  # type mark 21, 1 object
        7e                     #   state 0x7e (bits 1-6; bit 0 clear = test)
        0a 09 0f 0e 03 19      #   at 15:09:10
        cd 23 23               # checksum, ##
        """,
        Header(serial=9, command=2, adu_length=9),
        21,
        ({"state": (0x7E, ("fire_alarm", "fault", "mains_power_fault", "backup_power_fault",
                           "centre_link_fault", "monitoring_line_fault")),
          "time": at(10)},),
    ),
    Case(
        "type 21, UITD running state, normal monitoring",
        "表3 type 21; §8.2.1, 图26, 图13 bit 0 (1 = 正常监视状态); notes §4.5",
        """
        40 40 0e 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        09 00                  # ADU length 9
        02
        15 01                  # type mark 21, 1 object
        01                     #   state 0x01 (bit 0: normal monitoring)
        0d 09 0f 0e 03 19      #   at 15:09:13
        58 23 23               # checksum, ##
        """,
        Header(serial=14, command=2, adu_length=9),
        21,
        ({"state": (0x01, ("normal",)), "time": at(13)},),
    ),
    Case(
        "type 24, UITD operation records",
        "表3 type 24; §8.2.1, 图27 (object: 2 bytes + time), 图14 (flags; bit 5 is "
        "查岗应答, not 确认 as in 图9); notes §3.1, §4.7",
        """
        40 40 0a 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        12 00                  # ADU length 18
        02
        18 02                  # type mark 24, 2 objects
        1f 03                  #   flags 0x1f (bits 0-4), operator 3
        0b 09 0f 0e 03 19      #   at 15:09:11
        60 00                  #   flags 0x60 (bits 5, 6), operator 0
        0c 09 0f 0e 03 19      #   at 15:09:12
        2e 23 23               # checksum, ##
        """,
        Header(serial=10, command=2, adu_length=18),
        24,
        (
            {"flags": (0x1F, ("reset", "silence", "manual_alarm", "alarm_cleared",
                              "self_test")),
             "operator": 3, "time": at(11)},
            {"flags": (0x60, ("check_post_answer", "test")), "operator": 0, "time": at(12)},
        ),
    ),
    Case(
        "type 25, UITD software version",
        "表3 type 25; §8.2.1, 图28 (object: 2 bytes, no time label), 图15; notes §3.1",
        """
        40 40 0b 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        04 00                  # ADU length 4
        02
        19 01                  # type mark 25, 1 object
        01 04                  #   main version 1, minor version 4
        09 23 23               # checksum, ##
        """,
        Header(serial=11, command=2, adu_length=4),
        25,
        ({"major": 1, "minor": 4},),
    ),
    Case(
        "type 26, UITD configuration",
        "表3 type 26; §8.2.1, 图29 (object: length L + L bytes GB 18030, no time label), "
        "图16; notes §3.1. Version bytes 01 01 (user version 1, as Hikvision sends)",
        """
        40 40
        0c 00                  # serial 12
        01 01                  # version: main 1, user 1
        1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        12 00                  # ADU length 18
        02
        1a 01                  # type mark 26, 1 object
        0f                     #   15 bytes of text:
        b4 ab ca e4 d7 b0 d6 c3 20 55 49 54 44 2d 38      # 传输装置 UITD-8
        0c 23 23               # checksum, ##
        """,
        Header(serial=12, command=2, adu_length=18, version=(1, 1)),
        26,
        ({"description": "传输装置 UITD-8"},),
    ),
    Case(
        "type 28, UITD system time, as the response to a read (type 88)",
        "表3 type 28; §8.2.1, 图30 (object: the UITD's clock as a time label); 表2 "
        "command 5 (应答) with the matching upload type (notes §5)",
        """
        40 40
        02 01                  # serial 0x0102 = 258 (low byte first), the request's
        01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        08 00                  # ADU length 8
        05                     # command 5, response
        1c 01                  # type mark 28, 1 object
        3a 3b 17 1f 0c 19      #   its clock: 2025-12-31 23:59:58
        d6 23 23               # checksum, ##
        """,
        Header(serial=258, command=5, adu_length=8),
        28,
        ({"clock": datetime(2025, 12, 31, 23, 59, 58)},),
    ),
)

RESERVED_UPLOAD = """
        40 40 0d 00 01 00 1a 09 0f 0e 03 19
        79 03 00 00 00 00 00 00 00 00 00 00
        04 00 02               # ADU length 4, command 2
        1b 01 aa bb            # type mark 27 (表3: reserved, upload range), 1 object, 2 bytes
        6d 23 23               # checksum, ##
"""


def meaning(obj: InfoObject) -> Meaning:
    """What a decoded object says, as plain data: every field the object has (so a field the
    hand-written meaning does not name fails the comparison), code values with the standard's
    name, flag words with the names of their set bits, time labels as datetimes."""
    out: Meaning = {}
    assert dataclasses.is_dataclass(obj)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name == "description_raw" or (f.name == "time" and value is None):
            continue
        if f.name == "system_type":
            out[f.name] = (value, SYSTEM_TYPES[value].zh)
        elif f.name == "component_type":
            out[f.name] = (value, COMPONENT_TYPES[value].zh)
        elif f.name == "analog_type":
            out[f.name] = (value, ANALOG_TYPES[value].zh)
        elif isinstance(value, IntFlag):
            out[f.name] = (int(value), tuple(flag_names(value)))
        elif isinstance(value, TimeLabel):
            out[f.name] = value.to_datetime()
        elif isinstance(value, ComponentAddress):
            out[f.name] = value.value
        else:
            out[f.name] = value
    if isinstance(obj, AnalogValue):
        out["value"], out["unit"] = obj.value, obj.unit
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hand_written_frame_decodes_to_its_meaning(case: Case) -> None:
    raw = case.raw
    check_by_hand(raw)
    frame = decode_frame(raw)
    h = case.header
    assert (frame.serial, frame.command, frame.version) == (h.serial, h.command, h.version)
    assert frame.time.to_datetime() == h.time
    assert address_to_int(frame.source) == h.source
    assert address_to_int(frame.destination) == h.destination
    assert len(frame.adu) == h.adu_length
    adu = decode_adu(frame.adu)
    assert isinstance(adu, ApplicationData)
    assert adu.type_mark == case.type_mark
    assert [meaning(o) for o in adu.objects] == list(case.objects), case.cites


def test_every_upload_type_of_the_codec_has_a_hand_written_case() -> None:
    uploads = sorted(mark for mark, spec in SPECS.items() if spec.direction == "up")
    # 表3: 1-8 facility information, 21, 24, 25, 26, 28 UITD information (22, 23, 27 reserved).
    assert uploads == [1, 2, 3, 4, 5, 6, 7, 8, 21, 24, 25, 26, 28]
    assert sorted({c.type_mark for c in CASES}) == uploads
    assert {o["analog_type"] for c in CASES for o in c.objects if "analog_type" in o} == {
        (1, "事件计数"), (2, "高度"), (3, "温度"), (4, "压力"), (5, "压力"), (6, "气体浓度"),
        (7, "时间"), (8, "电压"), (9, "电流"), (10, "流量"), (11, "风量"), (12, "风速")}


# The bits each figure defines (the "=1" column), as named in the hand-written meanings.
FIGURE_BITS: dict[str, tuple[type[IntFlag], int, tuple[str, ...]]] = {
    "图6 system state": (SystemState, 1, (
        "normal", "fire_alarm", "fault", "disabled", "supervisory", "started", "feedback",
        "delay", "mains_power_fault", "backup_power_fault", "bus_fault", "manual_mode",
        "config_changed", "reset")),
    "图7 component state": (ComponentState, 2, (
        "normal", "fire_alarm", "fault", "disabled", "supervisory", "started", "feedback",
        "delay", "power_fault")),
    "图9 facility operation": (FacilityOperation, 4, (
        "reset", "silence", "manual_alarm", "alarm_cleared", "self_test", "acknowledge",
        "test")),
    "图13 UITD state": (UitdState, 21, (
        "normal", "fire_alarm", "fault", "mains_power_fault", "backup_power_fault",
        "centre_link_fault", "monitoring_line_fault")),
    "图14 UITD operation": (UitdOperation, 24, (
        "reset", "silence", "manual_alarm", "alarm_cleared", "self_test", "check_post_answer",
        "test")),
}


@pytest.mark.parametrize("figure", FIGURE_BITS)
def test_every_defined_bit_is_set_in_some_case_and_named_by_its_position(figure: str) -> None:
    cls, mark, names = FIGURE_BITS[figure]
    # Bit n of the figure has the n-th name: a decoded word with only that bit set says so.
    assert [tuple(flag_names(cls(1 << bit))) for bit in range(len(names))] == \
        [(n,) for n in names]
    seen: set[str] = set()
    for o in (o for c in CASES if c.type_mark == mark for o in c.objects):
        word = o.get("state", o.get("flags"))
        assert isinstance(word, tuple)
        seen.update(word[1])
    assert seen == set(names), "the cases above set every bit the figure defines"


def test_reserved_upload_type_is_kept_as_bytes() -> None:
    raw = hand_hex(RESERVED_UPLOAD)
    check_by_hand(raw)
    frame = decode_frame(raw)
    assert frame.command == 2 and frame.serial == 13
    assert decode_adu(frame.adu) == RawApplicationData(27, 1, b"\xaa\xbb")


def test_hand_written_frames_as_one_stream() -> None:
    # The same bytes back to back, as a serial line delivers them, in chunks of 7 bytes.
    stream = b"".join(c.raw for c in CASES) + hand_hex(RESERVED_UPLOAD)
    decoder = StreamDecoder()
    got = [item for i in range(0, len(stream), 7) for item in decoder.feed(stream[i:i + 7])]
    assert all(isinstance(f, Frame) for f in got), got
    assert [f.serial for f in got if isinstance(f, Frame)] == \
        [c.header.serial for c in CASES] + [13]
