"""The durable queue of uploads to a higher centre (collector/uitd/upstream_queue.py), on a
real SQLite file: once per record, order per target, fire first, bounded with fire evicted
last, addresses that do not collide, and nothing lost across a reopen."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from datetime import UTC
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.uitd.config import UpstreamConfig
from collector.uitd.upstream_queue import GENERIC_BASE, Offer, UpstreamQueue
from protocols.gb26875 import ComponentStatus, SystemStatus, decode_adu
from protocols.panel_records import PanelMapper
from protocols.upward_records import word
from protocols.wire import Bus, Event, EventType, Source

T0 = 1_765_000_000_000
UP = UpstreamConfig(name="province", host="127.0.0.1", port=9, uitd_address=0x0A0001,
                    events=frozenset(t.value for t in EventType), queue_max=100)


def _component(n: int, desc: str = "感烟") -> Source:
    return Source(f"panel/1-1/42-0x{n:08x}", Bus.GB26875, system_type=1, system_address=1,
                  component_type=42, component_address=n, description=desc)


def _ev(seq: int, src: Source, kind: EventType = EventType.FIRE_ALARM, active: bool = True,
        at: int = T0) -> Event:
    return Event(source=src, type=kind, active=active, receive_ms=at, seq=seq)


def _offer(seq: int, src: Source, kind: EventType = EventType.FIRE_ALARM, active: bool = True,
           gw: str = "gw-1", site: str = "site-1", at: int = T0) -> Offer:
    return Offer(gw, 7, site, _ev(seq, src, kind, active, at))


def _queue(tmp_path: Path, up: UpstreamConfig = UP) -> UpstreamQueue:
    return UpstreamQueue(tmp_path / "upstream.sqlite", [up], tz=UTC)


def test_a_redelivered_record_is_queued_once_even_after_a_reopen(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    assert q.enqueue([_offer(1, _component(1))], T0) == 1
    assert q.enqueue([_offer(1, _component(1))], T0) == 0
    q.close()
    q = _queue(tmp_path)  # as after kill -9: the file is the truth
    assert q.enqueue([_offer(1, _component(1))], T0) == 0
    assert q.pending("province") == 1
    row, = q.next_rows("province", [], 10)
    assert q.confirmed("province", [row.id], T0)
    assert q.enqueue([_offer(1, _component(1))], T0) == 0  # confirmed keys are kept
    assert q.enqueue([Offer("gw-1", 8, "site-1", _ev(1, _component(1)))], T0) == 1  # new epoch
    q.close()


def test_words_carry_the_conditions_of_their_target_across_a_reopen(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    q.enqueue([_offer(1, _component(5), EventType.FAULT)], T0)
    q.close()
    q = _queue(tmp_path)
    q.enqueue([_offer(2, _component(5))], T0)
    rows = []
    while batch := q.next_rows("province", [], 1):
        rows.append(batch[0])
        q.confirmed("province", [batch[0].id], T0)
    states = []
    for r in rows:
        adu = decode_adu(r.adu)
        assert adu is not None and not isinstance(adu, bytes)
        obj = adu.objects[0]  # type: ignore[union-attr]
        assert isinstance(obj, ComponentStatus)
        states.append(int(obj.state))
    assert states == [0b101, 0b111]  # fault, then fire + fault (图7 bits 2 and 1)
    q.close()


def test_fire_goes_first_but_never_ahead_of_its_own_target(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    a, b = _component(1), _component(2)
    q.enqueue([_offer(1, a, EventType.FAULT), _offer(2, b, EventType.FAULT),
               _offer(3, b, EventType.FIRE_ALARM), _offer(4, _component(3))], T0)
    first = q.next_rows("province", [], 10)
    # Heads only: b's fire waits behind b's fault; the fire of component 3 goes first.
    assert [r.key for r in first] == ["gw-1:7:4", "gw-1:7:1", "gw-1:7:2"]
    assert [r.key for r in q.next_rows("province", [first[0].id], 10)] == \
        ["gw-1:7:1", "gw-1:7:2"]
    q.confirmed("province", [first[2].id], T0)
    assert "gw-1:7:3" in [r.key for r in q.next_rows("province", [], 10)]
    q.close()


def test_full_queue_evicts_lowest_class_first_and_fire_only_when_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "firegate.collector.upstream")
    up = dataclasses.replace(UP, queue_max=5)
    q = _queue(tmp_path, up)
    offers = [_offer(i, _component(i), EventType.FIRE_ALARM) for i in range(1, 4)]
    offers += [_offer(i, _component(i), EventType.STARTED) for i in range(4, 6)]  # class 2
    q.enqueue(offers, T0)
    q.enqueue([_offer(6, _component(6), EventType.FAULT)], T0)  # class 1: a start goes
    assert q.counts["province"]["evicted_p2"] == 1
    q.enqueue([_offer(7, _component(7), EventType.FIRE_ALARM)], T0)
    q.enqueue([_offer(8, _component(8), EventType.FIRE_ALARM)], T0)
    assert q.counts["province"]["evicted_p2"] == 2
    assert q.counts["province"]["evicted_p1"] == 1  # the fault, before any fire alarm
    assert q.counts["province"]["evicted_p0"] == 0
    q.enqueue([_offer(9, _component(9), EventType.FIRE_ALARM)], T0)  # only fire left
    assert q.counts["province"]["evicted_p0"] == 1
    evictions = [r for r in caplog.records if "evicted" in r.getMessage()]
    assert len(evictions) == 4  # every eviction logged, a fire alarm's as an error
    assert [r.levelno for r in evictions] == [logging.WARNING] * 3 + [logging.ERROR]
    keys = {r.key for r in q.next_rows("province", [], 100)}
    assert keys == {f"gw-1:7:{i}" for i in (2, 3, 7, 8, 9)}  # the oldest fire went
    assert q.pending("province") == 5
    q.close()
    q = _queue(tmp_path, up)
    assert q.pending("province") == 5
    assert q.enqueue([_offer(4, _component(4), EventType.STARTED)], T0) == 0  # evicted: once
    q.close()


def test_old_rows_expire(tmp_path: Path) -> None:
    up = dataclasses.replace(UP, queue_max_age_s=60.0)
    q = _queue(tmp_path, up)
    q.enqueue([_offer(1, _component(1))], T0)
    q.expire(T0 + 59_000)
    assert q.pending("province") == 1
    q.expire(T0 + 61_000)
    assert q.pending("province") == 0 and q.counts["province"]["expired"] == 1
    q.close()


def test_filters_sites_and_events(tmp_path: Path) -> None:
    up = dataclasses.replace(UP, events=frozenset({"fire_alarm"}), sites=("hz-*",),
                             restores=False)
    q = _queue(tmp_path, up)
    assert q.enqueue([_offer(1, _component(1), site="sh-1"),
                      _offer(2, _component(1), EventType.FAULT, site="hz-1"),
                      _offer(3, _component(1), site="hz-1")], T0) == 1
    assert q.enqueue([_offer(4, _component(1), active=False, site="hz-1")], T0) == 0
    assert q.enqueue([_offer(5, _component(1), site="hz-1")], T0) == 1
    words = []
    while batch := q.next_rows("province", [], 1):
        obj = decode_adu(batch[0].adu).objects[0]  # type: ignore[union-attr]
        assert isinstance(obj, ComponentStatus)
        words.append(int(obj.state))
        q.confirmed("province", [batch[0].id], T0)
    assert words == [0b11, 0b11]  # the fault not forwarded; the restore not sent but kept
    q.close()


def test_addresses_never_collide_between_gateways(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    same = _component(0x102)
    system = Source("panel/1-1/system", Bus.GB26875, system_type=1, system_address=1,
                    description="一号楼火灾报警控制器")
    modbus = Source("modbus/bus1/3/pressure", Bus.MODBUS, description="喷淋末端压力")
    q.enqueue([_offer(1, same, gw="gw-a"), _offer(1, same, gw="gw-b"),
               _offer(2, system, gw="gw-a"), _offer(2, system, gw="gw-b"),
               _offer(3, modbus, EventType.THRESHOLD_LOW, gw="gw-a")], T0)
    db = sqlite3.connect(tmp_path / "upstream.sqlite")
    rows = db.execute("SELECT gateway, source, kind, system_type, system_address, "
                      "component_address FROM targets ORDER BY rowid").fetchall()
    db.close()
    assert rows == [
        ("gw-a", same.id, "component", 1, 1, 0x102),  # its own panel address
        ("gw-b", same.id, "component", 1, 1, GENERIC_BASE),  # taken: allocated
        ("gw-a", system.id, "system", 1, 1, 0),
        ("gw-b", system.id, "system", 1, 2, 0),  # the next free system address
        ("gw-a", modbus.id, "component", 0, 0, GENERIC_BASE + 1),
    ]
    kinds = [decode_adu(r.adu).type_mark  # type: ignore[union-attr]
             for r in q.next_rows("province", [], 100)]
    # Fire first; each system's text (type 6) right before its word (type 1).
    assert kinds == [2, 2, 6, 6, 2]
    q.close()


def test_a_system_word_follows_its_text(tmp_path: Path) -> None:
    q = _queue(tmp_path)
    system = Source("panel/1-1/system", Bus.GB26875, system_type=1, system_address=1,
                    description="一号楼")
    q.enqueue([_offer(1, system, EventType.FAULT), _offer(2, system, EventType.FAULT,
                                                          active=False)], T0)
    marks = []
    while batch := q.next_rows("province", [], 10):
        assert len(batch) == 1  # one target: one at a time, in order
        adu = decode_adu(batch[0].adu)
        marks.append(adu.type_mark)  # type: ignore[union-attr]
        if adu.type_mark == 1:  # type: ignore[union-attr]
            assert isinstance(adu.objects[0], SystemStatus)  # type: ignore[union-attr]
        q.confirmed("province", [batch[0].id], T0)
    assert marks == [6, 1, 1]  # the text once, then raise and restore
    q.close()


CONDITIONS = [EventType.FIRE_ALARM, EventType.FAULT, EventType.SUPERVISORY, EventType.DISABLED]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), steps=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(CONDITIONS),
                                                st.booleans()), min_size=1, max_size=40))
def test_the_centre_ends_with_the_conditions_raised_below(
        data: st.DataObject, steps: list[tuple[int, EventType, bool]]) -> None:
    """Whatever the events, their grouping into write groups, and the order in which the
    centre confirms what is in flight (fire first, other targets in between), the words the
    centre receives leave each component with the conditions raised below."""
    q = UpstreamQueue(Path(":memory:"), [UP], tz=UTC)
    truth: dict[int, set[str]] = {}
    offers = []
    for seq, (n, kind, active) in enumerate(steps, start=1):
        offers.append(_offer(seq, _component(n + 1), kind, active, at=T0 + seq * 1000))
        conds = truth.setdefault(n + 1, set())
        (conds.add if active else conds.discard)(kind.value)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(offers) - 1))) if len(offers) > 1
                  else set())
    for a, b in zip([0, *cuts], [*cuts, len(offers)], strict=True):
        q.enqueue(offers[a:b], T0)
    mapper = PanelMapper("panel", "panel/uitd", tz=UTC)
    while rows := q.next_rows("province", [], data.draw(st.integers(1, 8))):
        row = data.draw(st.sampled_from(rows))  # the centre confirms any of those in flight
        mapper.commit(mapper.map(decode_adu(row.adu), T0))
        q.confirmed("province", [row.id], T0)
    for n, conds in truth.items():
        state = mapper.state(_component(n).id)
        assert (state or 1) == word("component", conds), (n, conds, state)
    q.close()
