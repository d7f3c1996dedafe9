"""The reference notes' example frames K1-K8 decode to their documented meaning (§6)."""

from __future__ import annotations

from datetime import datetime

from protocols.gb26875 import (
    AnalogValue,
    ApplicationData,
    CheckPost,
    ClockSync,
    Command,
    Reserved,
    UitdOperation,
    UitdOperationRecord,
    UitdState,
    UitdStatus,
    address_to_int,
    checksum,
    decode_adu,
    decode_frame,
    encode_adu,
    encode_frame,
)

from .golden import load

K = dict(zip(("K1", "K2", "K3", "K4", "K5", "K6", "K7", "K8"), load("reference-examples").frames,
             strict=True))
T0 = datetime(2024, 1, 2, 3, 4, 5)


def _adu(name: str) -> ApplicationData:
    adu = decode_adu(decode_frame(K[name]).adu)
    assert isinstance(adu, ApplicationData)
    return adu


def test_k1_clock_sync_in_command_1() -> None:
    f = decode_frame(K["K1"])
    assert (f.serial, f.command, f.version) == (2, Command.CONTROL, (1, 0))
    assert f.time.to_datetime() == T0
    assert f.source == bytes(6) and address_to_int(f.destination) == 0x0379
    adu = _adu("K1")
    assert adu.type_mark == 90 and adu.objects == (ClockSync(f.time),)
    assert len(f.adu) == 8, "type 90 has no reserved byte before the time (pitfall §7)"


def test_k2_confirm_echoes_serial_swaps_addresses() -> None:
    k1, k2 = decode_frame(K["K1"]), decode_frame(K["K2"])
    assert k2.command == Command.CONFIRM and k2.adu == b""
    assert k2.serial == k1.serial
    assert (k2.source, k2.destination) == (k1.destination, k1.source)
    assert k2.time.to_datetime() == datetime(2024, 1, 2, 3, 4, 6)
    assert decode_adu(k2.adu) is None


def test_k3_read_uitd_state_with_zero_checksum() -> None:
    f = decode_frame(K["K3"])
    assert f.command == Command.REQUEST and K["K3"][-3] == 0 and checksum(K["K3"][2:-3]) == 0
    assert _adu("K3").type_mark == 81 and _adu("K3").objects == (Reserved(0),)


def test_k4_response_carries_type_21() -> None:
    f = decode_frame(K["K4"])
    assert f.command == Command.RESPONSE and f.serial == decode_frame(K["K3"]).serial
    (obj,) = _adu("K4").objects
    assert obj == UitdStatus(UitdState.NORMAL, f.time)


def test_k5_check_post_ten_minutes() -> None:
    assert decode_frame(K["K5"]).command == Command.CONTROL
    assert _adu("K5").type_mark == 91 and _adu("K5").objects == (CheckPost(10),)


def test_k6_check_post_answer_bit5() -> None:
    (obj,) = _adu("K6").objects
    assert isinstance(obj, UitdOperationRecord)
    assert obj.flags == UitdOperation.CHECK_POST_ANSWER and obj.operator == 1
    assert obj.time is not None and obj.time.to_datetime() == datetime(2024, 1, 2, 3, 5, 0)


def test_k7_k8_signed_scaled_temperature() -> None:
    for name, value, raw in (("K7", 25.6, 256), ("K8", -5.0, -50)):
        (obj,) = _adu(name).objects
        assert isinstance(obj, AnalogValue)
        assert (obj.system_type, obj.system_address, obj.component_type) == (1, 1, 31)
        assert obj.address.value == 0x102 and obj.address.raw == b"\x02\x01\x00\x00"
        assert obj.analog_type == 3 and obj.raw_value == raw
        assert obj.value == value and obj.unit == "°C"


def test_reference_frames_reencode_byte_for_byte() -> None:
    for raw in K.values():
        f = decode_frame(raw)
        assert encode_frame(f) == raw
        adu = decode_adu(f.adu)
        assert adu is None or encode_adu(adu) == f.adu
