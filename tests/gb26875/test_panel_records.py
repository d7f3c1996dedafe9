"""The pure mapping from decoded GB/T 26875.3 uploads to wire records, every upload type
(protocols/panel_records.py)."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from protocols.gb26875 import (
    AnalogValue,
    ApplicationData,
    ComponentAddress,
    ComponentConfig,
    ComponentState,
    ComponentStatus,
    FacilityConfig,
    FacilityOperation,
    FacilityOperationRecord,
    FacilitySoftwareVersion,
    FacilityTime,
    InfoObject,
    RawApplicationData,
    StreamDecoder,
    SystemState,
    SystemStatus,
    TimeLabel,
    UitdConfig,
    UitdOperation,
    UitdOperationRecord,
    UitdSoftwareVersion,
    UitdState,
    UitdStatus,
    UitdTime,
    decode_adu,
)
from protocols.panel_records import (
    COMPONENT_FLAGS,
    SYSTEM_FLAGS,
    UITD_FLAGS,
    PanelMapper,
    label_ms,
)
from protocols.wire import Event, EventType, Measurement, Priority, Quantity, Record, WireError

SHANGHAI = ZoneInfo("Asia/Shanghai")
T = TimeLabel(0, 0, 8, 1, 5, 24)  # 2024-05-01 08:00:00 in Shanghai = 00:00:00Z
T_MS = 1_714_521_600_000
RT = 1_714_521_601_234  # the gateway's receive time
ADDR = ComponentAddress.from_int(3001)  # 0x00000bb9
SMOKE = "panel/1-1/42-0x00000bb9"
DATA = Path(__file__).resolve().parents[1] / "data" / "gb26875" / "every-upload-type"

N = ComponentState.NORMAL


def mapper(**kw: object) -> PanelMapper:
    return PanelMapper("panel", "panel/com1/uitd", tz=SHANGHAI, **kw)  # type: ignore[arg-type]


def smoke(state: ComponentState, desc: str = "3F 东侧走廊", time: TimeLabel | None = T
          ) -> ComponentStatus:
    return ComponentStatus(1, 1, 42, ADDR, state, desc, time)


def run(m: PanelMapper, mark: int, *objs: InfoObject, frame_time: TimeLabel | None = None,
        commit: bool = True, answer: bool = False) -> list[Record]:
    mapped = m.map(ApplicationData(mark, tuple(objs)), RT, frame_time, answer=answer)
    if commit:
        m.commit(mapped)
    return list(mapped.records)


def events(records: list[Record]) -> list[tuple[str, EventType, bool]]:
    return [(r.source.id, r.type, r.active) for r in records if isinstance(r, Event)]


# -- state words: raise, restore, first sight ------------------------------------------------------

def test_fire_alarm_becomes_a_fire_event_with_description_and_both_times() -> None:
    (rec,) = run(mapper(), 2, smoke(N | ComponentState.FIRE_ALARM))
    assert isinstance(rec, Event)
    assert (rec.type, rec.active, rec.priority) == (EventType.FIRE_ALARM, True, Priority.FIRE)
    assert rec.source.id == SMOKE
    assert rec.source.description == "3F 东侧走廊"
    assert (rec.source.system_type, rec.source.system_address) == (1, 1)
    assert (rec.source.component_type, rec.source.component_address) == (42, 3001)
    assert rec.source_ms == T_MS and rec.receive_ms == RT
    assert rec.state == 0x0003
    assert rec.detail == "火警 / 点型光电感烟火灾探测器"
    assert rec.seq == 0


def test_first_sight_raises_only_active_flags_then_changes_raise_and_restore() -> None:
    m = mapper()
    assert run(m, 2, smoke(N)) == []  # first sight, nothing active
    assert events(run(m, 2, smoke(N | ComponentState.FAULT | ComponentState.DISABLED))) == [
        (SMOKE, EventType.FAULT, True), (SMOKE, EventType.DISABLED, True)]
    assert run(m, 2, smoke(N | ComponentState.FAULT | ComponentState.DISABLED)) == []  # resent
    assert events(run(m, 2, smoke(N | ComponentState.DISABLED | ComponentState.SUPERVISORY))) \
        == [(SMOKE, EventType.FAULT, False), (SMOKE, EventType.SUPERVISORY, True)]
    assert events(run(m, 2, smoke(N))) == [(SMOKE, EventType.DISABLED, False),
                                           (SMOKE, EventType.SUPERVISORY, False)]


def test_a_restore_keeps_the_class_of_its_raise_and_the_known_description() -> None:
    m = mapper()
    run(m, 2, smoke(N | ComponentState.FIRE_ALARM))
    (rec,) = run(m, 2, smoke(N, desc=""))
    assert isinstance(rec, Event)
    assert (rec.type, rec.active, rec.priority) == (EventType.FIRE_ALARM, False, Priority.FIRE)
    assert rec.source.description == "3F 东侧走廊"


def test_every_component_bit_maps_to_its_event() -> None:
    expected = {1: EventType.FIRE_ALARM, 2: EventType.FAULT, 3: EventType.DISABLED,
                4: EventType.SUPERVISORY, 5: EventType.STARTED, 6: EventType.FEEDBACK,
                7: EventType.DELAY, 8: EventType.POWER_FAULT}
    assert {f.bit: f.event for f in COMPONENT_FLAGS if f.bit} == expected
    for bit, event_type in expected.items():
        (rec,) = run(mapper(), 2, smoke(ComponentState(1 | 1 << bit)))
        assert isinstance(rec, Event) and rec.type is event_type and rec.active


def test_every_system_bit_maps_to_its_event_and_reset_is_a_point() -> None:
    expected = {1: EventType.FIRE_ALARM, 2: EventType.FAULT, 3: EventType.DISABLED,
                4: EventType.SUPERVISORY, 5: EventType.STARTED, 6: EventType.FEEDBACK,
                7: EventType.DELAY, 8: EventType.MAINS_POWER_FAULT,
                9: EventType.BACKUP_POWER_FAULT, 10: EventType.BUS_FAULT,
                11: EventType.MANUAL_MODE, 12: EventType.CONFIG_CHANGED, 13: EventType.RESET}
    assert {f.bit: f.event for f in SYSTEM_FLAGS if f.bit} == expected
    m = mapper()
    sid = "panel/1-1/system"
    word = SystemState.NORMAL | SystemState.MAINS_POWER_FAULT | SystemState.RESET
    recs = run(m, 1, SystemStatus(1, 1, word, T))
    assert events(recs) == [(sid, EventType.MAINS_POWER_FAULT, True), (sid, EventType.RESET, True)]
    assert recs[0].source.description is None and recs[0].source.component_type is None
    # The reset bit falling is no restore; the power fault clearing is.
    assert events(run(m, 1, SystemStatus(1, 1, SystemState.NORMAL, T))) == [
        (sid, EventType.MAINS_POWER_FAULT, False)]
    assert events(run(m, 1, SystemStatus(1, 1, SystemState.NORMAL | SystemState.RESET, T))) \
        == [(sid, EventType.RESET, True)]


def test_bit0_clear_raises_test_mode_only_when_the_site_asks() -> None:
    silent = mapper()
    assert run(silent, 2, smoke(ComponentState(0))) == []  # many devices always send bit 0 = 0
    loud = mapper(report_test_mode=True)
    assert events(run(loud, 2, smoke(ComponentState(0)))) == [(SMOKE, EventType.TEST_MODE, True)]
    assert events(run(loud, 2, smoke(N))) == [(SMOKE, EventType.TEST_MODE, False)]


def test_several_objects_of_one_source_in_one_upload_diff_in_order() -> None:
    m = mapper()
    recs = run(m, 2, smoke(N | ComponentState.FIRE_ALARM), smoke(N),
               smoke(N | ComponentState.FIRE_ALARM))
    assert events(recs) == [(SMOKE, EventType.FIRE_ALARM, True),
                            (SMOKE, EventType.FIRE_ALARM, False),
                            (SMOKE, EventType.FIRE_ALARM, True)]
    assert m.state(SMOKE) == 0x0003


def test_nothing_changes_until_commit() -> None:
    m = mapper()
    first = run(m, 2, smoke(N | ComponentState.FIRE_ALARM), commit=False)
    again = run(m, 2, smoke(N | ComponentState.FIRE_ALARM), commit=False)
    assert events(first) == events(again) == [(SMOKE, EventType.FIRE_ALARM, True)]
    assert m.state(SMOKE) is None and m.systems() == [] and m.active_components() == []
    run(m, 2, smoke(N | ComponentState.FIRE_ALARM))
    assert m.state(SMOKE) == 0x0003
    assert m.systems() == [(1, 1)] and m.active_components() == [(1, 1, 3001)]
    run(m, 2, smoke(N))
    assert m.active_components() == [] and list(m.component_sources()) == [SMOKE]


def test_uitd_state_link_bits_go_to_separate_sub_sources() -> None:
    assert {f.bit: f.event for f in UITD_FLAGS if f.bit} == {
        1: EventType.FIRE_ALARM, 2: EventType.FAULT, 3: EventType.MAINS_POWER_FAULT,
        4: EventType.BACKUP_POWER_FAULT, 5: EventType.LINK_FAULT, 6: EventType.LINK_FAULT}
    m = mapper(uitd_description="用户信息传输装置 com1")
    u = "panel/com1/uitd"
    both = UitdState.NORMAL | UitdState.CENTRE_LINK_FAULT | UitdState.MONITORING_LINE_FAULT
    recs = run(m, 21, UitdStatus(both, T))
    assert events(recs) == [(u + "/centre_link", EventType.LINK_FAULT, True),
                            (u + "/panel_line", EventType.LINK_FAULT, True)]
    assert recs[0].source.description == "用户信息传输装置 com1"
    # One link clearing restores that one only.
    recs = run(m, 21, UitdStatus(UitdState.NORMAL | UitdState.MONITORING_LINE_FAULT
                                 | UitdState.MAINS_POWER_FAULT, T))
    assert events(recs) == [(u, EventType.MAINS_POWER_FAULT, True),
                            (u + "/centre_link", EventType.LINK_FAULT, False)]


# -- after a restart: the first word is diffed against the conditions raised before it ------------

SYSTEM = "panel/1-1/system"


def test_first_word_after_a_restart_restores_what_cleared_and_raises_nothing_twice() -> None:
    m = mapper(previous={SMOKE: {"fire_alarm", "fault"}, SYSTEM: {"fire_alarm"}})
    # The read at start: the fire alarm cleared while the agent was down, restored; the fault
    # still holds: silent.
    recs = run(m, 2, smoke(N | ComponentState.FAULT), answer=True)
    assert events(recs) == [(SMOKE, EventType.FIRE_ALARM, False)]
    assert recs[0].priority is Priority.FIRE  # a restore keeps the class of its raise
    # From now on the known word rules: the fault clears once, nothing comes from previous.
    assert events(run(m, 2, smoke(N))) == [(SMOKE, EventType.FAULT, False)]
    assert run(m, 2, smoke(N)) == []
    assert events(run(m, 2, smoke(N | ComponentState.FIRE_ALARM))) == [
        (SMOKE, EventType.FIRE_ALARM, True)]
    # The system: its fire alarm restored, a fault not raised before is raised (first sight).
    assert events(run(m, 1, SystemStatus(1, 1, SystemState.NORMAL | SystemState.FAULT, T))) \
        == [(SYSTEM, EventType.FIRE_ALARM, False), (SYSTEM, EventType.FAULT, True)]


def test_after_a_restart_an_upload_that_reports_a_held_alarm_raises_it_once_more() -> None:
    """``previous`` holds conditions, not the time labels of their raises: whether the fault the
    UITD uploads is the one raised before the restart or a new one cannot be told, so it is
    recorded (once: from then on its label is known). A repeat, never a loss."""
    m = mapper(previous={SMOKE: {"fault", "disabled"}})
    recs = run(m, 2, smoke(N | ComponentState.FAULT | ComponentState.DISABLED))
    assert events(recs) == [(SMOKE, EventType.FAULT, True)]  # disabled: no alarm, diffed only
    assert recs[0].source_ms == T_MS
    assert run(m, 2, smoke(N | ComponentState.FAULT | ComponentState.DISABLED)) == []


def test_previous_conditions_of_other_sources_change_nothing() -> None:
    plain, seeded = mapper(), mapper(previous={SYSTEM: {"fault"}, "panel/1-1/42-0x00000001":
                                               {"fire_alarm"}})
    for word in (N | ComponentState.FIRE_ALARM, N, N | ComponentState.FAULT):
        assert events(run(seeded, 2, smoke(word))) == events(run(plain, 2, smoke(word)))


def test_previous_uitd_link_faults_are_kept_apart_by_sub_source() -> None:
    u = "panel/com1/uitd"
    m = mapper(previous={u + "/centre_link": {"link_fault"}, u + "/panel_line": {"link_fault"},
                         u: {"mains_power_fault"}})
    recs = run(m, 21, UitdStatus(UitdState.NORMAL | UitdState.MONITORING_LINE_FAULT, T))
    assert events(recs) == [(u, EventType.MAINS_POWER_FAULT, False),
                            (u + "/centre_link", EventType.LINK_FAULT, False)]


def test_an_unstored_first_word_is_diffed_against_previous_again() -> None:
    m = mapper(previous={SMOKE: {"fire_alarm"}})
    first = run(m, 2, smoke(N), commit=False)  # the outbox refused it: mapped again later
    again = run(m, 2, smoke(N))
    assert events(first) == events(again) == [(SMOKE, EventType.FIRE_ALARM, False)]
    assert run(m, 2, smoke(N)) == []


def test_sources_with_previous_conditions_are_read_back_from_their_ids() -> None:
    m = mapper(previous={
        SMOKE: {"fire_alarm"},
        "panel/2-7/31-0xfffffffe": {"fault"},
        SYSTEM: {"fault"},
        "panel/11-1/system": {"mains_power_fault"},
        "panel/com1/uitd": {"fault"},  # the UITD is read with 81 anyway
        "panel/com1/link": {"link_fault"},
        "panel/1-1/99-0x00000065/analog-5": {"threshold_high"},  # a rule's, not a state word
        "panel/300-1/system": {"fault"},  # no such system type: not a source of ours
        "panel/1-1/42-0xbb9": {"fault"},
        "other/1-1/42-0x00000bb9": {"fire_alarm"},  # another panel's prefix
        "panelx/1-1/system": {"fault"},
    })
    assert m.previous_systems() == [(1, 1), (11, 1)]
    assert m.previous_components() == {SMOKE: (1, 1, 3001),
                                       "panel/2-7/31-0xfffffffe": (2, 7, 0xFFFFFFFE)}
    run(m, 2, smoke(N))  # seen (and restored): its current state is known now
    run(m, 1, SystemStatus(11, 1, SystemState.NORMAL, T))
    assert m.previous_components() == {"panel/2-7/31-0xfffffffe": (2, 7, 0xFFFFFFFE)}
    assert m.previous_systems() == [(1, 1)]
    assert mapper().previous_systems() == [] and mapper().previous_components() == {}


# -- every report of an alarm is a record; repeats are folded (issue 18) --------------------------

def at(seconds: int) -> TimeLabel:
    """T plus ``seconds`` (under a minute)."""
    return TimeLabel(seconds, 0, 8, 1, 5, 24)


def fires(records: list[Record], source: str = SMOKE) -> list[tuple[bool, int | None]]:
    return [(r.active, r.source_ms) for r in records if isinstance(r, Event)
            and r.source.id == source and r.type is EventType.FIRE_ALARM]


def test_a_second_fire_alarm_that_overtook_the_reset_is_a_record_with_its_own_time() -> None:
    """The UITD sends its backlog fire alarms first (GB 26875.1 4.1.2.3): the detector's
    second fire alarm (08:00:03) arrives before the reset (08:00:02) that cleared its first
    (08:00:01). Fire -> fire is no change of the word, but a new report: each is a record with
    its own panel time; then the read after the reset restores it."""
    m = mapper()
    recs = run(m, 2, smoke(N | ComponentState.FIRE_ALARM, time=at(1)))
    recs += run(m, 2, smoke(N | ComponentState.FIRE_ALARM, time=at(3)))
    recs += run(m, 4, FacilityOperationRecord(1, 1, FacilityOperation.RESET, 1, at(2)))
    recs += run(m, 2, smoke(N, time=at(4)), answer=True)  # the read after the reset
    assert fires(recs) == [(True, T_MS + 1000), (True, T_MS + 3000), (False, T_MS + 4000)]
    assert all(r.priority is Priority.FIRE for r in recs if isinstance(r, Event)
               and r.type is EventType.FIRE_ALARM)


def test_only_alarm_class_conditions_of_facility_uploads_are_reported_again() -> None:
    m = mapper()
    held = N | ComponentState.FIRE_ALARM | ComponentState.DISABLED | ComponentState.STARTED
    assert len(run(m, 2, smoke(held, time=at(1)))) == 3
    # A new label: the fire alarm is reported again; disabled and started are states, not alarms.
    assert events(run(m, 2, smoke(held, time=at(5)))) == [(SMOKE, EventType.FIRE_ALARM, True)]
    assert run(m, 2, smoke(held, time=at(5))) == []  # the same report again: folded
    # Another bit changes: the word reports the fire alarm (and the fault) at its own time.
    assert [(t, a) for _, t, a in events(run(m, 2, smoke(held | ComponentState.FAULT,
                                                          time=at(6))))] == [
        (EventType.FIRE_ALARM, True), (EventType.FAULT, True)]
    # An answer to a read says what holds, whatever its label: nothing new.
    assert run(m, 2, smoke(held | ComponentState.FAULT, time=at(9)), answer=True) == []
    # The system word (图6, type 1) like the component's; the UITD's (图13, type 21) restates the
    # facility's alarms at the time of its report: diffed only.
    fire = SystemState.NORMAL | SystemState.FIRE_ALARM | SystemState.MAINS_POWER_FAULT
    run(m, 1, SystemStatus(1, 1, fire, at(1)))
    assert events(run(m, 1, SystemStatus(1, 1, fire, at(7)))) == [
        (SYSTEM, EventType.FIRE_ALARM, True), (SYSTEM, EventType.MAINS_POWER_FAULT, True)]
    u = UitdState.NORMAL | UitdState.FIRE_ALARM | UitdState.MAINS_POWER_FAULT
    assert len(run(m, 21, UitdStatus(u, at(1)))) == 2
    assert run(m, 21, UitdStatus(u, at(8))) == []


def test_a_word_without_a_time_label_of_its_own_is_diffed_only() -> None:
    """The header's time label is when the packet was sent (表1), not when the state occurred:
    a dialect without per-object labels cannot tell a new report from an old one."""
    m = mapper()
    fire = N | ComponentState.FIRE_ALARM
    assert fires(run(m, 2, smoke(fire, time=None), frame_time=at(1))) == [(True, T_MS + 1000)]
    assert run(m, 2, smoke(fire, time=None), frame_time=at(3)) == []
    never_set = TimeLabel(0, 0, 0, 0, 0, 0)  # a panel whose clock was never set
    assert run(m, 2, smoke(fire, time=never_set)) == []


def test_a_repeated_restore_or_raise_with_the_same_time_label_is_folded() -> None:
    """A word reported again with the time label of the last record of its kind (a read
    answering what an upload said, a word resent numbered anew after a reconnect, a late word
    overtaken by a fire alarm) is the same report: one record, and the condition stays as the
    last record says."""
    m = mapper()
    fire, clear = N | ComponentState.FIRE_ALARM, N
    recs = run(m, 2, smoke(fire, time=at(1)))
    recs += run(m, 2, smoke(clear, time=at(2)))
    recs += run(m, 2, smoke(clear, time=at(2)), answer=True)  # the read after the reset
    recs += run(m, 2, smoke(fire, time=at(3)))  # a fire alarm, sent ahead of ...
    recs += run(m, 2, smoke(clear, time=at(2)))  # ... a late copy of the cleared word
    assert fires(recs) == [(True, T_MS + 1000), (False, T_MS + 2000), (True, T_MS + 3000)]
    assert m.active_components() == [(1, 1, 3001)]  # still in alarm: the last record says so
    recs = run(m, 2, smoke(clear, time=at(4)), answer=True)  # the reset after it
    recs += run(m, 2, smoke(fire, time=at(3)))  # a late copy of the fire word: no new report
    assert fires(recs) == [(False, T_MS + 4000)]
    assert m.active_components() == []
    # Repeats of other conditions fold the same way.
    recs = run(m, 2, smoke(N | ComponentState.DISABLED, time=at(5)))
    recs += run(m, 2, smoke(clear, time=at(6)))
    recs += run(m, 2, smoke(N | ComponentState.DISABLED, time=at(5)))
    assert events(recs) == [(SMOKE, EventType.DISABLED, True), (SMOKE, EventType.DISABLED, False)]


def test_a_repeat_after_a_late_report_of_something_older_restates_what_holds() -> None:
    """The read after a reset restored the detector (08:00:04); then the UITD delivers a fire
    alarm from 08:00:03 that it held back. It is recorded (every alarm report is), and the
    reset's restore, read again, is restated: otherwise the last record of the fire alarm
    would say "raised" while the panel says clear."""
    m = mapper()
    fire, clear = N | ComponentState.FIRE_ALARM, N
    recs = run(m, 2, smoke(fire, time=at(1)))
    recs += run(m, 2, smoke(clear, time=at(4)), answer=True)
    recs += run(m, 2, smoke(fire, time=at(3)))
    recs += run(m, 2, smoke(clear, time=at(4)), answer=True)
    assert fires(recs) == [(True, T_MS + 1000), (False, T_MS + 4000), (True, T_MS + 3000),
                           (False, T_MS + 4000)]
    # Labels that tie (one-second resolution) are no proof of a repeat either.
    recs = run(m, 2, smoke(fire, time=at(9)), smoke(clear, time=at(9)),
               smoke(fire, time=at(9)))
    assert fires(recs) == [(True, T_MS + 9000), (False, T_MS + 9000), (True, T_MS + 9000)]


def test_labels_are_remembered_only_once_committed() -> None:
    m = mapper()
    run(m, 2, smoke(N | ComponentState.FIRE_ALARM, time=at(1)))
    again = N | ComponentState.FIRE_ALARM
    first = run(m, 2, smoke(again, time=at(3)), commit=False)  # the outbox refused it
    second = run(m, 2, smoke(again, time=at(3)))  # the UITD resends it: mapped whole again
    assert fires(first) == fires(second) == [(True, T_MS + 3000)]
    assert run(m, 2, smoke(again, time=at(3))) == []


# -- points: analog values, operations, check-post answers ---------------------------------------

@pytest.mark.parametrize(("analog_type", "raw", "quantity", "value", "unit"), [
    (1, 7, Quantity.EVENT_COUNT, 7.0, ""),
    (2, 250, Quantity.LEVEL, 2.5, "m"),
    (3, -50, Quantity.TEMPERATURE, -5.0, "°C"),
    (4, 12, Quantity.PRESSURE, 1.2, "MPa"),
    (5, 3125, Quantity.PRESSURE, 312.5, "kPa"),
    (6, 105, Quantity.GAS_CONCENTRATION, 10.5, "%LEL"),
    (7, 90, Quantity.DURATION, 90.0, "s"),
    (8, 2200, Quantity.VOLTAGE, 220.0, "V"),
    (9, 15, Quantity.CURRENT, 1.5, "A"),
    (10, 55, Quantity.FLOW, 5.5, "L/s"),
    (11, 123, Quantity.AIR_VOLUME, 12.3, "m³/min"),
    (12, 4, Quantity.WIND_SPEED, 4.0, "m/s"),
])
def test_analog_values_become_measurements_in_wire_units(
        analog_type: int, raw: int, quantity: Quantity, value: float, unit: str) -> None:
    (rec,) = run(mapper(), 3, AnalogValue(11, 1, 99, ADDR, analog_type, raw, T))
    assert isinstance(rec, Measurement)
    assert (rec.quantity, rec.value, rec.unit) == (quantity, value, unit)
    assert rec.source.id == "panel/11-1/99-0x00000bb9"
    assert rec.source_ms == T_MS and rec.receive_ms == RT and rec.priority is Priority.MEASUREMENT


def test_user_defined_analog_is_raw_on_its_own_source_and_type_0_is_unused() -> None:
    m = mapper()
    (rec,) = run(m, 3, AnalogValue(11, 1, 99, ADDR, 0x9A, -123, T))
    assert isinstance(rec, Measurement)
    assert (rec.quantity, rec.value, rec.unit) == (Quantity.ANALOG, -123.0, "")
    assert rec.source.id == "panel/11-1/99-0x00000bb9/analog-154"
    assert rec.source.component_address == 3001
    assert run(m, 3, AnalogValue(11, 1, 99, ADDR, 0, 5, T)) == []


def test_analog_description_comes_from_what_the_panel_said_before() -> None:
    m = mapper()
    run(m, 7, ComponentConfig(11, 1, 99, ADDR, "屋顶消火栓 稳压压力"))
    (rec,) = run(m, 3, AnalogValue(11, 1, 99, ADDR, 5, 3500, T))
    assert rec.source.description == "屋顶消火栓 稳压压力"


def test_facility_operations_become_operation_events() -> None:
    flags = FacilityOperation.RESET | FacilityOperation.SILENCE
    m = mapper()
    run(m, 6, FacilityConfig(1, 1, "1号火灾报警控制器 A栋"))
    (rec,) = run(m, 4, FacilityOperationRecord(1, 1, flags, 2, T))
    assert isinstance(rec, Event)
    assert (rec.type, rec.active, rec.priority) == (EventType.OPERATION, True, Priority.EVENT)
    assert rec.operations == ("reset", "silence") and rec.operator == 2
    assert rec.source.id == "panel/1-1/system" and rec.source_ms == T_MS
    assert rec.source.description == "1号火灾报警控制器 A栋"
    assert run(m, 4, FacilityOperationRecord(1, 1, FacilityOperation(0), 2, T)) == []


def test_uitd_operations_and_the_check_post_answer() -> None:
    m = mapper()
    (answer,) = run(m, 24, UitdOperationRecord(UitdOperation.CHECK_POST_ANSWER, 3, T))
    assert isinstance(answer, Event)
    assert (answer.type, answer.active, answer.operator) == (EventType.CHECK_POST, True, 3)
    assert answer.source.id == "panel/com1/uitd" and answer.source_ms == T_MS
    both = run(m, 24, UitdOperationRecord(UitdOperation.CHECK_POST_ANSWER
                                          | UitdOperation.SELF_TEST, 3, T))
    assert [r.type for r in both if isinstance(r, Event)] == [EventType.CHECK_POST,
                                                               EventType.OPERATION]
    assert isinstance(both[1], Event) and both[1].operations == ("self_test",)


# -- types that carry no record, raw ADUs, times ---------------------------------------------------

def test_info_types_give_no_records_but_teach_descriptions() -> None:
    m = mapper()
    assert run(m, 5, FacilitySoftwareVersion(1, 1, 3, 2)) == []
    assert run(m, 6, FacilityConfig(1, 1, "A栋主机")) == []
    assert run(m, 7, ComponentConfig(1, 1, 42, ADDR, "三层东走廊")) == []
    assert run(m, 8, FacilityTime(1, 1, T)) == []
    assert run(m, 25, UitdSoftwareVersion(2, 1)) == []
    assert run(m, 26, UitdConfig("模拟装置")) == []
    assert run(m, 28, UitdTime(T)) == []
    (rec,) = run(m, 2, smoke(N | ComponentState.FAULT, desc=""))
    assert rec.source.description == "三层东走廊"
    (op,) = run(m, 4, FacilityOperationRecord(1, 1, FacilityOperation.SILENCE, 1, T))
    assert op.source.description == "A栋主机"
    (uitd,) = run(m, 24, UitdOperationRecord(UitdOperation.RESET, 1, T))
    assert uitd.source.description == "模拟装置"


def test_raw_and_empty_adus_give_nothing() -> None:
    m = mapper()
    assert m.map(RawApplicationData(0x16, None), RT).records == ()
    assert m.map(RawApplicationData(200, 1, b"\x01\x02"), RT).summary == "raw user_defined_200"
    assert m.map(None, RT).records == ()


def test_source_time_falls_back_to_the_frame_and_an_impossible_label_gives_none() -> None:
    m = mapper()
    (rec,) = run(m, 2, smoke(N | ComponentState.FAULT, time=None), frame_time=T)
    assert rec.source_ms == T_MS  # no per-object label (dialect): the frame's time
    (rec,) = run(m, 2, smoke(N | ComponentState.FAULT | ComponentState.FIRE_ALARM,
                             time=TimeLabel(0, 0, 0, 0, 0, 0)))
    assert rec.source_ms is None and rec.receive_ms == RT  # a panel whose clock was never set
    assert label_ms(T, SHANGHAI) == T_MS
    assert label_ms(T, ZoneInfo("UTC")) == T_MS + 8 * 3600 * 1000


def test_long_descriptions_fit_the_wire_limit() -> None:
    m = mapper()
    run(m, 6, FacilityConfig(1, 1, "火" * 100))
    (rec,) = run(m, 1, SystemStatus(1, 1, SystemState.NORMAL | SystemState.FAULT, T))
    assert rec.source.description == "火" * 64


def test_every_golden_upload_frame_maps_to_valid_records() -> None:
    text = (DATA / "input.hex").read_text(encoding="utf-8")
    raw = bytes.fromhex(" ".join(line.split("#")[0] for line in text.splitlines()))
    frames = [f for f in StreamDecoder().feed(raw) if not isinstance(f, Exception)]
    marks = sorted({f.adu[0] for f in frames})
    assert marks == [1, 2, 3, 4, 5, 6, 7, 8, 21, 24, 25, 26, 28]
    m = mapper(report_test_mode=True)
    kinds: dict[int, set[str]] = {}
    for frame in frames:
        mapped = m.map(decode_adu(frame.adu), RT, frame.time)
        m.commit(mapped)
        kinds[frame.adu[0]] = {type(r).__name__ for r in mapped.records}
        for rec in mapped.records:  # constructed records are valid wire records
            assert rec.receive_ms == RT and rec.source.bus.value == "gb26875"
    assert kinds[3] == {"Measurement"}
    assert kinds[1] <= {"Event"} and kinds[2] == {"Event"} and kinds[4] == {"Event"}
    assert all(not kinds[t] for t in (5, 6, 7, 8, 25, 26, 28))


def test_records_refuse_what_the_wire_contract_refuses() -> None:
    # The mapper builds validated records: a prefix that is not a source id fails loudly there.
    with pytest.raises(WireError):
        run(PanelMapper("bad prefix", "x"), 2, smoke(N | ComponentState.FAULT))
