"""Wire events -> GB/T 26875.3 uploads (protocols/upward_records.py), checked against the
mapping the other way (protocols/panel_records.py): a record mapped up, encoded to bytes,
decoded and mapped back gives the same type, source, active flag and description."""

from __future__ import annotations

from datetime import UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.gb26875 import (
    ComponentState,
    ComponentStatus,
    SystemState,
    SystemStatus,
    decode_adu,
    encode_adu,
)
from protocols.gb26875.fields import DESCRIPTION_LEN
from protocols.panel_records import ALARM_CLASS, COMPONENT_FLAGS, SYSTEM_FLAGS, PanelMapper
from protocols.upward_records import (
    NEAREST,
    Target,
    Upload,
    fit_text,
    preferred_target,
    system_config,
    upload,
    word,
)
from protocols.wire import Bus, Event, EventType, Source

PREFIX = "lower"
T2000, T2098 = 946_684_800_000, 4_070_908_800_000

EXACT = {
    "component": [f.event for f in COMPONENT_FLAGS if not f.inverted],
    "system": [f.event for f in SYSTEM_FLAGS if not f.inverted],
}
CONDITIONS = {k: [t for t in v if t is not EventType.RESET] for k, v in EXACT.items()}
OPERATIONS = ["reset", "silence", "manual_alarm", "alarm_cleared", "self_test",
              "acknowledge", "test"]

texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=64)
byte = st.integers(0, 255)


@st.composite
def sources(draw: st.DrawFn, kind: str) -> Source:
    sys_t, sys_a = draw(byte), draw(byte)
    desc = draw(st.none() | texts)
    if kind == "system":
        return Source(f"{PREFIX}/{sys_t}-{sys_a}/system", Bus.GB26875, system_type=sys_t,
                      system_address=sys_a, description=desc)
    ct, ca = draw(byte), draw(st.integers(0, 0xFFFF_FFFF))
    return Source(f"{PREFIX}/{sys_t}-{sys_a}/{ct}-0x{ca:08x}", Bus.GB26875, system_type=sys_t,
                  system_address=sys_a, component_type=ct, component_address=ca,
                  description=desc)


def _map_back(made: Upload, target: Target, src: Source, before: frozenset[str]
              ) -> list[Event]:
    mapper = PanelMapper(PREFIX, f"{PREFIX}/uitd", tz=UTC,
                         previous={src.id: before} if before else None)
    config = system_config(target, src.description)
    if config is not None:  # the system's text goes first (type 6)
        mapper.commit(mapper.map(decode_adu(encode_adu(config)), 1))
    mapped = mapper.map(decode_adu(encode_adu(made.adu)), 2)
    return [r for r in mapped.records if isinstance(r, Event)]


def _expected_description(kind: str, text: str | None) -> str | None:
    fitted = fit_text(text, DESCRIPTION_LEN if kind == "component" else 255)[:64]
    return fitted or None


@settings(max_examples=300, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["component", "system"]),
       active=st.booleans(), at=st.integers(T2000, T2098))
def test_a_record_mapped_up_maps_back_to_itself(data: st.DataObject, kind: str, active: bool,
                                                 at: int) -> None:
    src = data.draw(sources(kind))
    ev_type = data.draw(st.sampled_from(EXACT[kind]))
    if ev_type is EventType.RESET:
        active = True
    before = frozenset(t.value for t in data.draw(st.sets(st.sampled_from(CONDITIONS[kind]))))
    ev = Event(source=src, type=ev_type, active=active, receive_ms=at)
    target = preferred_target(src)
    assert target is not None and target.kind == kind
    made = upload(ev, target, before, tz=UTC)
    if isinstance(made, str):  # nothing to send: the centre would see no change either
        after = before | {ev_type.value} if active else before - {ev_type.value}
        assert word(kind, before) == word(kind, after)
        assert not (active and ev_type in ALARM_CLASS)
        return
    back = _map_back(made, target, src, before)
    same = [r for r in back if r.type is ev_type and r.active is active]
    assert len(same) == 1, back
    got = same[0]
    assert got.source.id == src.id
    assert (got.source.system_type, got.source.system_address, got.source.component_type,
            got.source.component_address) == (src.system_type, src.system_address,
                                              src.component_type, src.component_address)
    assert got.source.description == _expected_description(kind, src.description)
    assert got.source_ms == at // 1000 * 1000  # the time label: whole seconds
    for other in back:  # the rest: a condition still raised, reported again (ALARM_CLASS)
        if other is not got:
            assert other.active and other.type in ALARM_CLASS and other.type.value in before


@settings(max_examples=100, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["component", "system"]), active=st.booleans())
def test_events_without_a_bit_arrive_as_the_nearest(data: st.DataObject, kind: str,
                                                    active: bool) -> None:
    src = data.draw(sources(kind))
    nearest = NEAREST["system" if kind == "system" else "component"]
    ev_type, sent_as = data.draw(st.sampled_from(sorted(nearest.items())))
    ev = Event(source=src, type=ev_type, active=active, receive_ms=T2000 + 5000)
    target = preferred_target(src)
    assert target is not None
    made = upload(ev, target, () if active else (ev_type.value,), tz=UTC)
    assert not isinstance(made, str)
    assert made.sent_as is sent_as
    back = _map_back(made, target, src, frozenset() if active else frozenset({sent_as.value}))
    assert [(r.type, r.active) for r in back] == [(sent_as, active)]


def test_the_word_carries_every_condition_still_raised() -> None:
    """A fire alarm on a detector with a fault open goes up as fire + fault (图7): a word
    with only the fire bit would tell the centre that the fault cleared."""
    src = Source("p/1-1/42-0x00000102", Bus.GB26875, system_type=1, system_address=1,
                 component_type=42, component_address=0x102, description="三层东走廊感烟")
    ev = Event(source=src, type=EventType.FIRE_ALARM, receive_ms=T2000 + 1000)
    made = upload(ev, Target("component", 1, 1, 42, 0x102), {"fault"}, tz=UTC)
    assert not isinstance(made, str)
    obj = made.adu.objects[0]
    assert isinstance(obj, ComponentStatus)
    assert obj.state == ComponentState.NORMAL | ComponentState.FIRE_ALARM | ComponentState.FAULT
    assert obj.description == "三层东走廊感烟"
    assert made.conditions == {"fault", "fire_alarm"}
    raw = encode_adu(made.adu)
    assert raw[:2] == b"\x02\x01"  # type 2, one object (图7)
    assert raw[2:9] == bytes((1, 1, 42, 0x02, 0x01, 0, 0))  # address low byte first
    assert raw[9:11] == (0x0007).to_bytes(2, "little")


def test_a_restore_another_event_still_holds_is_not_sent() -> None:
    tgt = Target("component", 0, 0, 0, 0x8000_0001)
    src = Source("modbus/bus1/3/pressure", Bus.MODBUS, description="喷淋压力")
    ev = Event(source=src, type=EventType.THRESHOLD_LOW, active=False, receive_ms=T2000)
    assert isinstance(upload(ev, tgt, {"threshold_low", "out_of_range"}), str)  # 监管 stays
    made = upload(ev, tgt, {"threshold_low"})
    assert not isinstance(made, str) and made.conditions == frozenset()


def test_a_second_fire_alarm_is_sent_though_the_word_is_the_same() -> None:
    """fire -> fire is no change in the word, but the centre records it again under its new
    time label (panel_records: ALARM_CLASS is renewed): it must go up."""
    src = Source("p/1-1/system", Bus.GB26875, system_type=1, system_address=1)
    ev = Event(source=src, type=EventType.FIRE_ALARM, receive_ms=T2000 + 60_000)
    made = upload(ev, Target("system", 1, 1), {"fire_alarm"}, tz=UTC)
    assert not isinstance(made, str)
    obj = made.adu.objects[0]
    assert isinstance(obj, SystemStatus)
    assert obj.state == SystemState.NORMAL | SystemState.FIRE_ALARM
    started = Event(source=src, type=EventType.STARTED, receive_ms=T2000)
    assert upload(started, Target("system", 1, 1), {"started"}) == \
        "the state word does not change"


@pytest.mark.parametrize("ev_type", [EventType.CHECK_POST, EventType.TEST_MODE,
                                     EventType.MANUAL_MODE])
def test_events_with_no_bit_are_not_sent(ev_type: EventType) -> None:
    src = Source("gw/x", Bus.GATEWAY)
    reason = upload(Event(source=src, type=ev_type, receive_ms=T2000),
                    Target("component", 0, 0, 0, 5), ())
    assert isinstance(reason, str) and "no bit" in reason


@given(ops=st.sets(st.sampled_from(OPERATIONS), min_size=1), operator=st.integers(0, 255))
@settings(deadline=None)
def test_an_operation_maps_back(ops: set[str], operator: int) -> None:
    src = Source(f"{PREFIX}/1-2/system", Bus.GB26875, system_type=1, system_address=2)
    ev = Event(source=src, type=EventType.OPERATION, receive_ms=T2000 + 7000,
               operations=sorted(ops), operator=operator)
    target = Target("system", 1, 2)
    made = upload(ev, target, (), tz=UTC)
    assert not isinstance(made, str)
    back = _map_back(made, target, src, frozenset())
    assert len(back) == 1
    assert back[0].type is EventType.OPERATION and set(back[0].operations) == ops
    assert back[0].operator == operator and back[0].source.id == src.id


@pytest.mark.parametrize(("text", "fitted"), [
    ("三层东走廊感烟", "三层东走廊感烟"),
    ("a\0b", "ab"),  # a NUL would end the field
    ("a\x1b[2Jb\r\nc\x85", "a[2Jbc"),  # control characters: hostile to a display
    ("  padded  ", "padded"),
    ("一" * 20, "一" * 15),  # 2 bytes each in GB 18030: 15 fit in 31
    ("x" * 40, "x" * 31),
    ("\ud800bad", "bad"),  # not encodable: dropped
])
def test_descriptions_fit_the_31_byte_field(text: str, fitted: str) -> None:
    assert fit_text(text, DESCRIPTION_LEN) == fitted


def test_sources_without_panel_addressing_ask_for_an_address() -> None:
    assert preferred_target(Source("modbus/bus1/3/pressure", Bus.MODBUS)) is None
    assert preferred_target(Source("panel/com1/uitd", Bus.GB26875)) is None
    assert preferred_target(Source("p/3-4/system", Bus.GB26875, system_type=3,
                                   system_address=4)) == Target("system", 3, 4)
