"""GB/T 26875.3-2011 (城市消防远程监控系统 第3部分: 报警传输网络通信协议), sans-I/O.

The first Python implementation of the protocol between a user information transmission device
(UITD, 用户信息传输装置) or fire panel gateway and a monitoring centre. Bytes in, typed frames and
objects or typed errors out; no sockets, serial ports, threads or asyncio inside.

Quick start::

    from protocols.gb26875 import StreamDecoder, decode_adu

    decoder = StreamDecoder()
    for item in decoder.feed(chunk_from_serial_port):
        if isinstance(item, DecodeError):
            ...  # counted in decoder.errors by item.kind
        else:
            data = decode_adu(item.adu)  # ApplicationData with typed objects

Layers: :mod:`.frame` (frame and checksum), :mod:`.stream` (resynchronising decoder),
:mod:`.adu` (type marks and objects registry), :mod:`.objects` / :mod:`.requests` (information
objects), :mod:`.tables` (code tables), :mod:`.profile` (dialects), :mod:`.session` (confirm,
deny, resend rules), :mod:`.render` (plain data for JSON and display).
"""

from protocols.gb26875.adu import (
    RESPONSE_TYPE,
    SPECS,
    Adu,
    ApplicationData,
    RawApplicationData,
    TypeMark,
    TypeSpec,
    decode_adu,
    encode_adu,
    type_name,
)
from protocols.gb26875.constants import Command, command_name
from protocols.gb26875.errors import DecodeError, EncodeError, ErrorKind
from protocols.gb26875.fields import ComponentAddress, decode_text
from protocols.gb26875.frame import (
    Frame,
    address_from_int,
    address_to_int,
    checksum,
    decode_frame,
    encode_frame,
    peek_header,
)
from protocols.gb26875.objects import (
    AnalogValue,
    ComponentConfig,
    ComponentStatus,
    FacilityConfig,
    FacilityOperationRecord,
    FacilitySoftwareVersion,
    FacilityTime,
    InfoObject,
    SystemStatus,
    UitdConfig,
    UitdOperationRecord,
    UitdSoftwareVersion,
    UitdStatus,
    UitdTime,
)
from protocols.gb26875.profile import (
    DAHUA,
    EXTRA_TIME_LABELS,
    HANDSHAKE,
    HIKVISION,
    NO_TIME_LABELS,
    PROFILES,
    STANDARD,
    Profile,
    get_profile,
)
from protocols.gb26875.requests import (
    CheckPost,
    ClockSync,
    ComponentRef,
    ReadOperations,
    ReadUitdOperations,
    Reserved,
    SystemRef,
)
from protocols.gb26875.session import (
    Completed,
    DeliveryMemory,
    Failed,
    Incoming,
    ProtocolError,
    Resend,
    Session,
    SessionEvent,
    Unmatched,
)
from protocols.gb26875.stream import StreamDecoder
from protocols.gb26875.tables import (
    ANALOG_TYPES,
    COMPONENT_TYPES,
    SYSTEM_TYPES,
    ComponentState,
    FacilityOperation,
    SystemState,
    UitdOperation,
    UitdState,
)
from protocols.gb26875.timelabel import TimeLabel

__all__ = [
    "ANALOG_TYPES", "COMPONENT_TYPES", "DAHUA", "EXTRA_TIME_LABELS", "HANDSHAKE", "HIKVISION",
    "NO_TIME_LABELS", "PROFILES", "RESPONSE_TYPE", "SPECS", "STANDARD",
    "SYSTEM_TYPES", "Adu", "AnalogValue", "ApplicationData", "CheckPost", "ClockSync", "Command",
    "Completed", "ComponentAddress", "ComponentConfig", "ComponentRef", "ComponentState",
    "ComponentStatus", "DecodeError", "DeliveryMemory", "EncodeError", "ErrorKind",
    "FacilityConfig", "FacilityOperation", "FacilityOperationRecord", "FacilitySoftwareVersion",
    "FacilityTime", "Failed", "Frame", "Incoming", "InfoObject", "Profile", "ProtocolError",
    "RawApplicationData", "ReadOperations", "ReadUitdOperations", "Resend", "Reserved",
    "Session", "SessionEvent", "StreamDecoder", "SystemRef", "SystemState", "SystemStatus",
    "TimeLabel", "TypeMark", "TypeSpec", "UitdConfig", "UitdOperation", "UitdOperationRecord",
    "UitdSoftwareVersion", "UitdState", "UitdStatus", "UitdTime", "Unmatched",
    "address_from_int", "address_to_int", "checksum", "command_name", "decode_adu",
    "decode_frame", "decode_text", "encode_adu", "encode_frame", "get_profile", "peek_header",
    "type_name",
]
