"""The alarm book's lifecycle, one rule at a time: open, re-raise, clear, reset, acknowledge,
resolve, what "open" means, the filters, the conflicts, hostile text kept raw."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.alarms.book import AlarmBook, event_signal, gateway_signal
from collector.alarms.model import AlarmChange, AlarmConflict, AlarmNotFound, Change, SiteChange
from protocols.wire import Bus, EventType, Priority, Source

from .helpers import EPOCH, NOW, PUMP, SMOKE, SMOKE_2, SYSTEM, Clock, Sent, book, ev, sig

FA, FAULT = EventType.FIRE_ALARM, EventType.FAULT


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def b(tmp_path: Path, clock: Clock) -> AlarmBook:
    return book(tmp_path, clock, Sent())


def test_a_fire_alarm_opens_an_alarm_with_every_field(b: AlarmBook) -> None:
    b.apply([sig(SMOKE, FA, 7, source_ms=NOW - 2_000)])
    [a] = b.list()
    assert (a.gateway, a.site, a.source, a.type, a.priority) == \
        ("gw-1", "north-1", SMOKE.id, "fire_alarm", "fire")
    assert a.description == "三层东走廊感烟探测器"
    assert (a.raised_ms, a.gateway_ms, a.panel_ms) == (NOW, NOW - 500 + 7, NOW - 2_000)
    assert (a.state, a.raise_count, a.acknowledged, a.resolution) == ("active", 1, False, None)
    assert a.id.startswith("a") and len(a.id) == 17 and a.open
    assert a.escalation_policy == "fire" and a.escalation_step == 0  # step 0 is at once
    assert [e.what for e in b.timeline(a.id)] == ["raised", "notified"]
    assert b.get(a.id) == a


def test_what_opens_an_alarm_comes_from_the_wire_priorities() -> None:
    opened = {t for t in EventType if event_signal("g", "s", ev(SMOKE, t, 1), 0) is not None
              and t not in (EventType.RESET, EventType.OPERATION)}
    from protocols.wire import DEFAULT_PRIORITY
    assert opened == {t for t, p in DEFAULT_PRIORITY.items() if p <= Priority.ALARM}
    assert EventType.DOOR_OPEN in opened and EventType.DISABLED not in opened
    assert event_signal("g", "s", ev(SMOKE, EventType.STARTED, 1), 0) is None


def test_a_re_raise_while_open_counts_and_does_not_open_another(b: AlarmBook,
                                                                 clock: Clock) -> None:
    b.apply([sig(SMOKE, FA, 1)])
    clock.now += 1000
    b.apply([sig(SMOKE, FA, 2)])
    b.apply([sig(SMOKE, FA, 2)])  # the same record again (a redelivery): not a re-raise
    b.apply([sig(SMOKE, FA, 1)])  # an older one late: nothing
    [a] = b.list(state="all")
    assert a.raise_count == 2 and a.raised_ms == NOW
    assert [e.what for e in b.timeline(a.id)] == ["raised", "notified", "re-raised"]


def test_other_sources_types_and_gateways_are_other_alarms(b: AlarmBook) -> None:
    b.apply([sig(SMOKE, FA, 1), sig(SMOKE, FAULT, 2), sig(SMOKE_2, FA, 3),
             sig(SMOKE, FA, 1, gateway="gw-2")])
    assert len(b.list()) == 4


def test_a_restore_clears_and_an_acknowledged_cleared_alarm_is_closed(b: AlarmBook,
                                                                       clock: Clock) -> None:
    b.apply([sig(PUMP, FAULT, 1)])
    [a] = b.list()
    clock.now += 5_000
    b.apply([sig(PUMP, FAULT, 2, active=False)])
    a = b.get(a.id)  # type: ignore[assignment]
    assert a.state == "cleared" and a.cleared_ms == NOW + 5_000
    assert a.open, "cleared but nobody acknowledged it: still open"
    assert b.list() == [] and b.list(state="cleared") == [a] and b.list(state="open") == [a]
    clock.now += 1_000
    acked = b.acknowledge(a.id, by="li.wei", note="pump reset on site", origin="10.0.0.7")
    assert not acked.open and b.list(state="open") == [] and b.list(state="closed") == [acked]
    assert (acked.acknowledged_by, acked.acknowledged_ms, acked.note) == \
        ("li.wei", NOW + 6_000, "pump reset on site")
    # The same condition again: a new alarm, since the first is closed.
    b.apply([sig(PUMP, FAULT, 3)])
    assert len(b.list(state="all")) == 2 and b.list()[0].id != a.id


def test_acknowledged_but_active_is_open_and_a_clear_closes_it(b: AlarmBook) -> None:
    b.apply([sig(SMOKE, FA, 1)])
    [a] = b.list()
    b.acknowledge(a.id, by="duty", note=None, origin="cli")
    assert b.list(state="open")[0].acknowledged
    b.apply([sig(SMOKE, FA, 2)])  # still burning: a re-raise of the same alarm
    assert b.get(a.id).raise_count == 2  # type: ignore[union-attr]
    b.apply([sig(SMOKE, FA, 3, active=False)])
    assert b.list(state="open") == [] and not b.get(a.id).open  # type: ignore[union-attr]


def test_a_re_raise_after_the_clear_of_an_unacknowledged_alarm_reactivates_it(
        b: AlarmBook) -> None:
    b.apply([sig(SMOKE, FA, 1)])
    b.apply([sig(SMOKE, FA, 2, active=False)])
    b.apply([sig(SMOKE, FA, 3)])
    [a] = b.list(state="all")
    assert (a.state, a.cleared_ms, a.raise_count) == ("active", None, 2)
    assert [e.what for e in b.timeline(a.id)] == ["raised", "notified", "cleared", "re-raised"]


def test_a_panel_reset_clears_its_latched_fire_alarms_only(b: AlarmBook) -> None:
    b.apply([sig(SMOKE, FA, 1), sig(SMOKE_2, FA, 2), sig(PUMP, FAULT, 3),
             sig(SMOKE, FA, 4, gateway="gw-2")])
    b.apply([sig(SYSTEM, EventType.RESET, 5)])
    states = {(a.gateway, a.source, a.type): a.state for a in b.list(state="all")}
    assert states == {("gw-1", SMOKE.id, "fire_alarm"): "cleared",      # same panel 1-1
                      ("gw-1", SMOKE_2.id, "fire_alarm"): "active",    # panel 2-1
                      ("gw-1", PUMP.id, "fault"): "active",            # not in reset_clears
                      ("gw-2", SMOKE.id, "fire_alarm"): "active"}      # another gateway
    # A reset older than the raise (same epoch, lower seq) clears nothing.
    b.apply([sig(SMOKE_2, FA, 9, active=True), sig(Source("panel/2-1/system", Bus.GB26875),
                                                    EventType.RESET, 8)])
    assert b.list(site="north-1", state="active")
    # "reset" in an operation event resets too.
    b.apply([sig(Source("panel/2-1/system", Bus.GB26875), EventType.OPERATION, 10,
                 operations=["reset"])])
    cleared = {a.source for a in b.list(state="cleared")}
    assert SMOKE_2.id in cleared


def test_reset_clears_is_configurable(tmp_path: Path, clock: Clock) -> None:
    b = book(tmp_path, clock, Sent(), reset_clears=frozenset({"fault"}))
    b.apply([sig(SMOKE, FA, 1), sig(PUMP, FAULT, 2), sig(SYSTEM, EventType.RESET, 3)])
    assert {(a.type, a.state) for a in b.list(state="all")} == \
        {("fire_alarm", "active"), ("fault", "cleared")}


def test_a_new_store_epoch_is_newer_whatever_its_seqs(b: AlarmBook) -> None:
    b.apply([sig(SMOKE, FA, 500)])
    b.apply([sig(SMOKE, FA, 1, active=False, epoch=EPOCH + 1)])
    assert b.list(state="cleared")


def test_gateway_level_alarms(b: AlarmBook) -> None:
    b.apply([gateway_signal("gw-1", "north-1", "gateway_offline", True, "lwt")])
    b.apply([gateway_signal("gw-1", "north-1", "gateway_offline", True, "stale")])  # same
    [a] = b.list()
    assert (a.source, a.type, a.priority, a.description, a.raise_count, a.gateway_ms) == \
        ("", "gateway_offline", "alarm", "lwt", 1, None)
    b.apply([gateway_signal("gw-1", "north-1", "gateway_offline", False)])
    b.apply([gateway_signal("gw-1", "north-1", "gateway_offline", True, "lwt")])
    assert b.get(a.id).raise_count == 2  # type: ignore[union-attr]
    b.apply([gateway_signal("gw-1", "north-1", "records_missing", True, "3 missing")])
    assert {x.type for x in b.list()} == {"gateway_offline", "records_missing"}


def test_acknowledge_and_resolve_conflicts_and_unknown_ids(b: AlarmBook, clock: Clock) -> None:
    b.apply([sig(SMOKE, FA, 1)])
    [a] = b.list()
    with pytest.raises(AlarmNotFound):
        b.acknowledge("a0000000000000000", by="x", note=None, origin="cli")
    with pytest.raises(AlarmNotFound):
        b.resolve("nope", verdict="real", by="x", note=None, origin="cli")
    b.acknowledge(a.id, by="wang", note="on my way", origin="10.1.2.3")
    with pytest.raises(AlarmConflict, match="acknowledged already by wang"):
        b.acknowledge(a.id, by="li", note=None, origin="10.1.2.4")
    with pytest.raises(ValueError, match="verdict"):
        b.resolve(a.id, verdict="maybe", by="wang", note=None, origin="x")  # type: ignore[arg-type]
    clock.now += 60_000
    r = b.resolve(a.id, verdict="false", by="wang", note="steam from the kitchen",
                  origin="10.1.2.3")
    assert (r.resolution, r.resolved_by, r.resolved_ms, r.resolution_note) == \
        ("false", "wang", NOW + 60_000, "steam from the kitchen")
    assert not r.open, "acknowledged and resolved: closed even while still active"
    with pytest.raises(AlarmConflict, match="resolved already"):
        b.resolve(a.id, verdict="real", by="li", note=None, origin="x")
    assert [(e.user, e.action, e.origin) for e in b.audit()] == \
        [("wang", "resolve", "10.1.2.3"), ("wang", "acknowledge", "10.1.2.3")]
    assert b.audit(before_ms=NOW + 60_000)[0].action == "acknowledge"
    with pytest.raises(ValueError, match="at most"):
        b.acknowledge(a.id, by="x", note="n" * 100_001, origin="x")


def test_resolving_an_unacknowledged_alarm_acknowledges_it(b: AlarmBook) -> None:
    b.apply([sig(SMOKE, FA, 1)])
    [a] = b.list()
    r = b.resolve(a.id, verdict="test", by="tech", note=None, origin="cli")
    assert r.acknowledged and r.acknowledged_by == "tech" and r.next_step_ms is None
    assert [e.what for e in b.timeline(a.id)][-3:] == \
        ["acknowledged", "escalation_stopped", "resolved"]


def test_a_closed_alarm_can_still_be_resolved(b: AlarmBook) -> None:
    b.apply([sig(PUMP, FAULT, 1)])
    [a] = b.list()
    b.acknowledge(a.id, by="x", note=None, origin="cli")
    b.apply([sig(PUMP, FAULT, 2, active=False)])
    assert not b.get(a.id).open  # type: ignore[union-attr]
    r = b.resolve(a.id, verdict="real", by="x", note="bearing replaced", origin="cli")
    assert r.resolution == "real" and b.get(a.id) == r


def test_filters(b: AlarmBook, clock: Clock) -> None:
    b.apply([sig(SMOKE, FA, 1, site="north-1")])
    clock.now += 1
    b.apply([sig(SMOKE, FA, 1, site="south-9", gateway="gw-9")])
    clock.now += 1
    b.apply([sig(PUMP, FAULT, 2, site="north-2", gateway="gw-2")])
    newest_first = [a.site for a in b.list()]
    assert newest_first == ["north-2", "south-9", "north-1"]
    assert [a.site for a in b.list(site="south-9")] == ["south-9"]
    assert [a.site for a in b.list(sites=lambda s: s.startswith("north"))] == \
        ["north-2", "north-1"]
    assert [a.site for a in b.list(sites=lambda s: s.startswith("north"), limit=1)] == \
        ["north-2"]
    b.acknowledge(b.list(site="north-1")[0].id, by="x", note=None, origin="cli")
    assert [a.site for a in b.list(acknowledged=True)] == ["north-1"]
    assert len(b.list(acknowledged=False)) == 2
    assert b.list(limit=0) == []
    assert b.open_counts() == {"north-1": 1, "south-9": 1, "north-2": 1}
    with pytest.raises(ValueError, match="state"):
        b.list(state="burning")


def test_hostile_text_is_kept_raw(b: AlarmBook) -> None:
    hostile = "<script>alert(1)</script>'; DROP TABLE alarm; --\u202e\x00"
    src = Source("panel/1-1/42-0x00000001", Bus.GB26875, description=hostile[:60])
    b.apply([sig(src, FA, 1)])
    [a] = b.list()
    assert a.description == hostile[:60]
    b.acknowledge(a.id, by="o'brien", note=hostile, origin="::1")
    assert b.get(a.id).note == hostile  # type: ignore[union-attr]
    assert [e.detail for e in b.timeline(a.id) if e.what == "acknowledged"] == [hostile]
    assert b.audit()[0].detail == hostile and b.audit()[0].user == "o'brien"


def test_subscribers_hear_every_change_after_it_is_stored(b: AlarmBook, tmp_path: Path) -> None:
    heard: list[Change] = []
    seen_in_file: list[bool] = []

    def listen(c: Change) -> None:
        heard.append(c)
        if isinstance(c, AlarmChange):  # persisted before we are told
            seen_in_file.append(b.get(c.alarm.id) is not None)

    def broken(c: Change) -> None:
        raise RuntimeError("a subscriber's bug")

    b.subscribe(broken)
    stop = b.subscribe(listen)
    b.apply([sig(SMOKE, FA, 1)])
    [a] = b.list()
    b.acknowledge(a.id, by="x", note=None, origin="cli")
    b.site_changed("north-1", "red", ["fire_alarm: gw-1 x"], NOW)
    assert [c.what for c in heard if isinstance(c, AlarmChange)] == \
        ["raised", "notified", "acknowledged"]
    assert heard[-1] == SiteChange("north-1", "red", ("fire_alarm: gw-1 x",), NOW)
    assert all(seen_in_file)
    stop()
    b.apply([sig(SMOKE_2, FA, 2)])
    assert len(heard) == 4


def test_a_flapping_contact_is_counted_not_written_without_bound(tmp_path: Path,
                                                                 clock: Clock) -> None:
    from collector.alarms.config import AlarmsConfig
    b = book(tmp_path, clock, Sent(), config=AlarmsConfig(max_timeline=20))
    for seq in range(1, 201, 2):
        b.apply([sig(PUMP, FAULT, seq), sig(PUMP, FAULT, seq + 1, active=False)])
    [a] = b.list(state="all")
    assert a.raise_count == 100
    assert len(b.timeline(a.id)) == 20
    b.acknowledge(a.id, by="x", note=None, origin="cli")  # a person's action is always kept
    assert b.timeline(a.id)[-1].what == "acknowledged"


def test_an_alarm_id_comes_from_the_record_that_raised_it(tmp_path: Path, clock: Clock) -> None:
    """A crash after step 0 was queued but before the book was written: the records were not
    acknowledged, their redelivery opens the same id, so the step's key is the same (sent
    once). A gateway-level alarm, and a record whose id is taken, get a random one."""
    first = book(tmp_path / "1", clock, Sent())
    second = book(tmp_path / "2", clock, Sent())
    for b in (first, second):
        b.apply([sig(SMOKE, FA, 7), gateway_signal("gw-1", "north-1", "gateway_offline", True)])
    fire = [next(a.id for a in b.list() if a.type == "fire_alarm") for b in (first, second)]
    offline = [next(a.id for a in b.list() if a.source == "") for b in (first, second)]
    assert fire[0] == fire[1] and offline[0] != offline[1]
    a = first.get(fire[0])
    assert a is not None
    first.resolve(a.id, verdict="test", by="x", note=None, origin="cli")
    first.apply([sig(SMOKE, FA, 7, epoch=EPOCH)])  # the same record once more, alarm closed
    assert len({x.id for x in first.list(state="all") if x.type == "fire_alarm"}) == 2


def test_a_gateway_cannot_fill_the_book_but_fire_alarms_always_open(tmp_path: Path,
                                                                    clock: Clock) -> None:
    from collector.alarms.config import AlarmsConfig
    b = book(tmp_path, clock, Sent(), config=AlarmsConfig(max_open_per_gateway=3))
    faults = [sig(Source(f"modbus/bus1/{i}/p", Bus.MODBUS), FAULT, i + 1) for i in range(5)]
    b.apply(faults)
    assert len(b.list()) == 3 and b.refused == {"gw-1": 2}
    b.apply([sig(SMOKE, FA, 10), sig(PUMP, FAULT, 1, gateway="gw-2")])
    assert {(a.gateway, a.type) for a in b.list()} >= {("gw-1", "fire_alarm"), ("gw-2", "fault")}
    # gw-1 has 4 open (3 faults and the fire alarm); two close: room for one more.
    for a in [a for a in b.list() if a.gateway == "gw-1" and a.type == "fault"][:2]:
        b.resolve(a.id, verdict="test", by="x", note=None, origin="cli")
    b.apply([sig(Source("modbus/bus1/9/p", Bus.MODBUS), FAULT, 20)])
    assert b.refused == {"gw-1": 2}
    assert len([a for a in b.list(state="open") if a.gateway == "gw-1"]) == 3
    b.apply([sig(Source("modbus/bus1/8/p", Bus.MODBUS), FAULT, 21)])
    assert b.refused == {"gw-1": 3}


def test_a_reset_clears_what_was_raised_by_its_time_on_the_panels_clock(b: AlarmBook) -> None:
    """collector.risk's rule: a panel's backlog may reach the gateway out of order, so the
    panel's own times decide when both records have one (and come from that panel)."""
    t = NOW - 60_000
    b.apply([sig(SMOKE, FA, 6, source_ms=t),           # raised at t (recorded after the reset)
             sig(SMOKE_2, FA, 4, source_ms=t + 5_000),  # raised after the reset, other panel
             sig(PUMP, FA, 3, source_ms=t + 5_000)])    # raised after the reset, same panel
    b.apply([sig(SYSTEM, EventType.RESET, 5, source_ms=t + 2_000)])
    states = {a.source: a.state for a in b.list(state="all")}
    assert states == {SMOKE.id: "cleared", SMOKE_2.id: "active", PUMP.id: "active"}


def test_audit_pages_keep_entries_of_the_same_millisecond(b: AlarmBook) -> None:
    """Five acknowledgements in one millisecond, read two at a time through the cursor of the
    previous page's last entry: each exactly once, newest first. (``before_ms`` alone would
    skip the three not on the first page.)"""
    sources = [Source(f"panel/1-1/42-0x{i:08x}", Bus.GB26875) for i in range(5)]
    b.apply([sig(s, FA, i + 1) for i, s in enumerate(sources)])
    for a in b.list():  # the clock does not move: every entry has the same at_ms
        b.acknowledge(a.id, by="wang", note=None, origin="10.1.2.3")
    everything = b.audit()
    assert len(everything) == 5 and len({e.at_ms for e in everything}) == 1
    assert [e.seq for e in everything] == sorted((e.seq for e in everything), reverse=True)
    pages, cursor = [], None
    while True:
        page = b.audit(limit=2, before_ms=None if cursor is None else cursor.at_ms,
                       before_seq=None if cursor is None else cursor.seq)
        pages.append(page)
        if len(page) < 2:
            break
        cursor = page[-1]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [e for p in pages for e in p] == everything
    assert b.audit(before_ms=everything[0].at_ms) == []  # the old meaning: strictly older
