"""The UITD fleet against a real TCP centre built from the codec (tests/sim_uitd/helpers.py).

Every assertion is about what crossed the wire: frames the centre decoded, the serials they
carried, the answers the UITDs gave. Waits are on conditions with generous deadlines.
"""

from __future__ import annotations

import asyncio
from typing import Any

from protocols.gb26875 import (
    ApplicationData,
    CheckPost,
    ClockSync,
    Command,
    ComponentAddress,
    ComponentRef,
    ComponentState,
    ComponentStatus,
    Frame,
    Reserved,
    SystemRef,
    SystemStatus,
    TimeLabel,
    UitdOperation,
    UitdOperationRecord,
    UitdStatus,
    address_from_int,
    address_to_int,
    decode_adu,
)
from simulators.uitd import Burst, Drop, FleetSpec, UitdFleet, identities, parse_spec
from tests.infra.ports import free_port

from .helpers import WAIT, CentreLink, MiniCentre, centre


def spec(c: MiniCentre, **kw: Any) -> FleetSpec:
    base: dict[str, Any] = {"centre": c.address, "uitds": 4, "state_interval": 0,
                            "detectors": 4, "confirm_timeout": 5.0, "reconnect_min": 0.05,
                            "reconnect_max": 0.2}
    return parse_spec(base | kw)


def raw_of(s: FleetSpec, index: int) -> bytes:
    u = identities(s)[index]
    return address_from_int(u.address, u.profile.address_byte_order)


def is_fire(link: CentreLink, frame: Frame) -> bool:
    if frame.adu[:1] != b"\x02":
        return False
    (obj,) = link.decoded(frame).objects
    return isinstance(obj, ComponentStatus) and bool(obj.state & ComponentState.FIRE_ALARM)


async def test_uploads_are_well_formed_confirmed_and_match_the_ground_truth() -> None:
    async with centre() as c:
        s = spec(c, uitds=6, state_interval=1.0, rate=20,
                 bursts=[{"at": 0.3, "fraction": 0.5, "alarms": 2, "spread": 0.2,
                          "reset_after": 0.5}])
        async with UitdFleet(s) as fleet:
            assert await fleet.wait_connected(WAIT)
            sources = {raw_of(s, i): i for i in range(6)}
            # each UITD's periodic state (21 then 1), the burst's alarms and their resets
            await c.wait_for(lambda: all(
                sum(f.source == raw and f.adu[0] == 21 for _, f in c.uploads) >= 2
                for raw in sources))  # announced at connect, then periodic
            await c.wait_for(lambda: sum(f.adu[0] == 4 for _, f in c.uploads) == 3)
            assert await fleet.drain(WAIT)
            report = fleet.report()
    assert report.ok, report.totals()
    assert len(report.ledger.alarms) == 6  # 3 UITDs x 2 detectors
    types = set()
    for link, frame in c.uploads:
        assert frame.source in sources and frame.destination == bytes(6)
        assert frame.command == Command.SEND_DATA
        adu = link.decoded(frame)  # raises if an object does not parse
        types.add(adu.type_mark)
    assert types == {1, 2, 3, 4, 21}
    # the ground truth: every fire alarm once at the centre, under its UITD and a serial of it
    for alarm in report.ledger.alarms:
        raw = raw_of(s, alarm.uitd.index)
        found = [f for link, f in c.uploads if f.source == raw and is_fire(link, f)
                 and f.serial in alarm.entry.serials
                 and link.decoded(f).objects[0].address.value == alarm.detector]  # type: ignore[attr-defined]
        assert len(found) == 1, alarm.to_data()
        (obj,) = decode_adu(found[0].adu).objects  # type: ignore[union-attr]
        assert isinstance(obj, ComponentStatus) and obj.component_type == 42
        assert obj.description == f"{alarm.detector}号 感烟探测器"
    fires = [f for link, f in c.uploads if is_fire(link, f)]
    assert len(fires) == 6
    t = report.totals()
    assert t["confirmed"] == t["uploads"] == len(c.uploads) and t["resends"] == 0
    assert report.ledger.latency_summary()["count"] == t["confirmed"]


async def test_an_unconfirmed_upload_is_resent_with_the_same_serial_and_bytes() -> None:
    async with centre() as c:
        c.policy = lambda link, f, n: "ignore" if is_fire(link, f) and n == 1 else "confirm"
        s = spec(c, uitds=2, confirm_timeout=0.5)
        async with UitdFleet(s) as fleet:
            assert await fleet.wait_connected(WAIT)
            fleet.burst(Burst(at=0, fraction=1.0, alarms=1, spread=0.0))
            assert await fleet.drain(WAIT)
            report = fleet.report()
    assert report.ok, report.totals()
    for alarm in report.ledger.alarms:
        link = c.link(raw_of(s, alarm.uitd.index))
        (serial,) = alarm.entry.serials
        copies = [f for f in link.frames if f.command == Command.SEND_DATA and f.serial == serial]
        # §6.5.4: the same packet again (a third copy only if the machine stalled past the
        # timeout once more; never a new serial)
        assert len(copies) >= 2 and all(f.adu == copies[0].adu for f in copies)
        assert alarm.entry.attempts == len(copies)
    assert report.totals()["resends"] == sum(a.entry.attempts - 1 for a in report.ledger.alarms)


async def test_a_centre_that_never_confirms_fails_the_upload_after_the_retries() -> None:
    async with centre() as c:
        c.policy = lambda link, f, n: "ignore" if is_fire(link, f) else "confirm"
        s = spec(c, uitds=1, confirm_timeout=0.2, retries=2)
        async with UitdFleet(s) as fleet:
            assert await fleet.wait_connected(WAIT)
            fleet.devices[0].fire_alarm(1)
            assert await fleet.wait_until(lambda: fleet.ledger.counts["failed"] == 1, WAIT)
            report = fleet.report()
    assert not report.ok and report.ledger.undelivered_alarms()
    (alarm,) = report.ledger.alarms
    assert alarm.entry.attempts == 3 and alarm.to_data()["status"] == "failed"
    link = c.link(raw_of(s, 0))
    assert len({f.serial for f in link.frames if is_fire(link, f)}) == 1


async def test_a_denied_upload_is_resent_at_once() -> None:
    async with centre() as c:
        c.policy = lambda link, f, n: "deny" if is_fire(link, f) and n == 1 else "confirm"
        s = spec(c, uitds=1)
        async with UitdFleet(s) as fleet:
            assert await fleet.wait_connected(WAIT)
            fleet.devices[0].fire_alarm(2)
            assert await fleet.drain(WAIT)
            report = fleet.report()
    assert report.ok and report.ledger.alarms[0].entry.attempts == 2


async def test_dropped_links_reconnect_and_deliver_what_was_raised_meanwhile() -> None:
    async with centre() as c:
        s = spec(c, uitds=3)
        async with UitdFleet(s) as fleet:
            assert await fleet.wait_connected(WAIT)
            assert fleet.drop(Drop(at=0, fraction=1.0, duration=0.3)) == 3
            assert fleet.connected == 0
            fleet.burst(Burst(at=0, fraction=1.0, alarms=1, spread=0.0))  # while offline
            assert await fleet.drain(WAIT)
            # the centre hangs up on one: it dials again by itself
            c.link(raw_of(s, 0)).close()
            await c.wait_for(lambda: len(c.by_address[raw_of(s, 0)]) == 3)
            assert await fleet.wait_connected(WAIT)
            fleet.devices[0].fire_alarm(4)
            assert await fleet.drain(WAIT)
            report = fleet.report()
    assert report.ok, report.totals()
    t = report.totals()
    assert t["drops"] == 3 and t["lost"] == 1 and t["connects"] == 3 + 3 + 1
    for i in range(3):
        assert len(c.by_address[raw_of(s, i)]) >= 2  # a new connection after the drop
    fires = [(f.source, link) for link, f in c.uploads if is_fire(link, f)]
    assert len(fires) == 4
    for source, link in fires[:3]:  # raised offline, sent on the new connection
        assert link is c.by_address[source][1]


async def test_downstream_commands_are_answered() -> None:
    async with centre() as c:
        s = spec(c, uitds=2, check_post_answer=0.1)
        async with UitdFleet(s) as fleet:
            assert await fleet.wait_connected(WAIT)
            await c.wait_for(lambda: all(raw_of(s, i) in c.by_address for i in range(2)))
            link = c.link(raw_of(s, 1))

            async def read(type_mark: int, *objects: Any) -> ApplicationData:
                reply = await link.request(Command.REQUEST, type_mark, objects)
                assert reply.command == Command.RESPONSE
                return link.decoded(reply)

            uitd = await read(81, Reserved())
            assert uitd.type_mark == 21 and isinstance(uitd.objects[0], UitdStatus)
            system = await read(61, SystemRef(1, 1))
            assert system.type_mark == 1 and isinstance(system.objects[0], SystemStatus)
            comp = await read(62, ComponentRef(1, 1, ComponentAddress.from_int(3)))
            (obj,) = comp.objects
            assert isinstance(obj, ComponentStatus) and obj.description == "3号 感烟探测器"
            missing = await link.request(Command.REQUEST, 62,
                                         [ComponentRef(1, 1, ComponentAddress.from_int(999))])
            assert missing.command == Command.DENY  # nothing by that reference
            # 90: clock sync; later time labels follow the centre's clock
            synced = TimeLabel(0, 30, 9, 2, 3, 25)  # 2025-03-02 09:30:00
            reply = await link.request(Command.CONTROL, 90, [ClockSync(synced)])
            assert reply.command == Command.CONFIRM
            fleet.devices[1].fire_alarm(1)
            await c.wait_for(lambda: any(is_fire(x, f) for x, f in c.uploads))
            (fire,) = [link.decoded(f).objects[0] for x, f in c.uploads if is_fire(x, f)]
            assert isinstance(fire, ComponentStatus) and fire.time is not None
            assert (fire.time.year, fire.time.month, fire.time.day) == (25, 3, 2)
            # 91: check-post; the operator answers with a type 24 upload, bit 5
            reply = await link.request(Command.CONTROL, 91, [CheckPost(1)])
            assert reply.command == Command.CONFIRM
            await c.wait_for(lambda: any(f.adu[0] == 24 for _, f in c.uploads))
            (answer,) = [link.decoded(f).objects[0] for _, f in c.uploads if f.adu[0] == 24]
            assert isinstance(answer, UitdOperationRecord)
            assert answer.flags & UitdOperation.CHECK_POST_ANSWER
            assert await fleet.drain(WAIT)
            report = fleet.report()
    assert report.ok
    cmds = report.commands()
    assert cmds["answered_81"] == cmds["answered_61"] == 1 and cmds["answered_62"] == 1
    assert cmds["denied_62"] == 1 and cmds["executed_90"] == cmds["executed_91"] == 1
    assert cmds["clock_synced"] == 1


async def test_dialects_address_and_frame_as_their_profile() -> None:
    s0 = FleetSpec(uitds=3, profiles=("standard", "hikvision", "no-time-labels"))
    profiles = {raw_of(s0, i): identities(s0)[i].profile.name for i in range(3)}
    async with centre(profiles) as c:
        s = spec(c, uitds=3, profiles=["standard", "hikvision", "no-time-labels"])
        async with UitdFleet(s) as fleet:
            assert await fleet.wait_connected(WAIT)
            fleet.burst(Burst(at=0, fraction=1.0, alarms=1, spread=0.0))
            assert await fleet.drain(WAIT)
            report = fleet.report()
    assert report.ok
    ids = identities(s)
    hik = c.link(raw_of(s, 1))
    assert address_to_int(hik.address or b"", "big") == ids[1].address  # big-endian SN digits
    assert address_to_int(c.link(raw_of(s, 0)).address or b"", "little") == ids[0].address
    assert hik.uploads[0].serial == 1  # Hikvision numbers from 1
    assert c.link(raw_of(s, 0)).uploads[0].serial == 0  # the standard from 0 (表1)
    plain = c.link(raw_of(s, 2))
    (obj,) = plain.decoded(next(f for f in plain.uploads if is_fire(plain, f))).objects
    assert isinstance(obj, ComponentStatus) and obj.time is None  # no per-object time label


async def test_a_slow_line_delivers_no_sooner_than_its_baud_rate_allows() -> None:
    async with centre() as c:
        s = spec(c, uitds=1, slow_fraction=1.0, slow_baud=1200)
        async with UitdFleet(s) as fleet:
            assert await fleet.wait_connected(WAIT)
            loop = asyncio.get_running_loop()
            start = loop.time()
            fleet.devices[0].fire_alarm(1)
            await c.wait_for(lambda: any(is_fire(x, f) for x, f in c.uploads))
            took = loop.time() - start
            assert await fleet.drain(WAIT)
            assert fleet.report().ok
    # a 76-byte component-state frame takes 76 x 10 bits / 1200 baud = 0.633 s on the line
    assert took >= 76 * 10 / 1200 * 0.95


async def test_uitds_keep_dialing_until_a_late_centre_listens() -> None:
    port = free_port()
    s = parse_spec({"centre": f"127.0.0.1:{port}", "uitds": 3, "state_interval": 0,
                    "reconnect_min": 0.05, "reconnect_max": 0.2})
    fleet = UitdFleet(s)
    await fleet.start(check=False)  # no test connection: nothing listens yet
    late = MiniCentre()
    try:
        assert await fleet.wait_until(lambda: fleet.ledger.counts["dial_failed"] >= 6, WAIT)
        assert fleet.connected == 0
        await late.start(port)
        assert await fleet.wait_connected(WAIT)
        assert await fleet.drain(WAIT)
        report = fleet.report()
    finally:
        fleet.stop()
        await late.stop()
    assert report.ok
    assert report.ledger.errors["connect: connection refused"] >= 6
    assert len(late.by_address) == 3  # each announced itself once it got through


async def test_a_bad_line_costs_resends_but_loses_nothing() -> None:
    async with centre() as c:
        # retries enough that a run of damaged resends (a damaged frame written twice is
        # denied twice) cannot exhaust them: this test is about damage, not giving up. What the
        # centre could not answer at all is resent at the confirm timeout, short here.
        s = spec(c, uitds=4, rate=20, retries=30, confirm_timeout=1.0,
                 faults={"garbage": 0.3, "split": 0.3, "bad_checksum": 0.15,
                         "duplicate_frame": 0.2, "split_gap": 0.005})
        async with UitdFleet(s) as fleet:
            assert await fleet.wait_connected(WAIT)
            fleet.burst(Burst(at=0, fraction=1.0, alarms=3, spread=0.5))
            assert await fleet.drain(WAIT)
            report = fleet.report()
    assert report.ok, report.totals()
    errors = [e.kind.value for link in c.links for e in link.errors]
    assert "garbage" in errors and "bad_checksum" in errors  # the faults reached the wire
    assert report.totals()["resends"] >= errors.count("bad_checksum") > 0  # denied, resent
    fires = [(f.source, link.decoded(f).objects[0].address.value)  # type: ignore[attr-defined]
             for link, f in c.uploads if is_fire(link, f)]
    assert len(fires) == len(set(fires)) == 12  # each alarm taken once, duplicates known
