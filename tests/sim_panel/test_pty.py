"""Conversations with the simulator over a real pty, opened with pyserial as the agent will.

The scenario runs on a manual clock: the test advances it, so confirm timeouts of 10 s and a
timeline of minutes cost no waiting. Only the wire (pacing, split-frame gaps) runs in real time.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from protocols.gb26875 import (
    AnalogValue,
    CheckPost,
    ClockSync,
    Command,
    ComponentAddress,
    ComponentRef,
    ComponentState,
    ComponentStatus,
    ErrorKind,
    Frame,
    Reserved,
    SystemRef,
    SystemState,
    SystemStatus,
    TimeLabel,
    UitdOperation,
    UitdOperationRecord,
    UitdState,
    UitdStatus,
)
from simulators.panel import ManualClock, Status

from .conftest import panel_config, running
from .helpers import START, Answer, decoded

SMOKE = ComponentAddress.from_int(3001)


def manual(panel_clock: object) -> ManualClock:
    assert isinstance(panel_clock, ManualClock)
    return panel_clock


async def test_scripted_fire_alarm_arrives_with_description_and_time_label() -> None:
    cfg = panel_config(events=[{"at": 5.0, "action": "fire_alarm",
                                "component": "smoke-3F-east"}])
    async with running(cfg) as (panel, centre):
        manual(panel.clock).advance(5)
        frame = await centre.upload()
        (obj,) = decoded(frame).objects
        assert isinstance(obj, ComponentStatus)
        assert (obj.component_type, obj.address, obj.description) == (42, SMOKE, "3F 东侧走廊")
        assert obj.state & ComponentState.FIRE_ALARM
        assert obj.time == TimeLabel.from_datetime(START + timedelta(seconds=5))
        ledger = panel.engine.ledger
        await panel.wait_until(lambda: ledger.entries[0].status is Status.CONFIRMED)


async def test_never_confirmed_means_exactly_1_plus_3_transmissions_then_failed() -> None:
    async with running(panel_config(confirm_timeout=10)) as (panel, centre):
        clock, ledger = manual(panel.clock), panel.engine.ledger
        centre.policy = lambda frame, n: "ignore"
        panel.trigger("fire_alarm", component="smoke-3F-east")
        await centre.wait_for(lambda: len(centre.transmissions(0)) == 1)
        for n in (2, 3, 4):
            clock.advance(10)
            await centre.wait_for(lambda n=n: len(centre.transmissions(0)) == n)  # type: ignore[misc]
        clock.advance(10)
        await panel.wait_until(lambda: ledger.entries[0].status is Status.FAILED)
        clock.advance(100)
        # Nothing more may come: the transaction is over. The positive control on the same
        # line: a new upload, sent after anything the advance could have set off, arrives.
        panel.trigger("fault", component="module-pump-room")
        await centre.wait_for(lambda: len(centre.transmissions(1)) == 1)
        assert len(centre.transmissions(0)) == 4
        assert len({f.encode() for f in centre.transmissions(0)}) == 1
        assert ledger.entries[0].attempts == 4


async def test_withheld_confirms_and_deny_lead_to_resends() -> None:
    async with running(panel_config(confirm_timeout=10)) as (panel, centre):
        clock, ledger = manual(panel.clock), panel.engine.ledger
        def policy(frame: Frame, n: int) -> Answer:
            return "ignore" if n == 1 else "deny" if n == 2 else "confirm"

        centre.policy = policy
        panel.trigger("fault", component="module-pump-room")
        await centre.wait_for(lambda: len(centre.transmissions(0)) == 1)
        clock.advance(10)  # timeout -> resend -> denied -> immediate resend -> confirmed
        await panel.wait_until(lambda: ledger.entries[0].status is Status.CONFIRMED)
        assert ledger.entries[0].attempts == 3
        assert [r["why"] for r in ledger.records if r["event"] == "resent"] == [
            "no confirm", "denied"]


async def test_reads_are_answered_consistently() -> None:
    async with running(panel_config()) as (panel, centre):
        panel.trigger("fire_alarm", component="smoke-3F-east")
        panel.trigger("analog", component="pressure-roof", value=312.5)
        await centre.upload(2)
        (system,) = (await centre.read(61, SystemRef(1, 1))).objects
        assert isinstance(system, SystemStatus) and system.state & SystemState.FIRE_ALARM
        (comp,) = (await centre.read(62, ComponentRef(1, 1, SMOKE))).objects
        assert isinstance(comp, ComponentStatus)
        assert comp.state == ComponentState.NORMAL | ComponentState.FIRE_ALARM
        assert comp.description == "3F 东侧走廊"
        (analog,) = (await centre.read(63, ComponentRef(11, 1,
                                                        ComponentAddress.from_int(1)))).objects
        assert isinstance(analog, AnalogValue) and (analog.value, analog.unit) == (312.5, "kPa")
        (uitd,) = (await centre.read(81, Reserved())).objects
        assert isinstance(uitd, UitdStatus)
        assert uitd.state == UitdState.NORMAL | UitdState.FIRE_ALARM
        reply = await centre.request(Command.REQUEST, 62,
                                     [ComponentRef(1, 1, ComponentAddress.from_int(77))])
        assert reply.command == Command.DENY


async def test_clock_sync_changes_later_time_labels() -> None:
    async with running(panel_config()) as (panel, centre):
        clock = manual(panel.clock)
        synced = datetime(2025, 3, 4, 5, 6, 7)
        reply = await centre.request(Command.CONTROL, 90, [ClockSync(
            TimeLabel.from_datetime(synced))])
        assert reply.command == Command.CONFIRM
        clock.advance(30)
        panel.trigger("fire_alarm", component="smoke-3F-east")
        obj = decoded(await centre.upload()).objects[0]
        assert isinstance(obj, ComponentStatus)
        assert obj.time == TimeLabel.from_datetime(synced + timedelta(seconds=30))


async def test_check_post_is_answered_by_a_type_24_upload_with_bit_5() -> None:
    async with running(panel_config(check_post_answer=90)) as (panel, centre):
        clock = manual(panel.clock)
        reply = await centre.request(Command.CONTROL, 91, [CheckPost(5)])
        assert reply.command == Command.CONFIRM
        clock.advance(89)
        await asyncio.sleep(0.05)
        assert centre.uploads == []
        clock.advance(1)
        adu = decoded(await centre.upload())
        (op,) = adu.objects
        assert adu.type_mark == 24 and isinstance(op, UitdOperationRecord)
        assert op.flags & UitdOperation.CHECK_POST_ANSWER


async def test_garbage_split_and_bad_checksum_injection_still_delivers_everything() -> None:
    components = ("smoke-3F-east", "heat-3F-kitchen", "callpoint-3F-stairs", "module-pump-room")
    cfg = panel_config(events=[
        {"at": 1.0, "action": "garbage", "count": 4, "bytes": 32},
        {"at": 1.0, "action": "split", "count": 3, "parts": 5, "gap": 0.005},
        {"at": 1.0, "action": "bad_checksum", "count": 2},
        *[{"at": 2.0, "action": "fire_alarm", "component": c} for c in components]])
    async with running(cfg) as (panel, centre):
        manual(panel.clock).advance(2)
        ledger = panel.engine.ledger
        await panel.wait_until(lambda: len(ledger.entries) == 4 and not ledger.undelivered())
        got = [decoded(f).objects[0] for f in centre.uploads]
        assert sorted(o.address.value for o in got) == [101, 3001, 3002, 3010]  # type: ignore[attr-defined]
        kinds = [e.kind for e in centre.errors]
        assert kinds.count(ErrorKind.BAD_CHECKSUM) == 2 and ErrorKind.GARBAGE in kinds


async def test_pacing_makes_frames_take_their_wire_time() -> None:
    # A 78-byte component-state upload takes 78 x 10 / 9600 = 81 ms on a real line; the pty
    # would deliver it at once. Lower bounds only: a loaded machine may always be slower.
    async with running(panel_config(), pace=9600) as (panel, centre):
        loop = asyncio.get_running_loop()
        started = loop.time()
        panel.trigger("fire_alarm", component="smoke-3F-east")
        frame = await centre.upload()
        arrived = centre.frames[-1][0]
        assert len(frame.encode()) == 78
        assert arrived - started >= 0.9 * 78 * 10 / 9600
        # A read of three components: 2 + 3 x 46 = 140-byte ADU, a 170-byte answer (177 ms).
        sent = loop.time()
        refs = [ComponentRef(1, 1, ComponentAddress.from_int(a)) for a in (3001, 3002, 3010)]
        await centre.read(62, *refs)
        assert centre.frames[-1][0] - sent >= 0.9 * 170 * 10 / 9600
