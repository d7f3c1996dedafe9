"""Application data: every upload and downstream type, both directions, and the quirks."""

from __future__ import annotations

import pytest

from protocols.gb26875 import (
    EXTRA_TIME_LABELS,
    NO_TIME_LABELS,
    SPECS,
    STANDARD,
    AnalogValue,
    ApplicationData,
    ComponentAddress,
    ComponentConfig,
    ComponentState,
    ComponentStatus,
    DecodeError,
    EncodeError,
    ErrorKind,
    FacilityConfig,
    FacilitySoftwareVersion,
    FacilityTime,
    Profile,
    RawApplicationData,
    SystemState,
    SystemStatus,
    TimeLabel,
    UitdConfig,
    decode_adu,
    decode_frame,
    encode_adu,
)

from .golden import load

T = TimeLabel(30, 15, 9, 21, 11, 26)
UP = (1, 2, 3, 4, 5, 6, 7, 8, 21, 24, 25, 26, 28)
DOWN = (61, 62, 63, 64, 65, 66, 67, 68, 81, 84, 85, 86, 88, 89, 90, 91)


def _decoded(case: str) -> list[ApplicationData]:
    out = []
    for raw in load(case).frames:
        adu = decode_adu(decode_frame(raw).adu)
        assert isinstance(adu, ApplicationData)
        out.append(adu)
    return out


def test_registry_covers_every_type_of_the_standard() -> None:
    assert sorted(SPECS) == sorted(UP + DOWN)
    assert [a.type_mark for a in _decoded("every-upload-type")] == list(UP)
    assert [a.type_mark for a in _decoded("every-downstream-type")] == list(DOWN)


@pytest.mark.parametrize("case", ["every-upload-type", "every-downstream-type"])
def test_every_type_roundtrips_both_ways(case: str) -> None:
    for raw in load(case).frames:
        f = decode_frame(raw)
        adu = decode_adu(f.adu)
        assert adu is not None
        assert encode_adu(adu) == f.adu  # encode(decode(x)) == x
        assert decode_adu(encode_adu(adu)) == adu  # decode(encode(obj)) == obj


def test_object_sizes_match_the_standard() -> None:
    # §3.1: type 1 = 4+6, 2 = 40+6, 3 = 10+6, 4 = 4+6, 5 = 4, 6 = 3+L, 7 = 38, 8 = 8,
    # 21 = 1+6, 24 = 2+6, 25 = 2, 26 = 1+L, 28 = 6.
    sizes = {1: 10, 2: 46, 3: 16, 4: 10, 5: 4, 7: 38, 8: 8, 21: 7, 24: 8, 25: 2, 28: 6}
    for raw in load("every-upload-type").frames:
        adu = decode_frame(raw).adu
        mark, count = adu[0], adu[1]
        if mark in sizes:
            assert len(adu) == 2 + count * sizes[mark], mark
    six = decode_frame(load("every-upload-type").frames[5]).adu
    assert six[0] == 6 and len(six) == 2 + 3 + six[4]


def test_fields_of_upload_objects() -> None:
    by_type = {a.type_mark: a.objects for a in _decoded("every-upload-type")}
    (s1, s2) = by_type[1]
    assert isinstance(s1, SystemStatus) and SystemState.FIRE_ALARM in s1.state
    assert isinstance(s2, SystemStatus) and s2.system_type == 11
    (comp,) = by_type[2]
    assert isinstance(comp, ComponentStatus)
    assert comp.description == "3F 东侧走廊" and comp.component_type == 42
    assert comp.state == ComponentState.NORMAL | ComponentState.FIRE_ALARM
    assert comp.address.value == 0x01000C and comp.address.loop == 12 and comp.address.point == 1
    assert comp.time == T
    a1, a2 = by_type[3]
    assert isinstance(a1, AnalogValue) and (a1.value, a1.unit) == (312.5, "kPa")
    assert isinstance(a2, AnalogValue) and (a2.value, a2.unit) == (2.45, "m")
    assert by_type[5] == (FacilitySoftwareVersion(1, 1, 2, 17),)
    (cfg,) = by_type[6]
    assert isinstance(cfg, FacilityConfig)
    assert cfg.description == "JB-QB-GST200 火灾报警控制器 2回路"
    (cc,) = by_type[7]
    assert isinstance(cc, ComponentConfig) and cc.description == "B1 防火门 常闭"
    assert by_type[8] == (FacilityTime(1, 1, TimeLabel(0, 14, 9, 21, 11, 26)),)
    assert by_type[26] == (UitdConfig("用户信息传输装置 UITD-100"),)


def test_description_cut_at_first_nul_and_trimmed_keeps_raw() -> None:
    junk, spaces = (decode_frame(f) for f in load("dialects").frames[:2])
    adu = decode_adu(junk.adu)
    assert isinstance(adu, ApplicationData)
    (obj,) = adu.objects
    assert isinstance(obj, ComponentStatus) and obj.description == "1号接口板1回路1号"
    assert encode_adu(adu) == junk.adu, "junk after the NUL survives re-encoding"
    adu2 = decode_adu(spaces.adu)
    assert isinstance(adu2, ApplicationData)
    assert adu2.objects[0] == ComponentStatus(1, 1, 42, ComponentAddress.from_int(4),
                                              ComponentState.NORMAL, "", T)


def test_description_gb18030_four_byte_characters_and_bad_bytes() -> None:
    addr = ComponentAddress.from_int(1)
    obj = ComponentStatus(1, 1, 42, addr, ComponentState.NORMAL, "𠀀楼 €", T)
    adu = ApplicationData(2, (obj,))
    assert decode_adu(encode_adu(adu)) == adu
    bad = bytearray(encode_adu(adu))
    bad[2 + 9:2 + 11] = b"\x81\x20"  # an invalid GB 18030 sequence
    (got,) = decode_adu(bytes(bad)).objects  # type: ignore[union-attr]
    assert isinstance(got, ComponentStatus) and "\ufffd" in got.description


def test_description_too_long_is_an_encode_error() -> None:
    obj = ComponentStatus(1, 1, 42, ComponentAddress.from_int(1), ComponentState.NORMAL,
                          "很" * 16, T)  # 32 bytes in GB 18030
    with pytest.raises(EncodeError, match="31"):
        encode_adu(ApplicationData(2, (obj,)))


def test_analog_signed_int16_and_unknown_types_raw() -> None:
    lo = AnalogValue(1, 1, 31, ComponentAddress.from_int(1), 3, -2730)
    assert lo.value == -273.0
    hi = AnalogValue.from_value(1, 1, 31, ComponentAddress.from_int(1), 3, 3200.0)
    assert hi.raw_value == 32000
    (user,) = decode_adu(decode_frame(load("dialects").frames[5]).adu).objects  # type: ignore[union-attr]
    assert isinstance(user, AnalogValue) and user.analog_type == 0x9A
    assert (user.value, user.unit) == (-1234.0, "")
    with pytest.raises(EncodeError):
        encode_adu(ApplicationData(3, (AnalogValue(1, 1, 31, ComponentAddress.from_int(1), 3,
                                                   40000),)))


def test_unknown_type_marks_and_short_adus_are_raw_never_errors() -> None:
    for mark in (0, 9, 22, 27, 60, 69, 87, 92, 127, 128, 200, 254, 255):
        adu = bytes((mark, 3, 1, 2, 3))
        got = decode_adu(adu)
        assert got == RawApplicationData(mark, 3, b"\x01\x02\x03")
        assert encode_adu(got) == adu
    assert decode_adu(b"\x16") == RawApplicationData(0x16, None)
    assert encode_adu(RawApplicationData(0x16, None)) == b"\x16"
    assert decode_adu(b"") is None


def test_object_size_mismatch_is_typed() -> None:
    good = encode_adu(ApplicationData(1, (SystemStatus(1, 1, SystemState.NORMAL, T),)))
    with pytest.raises(DecodeError) as err:
        decode_adu(good + b"\x00")
    assert err.value.kind is ErrorKind.OBJECT_SIZE
    with pytest.raises(DecodeError) as err:
        decode_adu(b"\x06\x01\x01\x01\x09abc")  # length byte 9, only 3 bytes of text
    assert err.value.kind is ErrorKind.OBJECT_SIZE


def test_missing_time_labels_detected_by_size() -> None:
    no_tl = decode_frame(load("dialects").frames[3])
    adu = decode_adu(no_tl.adu)
    assert isinstance(adu, ApplicationData)
    (obj,) = adu.objects
    assert isinstance(obj, ComponentStatus) and obj.time is None
    assert obj.description == "2F 电梯前室"
    strict = Profile(name="strict", tolerant_object_sizes=False)
    with pytest.raises(DecodeError):
        decode_adu(no_tl.adu, strict)
    assert decode_adu(no_tl.adu, NO_TIME_LABELS) == adu


def test_extra_time_labels_profile() -> None:
    v = FacilitySoftwareVersion(1, 1, 3, 0, T)
    adu = ApplicationData(5, (v,))
    raw = encode_adu(adu)
    assert len(raw) == 2 + 4 + 6
    assert decode_adu(raw, EXTRA_TIME_LABELS) == adu
    assert decode_adu(raw, STANDARD) == adu  # tolerant size detection finds it too


def test_encoder_rules() -> None:
    ref = SystemStatus(1, 1, SystemState.NORMAL, T)
    with pytest.raises(EncodeError, match="time label"):
        encode_adu(ApplicationData(1, (ref, SystemStatus(1, 2, SystemState.NORMAL))))
    with pytest.raises(EncodeError, match="at most 1"):
        encode_adu(ApplicationData(5, (FacilitySoftwareVersion(1, 1, 1, 0),) * 2))
    with pytest.raises(EncodeError, match="carries"):
        encode_adu(ApplicationData(1, (FacilitySoftwareVersion(1, 1, 1, 0),)))
    with pytest.raises(EncodeError, match="512"):
        encode_adu(ApplicationData(1, (ref,) * 60), max_adu=512)


def test_component_address_views() -> None:
    a = ComponentAddress(b"\x0c\x00\x01\x00")
    assert (a.value, a.loop, a.point, str(a)) == (0x1000C, 12, 1, "0x0001000c")
    assert ComponentAddress.from_loop_point(12, 1) == a == ComponentAddress.from_int(0x1000C)
    with pytest.raises(ValueError):
        ComponentAddress(b"\x00")
