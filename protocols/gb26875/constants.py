"""Frame-level constants and the command byte (GB/T 26875.3-2011 §6.6, 表1 and 表2)."""

from __future__ import annotations

from enum import IntEnum

START = b"@@"  # 启动符, 0x40 0x40 (表1 bytes 1-2)
END = b"##"  # 结束符, 0x23 0x23 (表1, the last two bytes); not 0x35 0x35 (decimal 35 == 0x23)
HEADER_LEN = 27  # start marker (2) + control unit (25): 表1 bytes 1-27
TRAILER_LEN = 3  # checksum (1) + end marker (2)
MIN_FRAME_LEN = HEADER_LEN + TRAILER_LEN  # 30: an empty ADU (confirm/deny)
STD_MAX_ADU = 1024  # 表1: 应用数据单元长度 "不应大于1024"
ADDRESS_LEN = 6  # 源地址 / 目的地址
TIME_LABEL_LEN = 6  # §8.2.2, 图17
MAX_SERIAL = 0xFFFF


class Command(IntEnum):
    """命令字节 (表2). Values 7-127 are reserved and 128-255 user-defined; both decode as ints."""

    RESERVED = 0
    CONTROL = 1  # 控制命令, e.g. 时间同步 (type 90)
    SEND_DATA = 2  # 发送数据: uploads of fire alarms and facility state
    CONFIRM = 3  # 确认
    REQUEST = 4  # 请求: queries (types 61-88)
    RESPONSE = 5  # 应答
    DENY = 6  # 否认

    @property
    def zh(self) -> str:
        """The standard's Chinese name."""
        return _COMMAND_ZH[self]


_COMMAND_ZH = {
    Command.RESERVED: "预留",
    Command.CONTROL: "控制命令",
    Command.SEND_DATA: "发送数据",
    Command.CONFIRM: "确认",
    Command.REQUEST: "请求",
    Command.RESPONSE: "应答",
    Command.DENY: "否认",
}


def command_name(value: int) -> str:
    """A readable name for any command byte, including reserved and user-defined values."""
    try:
        return Command(value).name.lower()
    except ValueError:
        return f"user_defined_{value}" if value >= 128 else f"reserved_{value}"
