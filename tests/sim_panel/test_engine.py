"""The UITD engine against a codec-built centre, in memory, on a manual scenario time.

These check the protocol behaviour exhaustively and fast; test_pty/test_tcp repeat the key
conversations over real links.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from protocols.gb26875 import (
    DAHUA,
    EXTRA_TIME_LABELS,
    HANDSHAKE,
    HIKVISION,
    NO_TIME_LABELS,
    AnalogValue,
    CheckPost,
    ClockSync,
    Command,
    ComponentAddress,
    ComponentConfig,
    ComponentRef,
    ComponentState,
    ComponentStatus,
    ErrorKind,
    FacilityConfig,
    FacilityOperation,
    FacilitySoftwareVersion,
    FacilityTime,
    RawApplicationData,
    ReadOperations,
    ReadUitdOperations,
    Reserved,
    SystemRef,
    SystemState,
    TimeLabel,
    UitdConfig,
    UitdOperation,
    UitdSoftwareVersion,
    UitdState,
    UitdStatus,
    UitdTime,
    address_to_int,
    decode_adu,
)
from simulators.panel import PanelSpec, Status
from simulators.panel.scenario import parse_scenario

from .helpers import START, MemoryLink, centre_clock, decoded

SMOKE = ComponentAddress.from_int(3001)
MODULE = ComponentAddress.from_int(101)
PRESSURE = ComponentAddress.from_int(1)


def config(**panel: object) -> PanelSpec:
    return parse_scenario({"start_time": START.isoformat(), **panel})


def label(seconds: float) -> TimeLabel:
    return TimeLabel.from_datetime(START + timedelta(seconds=seconds))


def events(*items: tuple[float, str, Mapping[str, object]]) -> list[dict[str, object]]:
    return [{"at": at, "action": action, **params} for at, action, params in items]


# -- uploads ----------------------------------------------------------------------------------

def test_scripted_fire_alarm_arrives_with_description_and_time_label() -> None:
    link = MemoryLink(config(events=events((5.0, "fire_alarm", {"component": "smoke-3F-east"}))))
    link.advance(4.9)
    assert link.centre.uploads == []
    link.advance(0.2)
    (frame,) = link.centre.uploads
    adu = decoded(frame)
    assert adu.type_mark == 2
    (obj,) = adu.objects
    assert isinstance(obj, ComponentStatus)
    assert (obj.system_type, obj.system_address, obj.component_type) == (1, 1, 42)
    assert obj.address == SMOKE and obj.description == "3F 东侧走廊"
    assert obj.state == ComponentState.NORMAL | ComponentState.FIRE_ALARM
    assert obj.time == label(5)
    (entry,) = link.engine.ledger.entries
    assert (entry.status, entry.attempts, entry.serials) == (Status.CONFIRMED, 1, [0])
    assert "3F 东侧走廊" in entry.summary and "fire_alarm" in entry.summary


def test_unconfirmed_upload_goes_out_1_plus_3_times_then_fails() -> None:
    link = MemoryLink(config(confirm_timeout=5))
    link.centre.policy = lambda frame, n: "ignore"
    link.trigger("fire_alarm", component="smoke-3F-east")
    link.advance(60)
    sent = link.centre.transmissions(0)
    assert len(sent) == 4 and len({f.encode() for f in sent}) == 1  # the same bytes (§6.5.5)
    (entry,) = link.engine.ledger.entries
    assert (entry.status, entry.attempts) == (Status.FAILED, 4)
    assert "no confirm after 4 transmissions" in entry.reason
    # The UITD now shows its link-to-centre fault (图13 bit 5), until a confirm arrives.
    link.centre.policy = lambda frame, n: "confirm"
    (state,) = link.read(81).objects
    assert isinstance(state, UitdStatus)
    assert state.state == (UitdState.NORMAL | UitdState.FIRE_ALARM
                           | UitdState.CENTRE_LINK_FAULT)
    link.trigger("fault", component="module-pump-room")
    assert link.engine.ledger.entries[-1].status is Status.CONFIRMED
    (state,) = link.read(81).objects
    assert isinstance(state, UitdStatus)
    assert not state.state & UitdState.CENTRE_LINK_FAULT


def test_withheld_confirms_lead_to_resends_until_confirmed() -> None:
    link = MemoryLink(config(confirm_timeout=2))
    link.centre.policy = lambda frame, n: "confirm" if n == 3 else "ignore"
    link.trigger("fire_alarm", component="smoke-3F-east")
    link.advance(1.9)
    assert len(link.centre.transmissions(0)) == 1
    link.advance(0.2)
    assert len(link.centre.transmissions(0)) == 2
    link.advance(10)
    assert len(link.centre.transmissions(0)) == 3
    (entry,) = link.engine.ledger.entries
    assert (entry.status, entry.attempts) == (Status.CONFIRMED, 3)
    assert len(link.centre.uploads) == 1  # the centre saw resends, not new alarms


def test_deny_leads_to_an_immediate_resend() -> None:
    link = MemoryLink(config())
    link.centre.policy = lambda frame, n: "deny" if n == 1 else "confirm"
    link.trigger("fault", component="module-pump-room")  # no time passes at all
    assert len(link.centre.transmissions(0)) == 2
    (entry,) = link.engine.ledger.entries
    assert (entry.status, entry.attempts) == (Status.CONFIRMED, 2)
    assert [r["event"] for r in link.engine.ledger.records if r.get("entry") == 1] == [
        "queued", "sent", "resent", "confirmed"]


def test_denied_every_time_fails_after_the_retries() -> None:
    link = MemoryLink(config(retries=2))
    link.centre.policy = lambda frame, n: "deny"
    link.trigger("fault", component="module-pump-room")
    (entry,) = link.engine.ledger.entries
    assert (entry.status, entry.attempts) == (Status.FAILED, 3)
    assert entry.reason.startswith("denied")


def test_uploads_go_one_at_a_time_and_fire_alarms_first() -> None:
    link = MemoryLink(config())
    link.centre.policy = lambda frame, n: "ignore"
    link.trigger("fault", component="module-pump-room")  # in flight, unconfirmed
    link.trigger("analog", component="pressure-roof", value=120.5)
    link.trigger("silence")
    link.trigger("fire_alarm", component="callpoint-3F-stairs")
    assert len(link.centre.uploads) == 1  # one transaction at a time
    link.centre.policy = lambda frame, n: "confirm"
    link.advance(10)  # the fault is resent and confirmed; the queue drains
    types = [(decoded(f).type_mark, decoded(f).objects[0]) for f in link.centre.uploads]
    assert [t for t, _ in types] == [2, 2, 3, 4]
    assert isinstance(types[1][1], ComponentStatus) and types[1][1].component_type == 23
    analog = types[2][1]
    assert isinstance(analog, AnalogValue) and (analog.value, analog.unit) == (120.5, "kPa")
    assert not link.engine.ledger.undelivered()


def test_operations_restore_and_reset_follow_panel_rules() -> None:
    link = MemoryLink(config())
    link.trigger("fire_alarm", component="smoke-3F-east")
    link.trigger("fault", component="smoke-3F-east")
    link.trigger("restore", component="smoke-3F-east")  # the fault clears, the alarm latches
    obj = decoded(link.centre.uploads[-1]).objects[0]
    assert isinstance(obj, ComponentStatus)
    assert obj.state == ComponentState.NORMAL | ComponentState.FIRE_ALARM
    link.trigger("fire_alarm", component="smoke-3F-east")  # already in alarm: nothing new
    assert len(link.centre.uploads) == 3
    link.trigger("reset", operator=7)
    op, system = (decoded(f) for f in link.centre.uploads[-2:])
    assert op.type_mark == 4 and system.type_mark == 1
    assert op.objects[0].flags == FacilityOperation.RESET  # type: ignore[attr-defined]
    assert op.objects[0].operator == 7  # type: ignore[attr-defined]
    assert system.objects[0].state == SystemState.NORMAL  # type: ignore[attr-defined]
    (comp,) = link.read(62, ComponentRef(1, 1, SMOKE)).objects
    assert isinstance(comp, ComponentStatus) and comp.state == ComponentState.NORMAL


def test_system_and_uitd_power_faults() -> None:
    link = MemoryLink(config())
    link.trigger("mains_fault")  # the first system: the fire alarm system
    sys_state = decoded(link.centre.uploads[-1]).objects[0]
    assert sys_state.state == (SystemState.NORMAL | SystemState.FAULT  # type: ignore[attr-defined]
                               | SystemState.MAINS_POWER_FAULT)
    link.trigger("backup_fault", uitd=True)
    uitd = decoded(link.centre.uploads[-1])
    assert uitd.type_mark == 21
    assert uitd.objects[0].state == (UitdState.NORMAL | UitdState.FAULT  # type: ignore[attr-defined]
                                     | UitdState.BACKUP_POWER_FAULT)
    link.trigger("restore", uitd=True)
    link.trigger("restore", system_type=1, system_address=1)
    (state,) = link.read(61, SystemRef(1, 1)).objects
    assert state.state == SystemState.NORMAL  # type: ignore[attr-defined]
    assert link.read(81).objects[0].state == UitdState.NORMAL  # type: ignore[attr-defined]


def test_periodic_state_uploads() -> None:
    link = MemoryLink(config(periodic_interval=30))
    link.advance(95)
    marks = [decoded(f).type_mark for f in link.centre.uploads]
    assert marks == [21, 1, 21, 1, 21, 1]
    assert {e.action for e in link.engine.ledger.entries} == {"periodic"}


def test_periodic_state_does_not_pile_up_while_the_link_is_down() -> None:
    link = MemoryLink(config(periodic_interval=10), connect=False)
    link.advance(100)
    assert link.engine.pending == 2  # one type 21 and one type 1 waiting, not ten of each
    link._deliver(link.engine.connect(link.now))
    assert [decoded(f).type_mark for f in link.centre.uploads] == [21, 1]


# -- reads --------------------------------------------------------------------------------------

def test_every_read_is_answered_with_the_matching_upload_type() -> None:
    link = MemoryLink(config(
        systems=[{"type": 1, "address": 1, "description": "1号控制器", "version": "3.2"}],
        uitd_version="2.1", uitd_description="测试装置"))
    link.advance(10)
    link.trigger("fire_alarm", component="smoke-3F-east")
    link.trigger("analog", component="pressure-roof", value=280.0)
    link.trigger("silence", operator=3)
    now = label(10)

    (s,) = link.read(61, SystemRef(1, 1), SystemRef(9, 9)).objects  # unknown system left out
    assert s.state == SystemState.NORMAL | SystemState.FIRE_ALARM  # type: ignore[attr-defined]
    comps = link.read(62, ComponentRef(1, 1, SMOKE), ComponentRef(1, 1, MODULE)).objects
    assert [c.state for c in comps] == [  # type: ignore[attr-defined]
        ComponentState.NORMAL | ComponentState.FIRE_ALARM, ComponentState.NORMAL]
    assert comps[0].description == "3F 东侧走廊"  # type: ignore[attr-defined]
    (a,) = link.read(63, ComponentRef(11, 1, PRESSURE), ComponentRef(1, 1, SMOKE)).objects
    assert isinstance(a, AnalogValue) and (a.value, a.unit, a.time) == (280.0, "kPa", now)
    (op,) = link.read(64, ReadOperations(1, 1, 10, TimeLabel(0, 0, 0, 0, 0, 0))).objects
    assert (op.flags, op.operator) == (FacilityOperation.SILENCE, 3)  # type: ignore[attr-defined]
    assert link.read(65, SystemRef(1, 1)).objects == (FacilitySoftwareVersion(1, 1, 3, 2),)
    assert link.read(66, SystemRef(1, 1)).objects == (FacilityConfig(1, 1, "1号控制器"),)
    assert link.read(67, ComponentRef(1, 1, SMOKE)).objects == (
        ComponentConfig(1, 1, 42, SMOKE, "3F 东侧走廊"),)
    assert link.read(68, SystemRef(1, 1)).objects == (FacilityTime(1, 1, now),)
    (u,) = link.read(81, Reserved()).objects
    assert u.state == UitdState.NORMAL | UitdState.FIRE_ALARM  # type: ignore[attr-defined]
    assert link.read(84, ReadUitdOperations(5, label(0))).objects == ()  # none yet
    assert link.read(85, Reserved()).objects == (UitdSoftwareVersion(2, 1),)
    assert link.read(86, Reserved()).objects == (UitdConfig("测试装置"),)
    assert link.read(88, Reserved()).objects == (UitdTime(now),)


def test_reads_of_operation_records_honour_count_and_start_time() -> None:
    link = MemoryLink(config())
    for k in range(5):
        link.advance(10)
        link.trigger("acknowledge", operator=k)
    ops = link.read(64, ReadOperations(1, 1, 2, label(25))).objects
    assert [o.operator for o in ops] == [2, 3]  # type: ignore[attr-defined]
    assert len(link.read(64, ReadOperations(1, 1, 102, label(0))).objects) == 5


def test_reads_of_nothing_known_are_denied() -> None:
    link = MemoryLink(config())
    (reply,) = link.request(Command.REQUEST, 62, ComponentRef(1, 1, ComponentAddress.from_int(9)))
    assert reply.command == Command.DENY
    (reply,) = link.request(Command.CONTROL, 61, SystemRef(1, 1))  # a read is a request
    assert reply.command == Command.DENY


def test_unknown_commands_and_types_are_denied() -> None:
    link = MemoryLink(config())
    raw = link.centre.session.send(0x80, RawApplicationData(200, 1, b"\x00"), link.now)
    link.send(raw)
    assert link.centre.replies[raw[2]][0].command == Command.DENY
    (reply,) = link.request(Command.REQUEST, 2, ComponentStatus(1, 1, 42, SMOKE,
                                                                ComponentState.NORMAL))
    assert reply.command == Command.DENY


def test_answers_fit_the_profile_adu_limit() -> None:
    comps = [{"id": f"d{k}", "type": 42, "address": k, "description": f"探测器 {k}"}
             for k in range(22)]
    link = MemoryLink(config(profile="hikvision", components=comps))
    refs = [ComponentRef(1, 1, ComponentAddress.from_int(k)) for k in range(22)]
    answer = link.read(62, *refs)
    assert len(answer.objects) == 11  # 2 + 11 x 46 = 508 <= 512; a 12th would not fit


# -- controls -------------------------------------------------------------------------------------

def test_clock_sync_is_confirmed_and_later_time_labels_follow() -> None:
    link = MemoryLink(config())
    link.advance(10)
    synced = datetime(2025, 12, 31, 23, 59, 50)
    (reply,) = link.request(Command.CONTROL, 90, ClockSync(TimeLabel.from_datetime(synced)))
    assert reply.command == Command.CONFIRM
    link.advance(15)
    link.trigger("fire_alarm", component="smoke-3F-east")
    obj = decoded(link.centre.uploads[-1]).objects[0]
    assert obj.time == TimeLabel.from_datetime(synced + timedelta(seconds=15))  # type: ignore[attr-defined]
    assert link.read(88, Reserved()).objects == (UitdTime(TimeLabel(5, 0, 0, 1, 1, 26)),)


def test_retransmitted_control_is_confirmed_again_but_executed_once() -> None:
    link = MemoryLink(config())
    raw = link.centre.packet(Command.CONTROL, 90, [ClockSync(label(3600))])
    link.send(raw)
    link.advance(100)
    link.send(raw)  # our confirm was "lost": the centre resends the same packet
    assert [f.command for f in link.centre.replies[raw[2]]] == [3, 3]
    assert link.engine.clock.at(link.now) == START + timedelta(seconds=3700)
    assert len([r for r in link.engine.ledger.records if r["event"] == "clock_synced"]) == 1


@pytest.mark.parametrize("command", [Command.CONTROL, Command.REQUEST])
def test_check_post_is_answered_by_a_type_24_upload_with_bit_5(command: int) -> None:
    link = MemoryLink(config(check_post_answer=45))
    (reply,) = link.request(command, 91, CheckPost(10))
    assert reply.command == Command.CONFIRM
    link.advance(44)
    assert link.centre.uploads == []
    link.advance(2)
    (frame,) = link.centre.uploads
    adu = decoded(frame)
    assert adu.type_mark == 24
    (op,) = adu.objects
    assert op.flags == UitdOperation.CHECK_POST_ANSWER  # type: ignore[attr-defined]
    assert op.time == label(45)  # type: ignore[attr-defined]
    assert link.read(84, ReadUitdOperations(10, label(0))).objects == adu.objects


@pytest.mark.parametrize("setting", ["never", 700.0])
def test_check_post_left_unanswered(setting: object) -> None:
    # "never", or an operator slower than the centre's 10-minute window.
    link = MemoryLink(config(check_post_answer=setting))
    (reply,) = link.request(Command.CONTROL, 91, CheckPost(10))
    assert reply.command == Command.CONFIRM
    link.advance(3600)
    assert link.centre.uploads == []


def test_check_post_policy_changes_on_the_timeline() -> None:
    link = MemoryLink(config(check_post_answer="never", events=events(
        (10.0, "check_post_answer", {"after": 5}))))
    link.advance(20)
    link.request(Command.CONTROL, 91, CheckPost(1))
    link.advance(6)
    assert [decoded(f).type_mark for f in link.centre.uploads] == [24]


@pytest.mark.parametrize("command", [Command.CONTROL, Command.REQUEST])
def test_initialise_is_confirmed_and_resets_the_state(command: int) -> None:
    link = MemoryLink(config())
    link.trigger("fire_alarm", component="smoke-3F-east")
    link.trigger("silence")
    (reply,) = link.request(command, 89, Reserved())
    assert reply.command == Command.CONFIRM
    (state,) = link.read(61, SystemRef(1, 1)).objects
    assert state.state == SystemState.NORMAL  # type: ignore[attr-defined]
    assert link.read(64, ReadOperations(1, 1, 10, label(0))).objects == ()


# -- fault injection ------------------------------------------------------------------------------

def test_garbage_split_and_bad_checksums_still_deliver_everything() -> None:
    link = MemoryLink(config(events=events(
        (1.0, "garbage", {"count": 3, "bytes": 40}),
        (1.0, "bad_checksum", {"count": 2}),
        (1.0, "split", {"count": 2, "parts": 4, "gap": 0.01}),
        *[(2.0 + k, "fire_alarm", {"component": c}) for k, c in enumerate(
            ("smoke-3F-east", "heat-3F-kitchen", "callpoint-3F-stairs"))],
        (6.0, "fault", {"component": "module-pump-room"}))))
    link.advance(30)
    assert [e.status for e in link.engine.ledger.entries] == [Status.CONFIRMED] * 4
    # Two damaged transmissions in a row: the first alarm and its first resend.
    assert [e.attempts for e in link.engine.ledger.entries] == [3, 1, 1, 1]
    assert len(link.centre.uploads) == 4
    kinds = [e.kind for e in link.centre.errors]
    assert kinds.count(ErrorKind.BAD_CHECKSUM) == 2 and ErrorKind.GARBAGE in kinds
    assert [len(t.parts) for t in link.written[:2]] == [4, 4]
    assert link.engine.faults.injected == {"garbage": 3, "bad_checksum": 2, "split": 2}


def test_random_fault_rates_still_deliver_everything() -> None:
    link = MemoryLink(config(faults={"seed": 3, "garbage": 0.5, "bad_checksum": 0.3,
                                     "duplicate_frame": 0.3, "split": 0.3},
                             retries=10))
    for k in range(30):
        link.trigger("analog", component="pressure-roof", value=300.0 + k)
        link.advance(1)
    assert all(e.status is Status.CONFIRMED for e in link.engine.ledger.entries)
    values = [decoded(f).objects[0].value for f in link.centre.uploads]  # type: ignore[attr-defined]
    assert values == [300.0 + k for k in range(30)]
    assert link.engine.faults.injected["bad_checksum"] > 0


def test_duplicate_frame_is_seen_as_a_retransmission() -> None:
    link = MemoryLink(config(events=events((0.0, "duplicate_frame", {}))))
    link.advance(1)
    link.trigger("fire_alarm", component="smoke-3F-east")
    assert len(link.centre.transmissions(0)) == 2
    assert len(link.centre.uploads) == 1
    assert link.engine.ledger.entries[0].status is Status.CONFIRMED


def test_withheld_and_duplicated_answers() -> None:
    link = MemoryLink(config(events=events((0.0, "withhold_confirm", {"count": 1}),
                                           (0.0, "duplicate_confirm", {"count": 1}))))
    link.advance(0)
    raw = link.centre.packet(Command.REQUEST, 81, [Reserved()])
    link.send(raw)
    assert raw[2] not in link.centre.replies  # withheld
    link.send(raw)  # the centre resends: answered twice now
    assert [f.command for f in link.centre.replies[raw[2]]] == [5, 5]
    link.send(link.centre.packet(Command.REQUEST, 81, [Reserved()]))
    assert len(link.centre.replies[raw[2] + 1]) == 1


def test_damaged_request_is_denied() -> None:
    link = MemoryLink(config())
    raw = bytearray(link.centre.packet(Command.REQUEST, 81, [Reserved()]))
    raw[-3] ^= 0x55
    link.send(bytes(raw))
    assert [f.command for f in link.centre.replies[raw[2]]] == [Command.DENY]


def test_link_loss_stops_sending_and_answering_then_delivers_the_backlog() -> None:
    link = MemoryLink(config(confirm_timeout=5, events=events(
        (10.0, "link_loss", {"duration": 30}),
        (15.0, "fire_alarm", {"component": "smoke-3F-east"}),
        (20.0, "fault", {"component": "module-pump-room"}))))
    link.advance(12)
    link.send(link.centre.packet(Command.REQUEST, 81, [Reserved()]))
    link.advance(25)
    assert link.centre.uploads == [] and not link.centre.replies
    link.advance(4)  # back at 40
    assert [decoded(f).type_mark for f in link.centre.uploads] == [2, 2]
    assert link.centre.uploads[0].serial == 0
    assert not link.engine.ledger.undelivered()


def test_link_loss_requeues_what_was_in_flight() -> None:
    link = MemoryLink(config(confirm_timeout=5))
    link.centre.policy = lambda frame, n: "ignore"
    link.trigger("fire_alarm", component="smoke-3F-east")
    link.trigger("link_loss", duration=60)
    link.centre.policy = lambda frame, n: "confirm"
    link.advance(61)
    (entry,) = link.engine.ledger.entries
    assert entry.status is Status.CONFIRMED and entry.attempts == 2
    assert "requeued" in [r["event"] for r in link.engine.ledger.records]


def test_disconnect_requeues_and_reconnect_delivers_with_new_numbering() -> None:
    link = MemoryLink(config())
    link.centre.policy = lambda frame, n: "ignore"
    link.trigger("fire_alarm", component="smoke-3F-east")
    link.engine.disconnect(link.now)
    link.trigger("fault", component="module-pump-room")
    link.centre.policy = lambda frame, n: "confirm"
    link._deliver(link.engine.connect(link.now))
    assert [e.status for e in link.engine.ledger.entries] == [Status.CONFIRMED] * 2
    assert link.engine.ledger.entries[0].serials == [0, 0]  # numbering restarts per link (表1)


# -- dialects -------------------------------------------------------------------------------------

def test_hikvision_addresses_serials_and_version() -> None:
    link = MemoryLink(config(profile="hikvision", uitd_address=123456789012))
    link.trigger("fire_alarm", component="smoke-3F-east")
    (frame,) = link.centre.uploads
    assert frame.serial == 1 and frame.version == HIKVISION.version
    assert address_to_int(frame.source, "big") == 123456789012


def test_no_time_labels_profile() -> None:
    link = MemoryLink(config(profile="no-time-labels"))
    link.trigger("fire_alarm", component="smoke-3F-east")
    adu = decoded(link.centre.uploads[0], NO_TIME_LABELS)
    assert adu.objects[0].time is None  # type: ignore[attr-defined]
    assert len(link.centre.uploads[0].adu) == 2 + 40


def test_extra_time_labels_profile() -> None:
    link = MemoryLink(config(profile="extra-time-labels"))
    replies = link.request(Command.REQUEST, 85, Reserved())
    assert len(replies[0].adu) == 2 + 2 + 6
    adu = decode_adu(replies[0].adu, EXTRA_TIME_LABELS)
    assert adu.objects[0].time == label(0)  # type: ignore[union-attr]


def test_dahua_keepalive_when_idle() -> None:
    link = MemoryLink(config(profile="dahua", keepalive_interval=20))
    link.advance(45)
    keepalives = [f for _, f in link.centre.frames if f.command == DAHUA.keepalive_command]
    assert len(keepalives) == 2
    assert link.engine.stats["keepalive_confirmed"] == 2
    assert link.engine.ledger.entries == []  # link supervision is not an upload


def test_handshake_dialect_opens_with_the_1_byte_adu() -> None:
    link = MemoryLink(config(profile="handshake"))
    first = link.centre.frames[0][1]
    assert (first.command, first.adu, first.version) == (2, b"\x16", HANDSHAKE.version)
    assert link.centre.session.stats["handshakes"] == 1  # answered with the 0x17 ADU
    assert link.engine.stats["handshake_confirmed"] == 1  # and the UITD took that as a confirm
    link.trigger("fire_alarm", component="smoke-3F-east")
    assert decoded(link.centre.uploads[-1]).type_mark == 2


def test_state_words_without_the_normal_bit() -> None:
    link = MemoryLink(config(normal_bit=False))
    link.trigger("fire_alarm", component="smoke-3F-east")
    assert decoded(link.centre.uploads[0]).objects[0].state == ComponentState.FIRE_ALARM  # type: ignore[attr-defined]


def test_confirm_time_echo_and_addresses_swapped() -> None:
    link = MemoryLink(config(profile="handshake", centre_address=0xABCDEF))
    raw = link.centre.packet(Command.REQUEST, 81, [Reserved()])
    link.send(raw)
    (reply,) = link.centre.replies[raw[2]]
    assert reply.time == centre_clock()  # this dialect echoes the request's time
    assert reply.source == link.engine.local and reply.destination == link.engine.peer


def test_uitd_address_and_profile_defaults() -> None:
    cfg = replace(config(), uitd_address=0x0379)
    link = MemoryLink(cfg)
    link.trigger("fire_alarm", component="smoke-3F-east")
    assert link.centre.uploads[0].source == bytes.fromhex("790300000000")


def test_the_sample_scenario_runs_to_the_end_with_everything_delivered() -> None:
    from pathlib import Path

    from simulators.panel import load_scenario

    sample = Path(__file__).resolve().parents[2] / "simulators" / "panel" / "sample.toml"
    link = MemoryLink(load_scenario(sample))
    link.advance(120)
    ledger = link.engine.ledger
    assert [e.action for e in ledger.entries] == [
        "fire_alarm", "start", "feedback", "analog", "fault", "silence", "restore",
        "mains_fault", "reset", "reset"]
    assert not ledger.undelivered()
    assert ledger.entries[6].attempts == 2  # the damaged transmission was denied and resent
    assert link.engine.faults.injected == {"garbage": 2, "bad_checksum": 1}
    mains = next(e for e in ledger.entries if e.action == "mains_fault")
    assert mains.sent_at == 65.0  # held back by the link loss from 50 s to 65 s
    first = decoded(link.centre.uploads[0]).objects[0]
    assert first.time == TimeLabel(5, 0, 8, 1, 5, 24)  # type: ignore[attr-defined]
