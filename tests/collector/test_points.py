"""Points for every record kind and message: schema, tags, types and idempotent times."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.points import (
    MAX_TIME_MS,
    Point,
    point_for_gap,
    point_for_risk,
    points_for_batch,
    points_for_health,
    points_for_status,
    record_time_ns,
)
from protocols.wire import (
    UNITS,
    Batch,
    Bus,
    Event,
    EventType,
    GatewayState,
    Health,
    LinkState,
    Measurement,
    Priority,
    Quantity,
    Source,
    Status,
    decode_batch,
    encode_batch,
    last_will,
)

# Tags are identifiers with few values; these fields must never become tags.
NEVER_TAGS = {"seq", "value", "unit", "active", "priority", "description", "detail", "state",
              "source_ms", "comp_addr", "operations", "operator", "limit"}

PANEL = Source("panel/1-1/42-0x00000102", Bus.GB26875, system_type=1, system_address=1,
               component_type=42, component_address=258, description="三层东走廊感烟探测器")
PRESSURE = Source("modbus/bus1/3/pressure", Bus.MODBUS)


def _batch(*records: Event | Measurement, site: str | None = "sh-pd-017") -> Batch:
    return Batch("gw-0001", site, 1718000001000, records)


def test_event_point_has_identity_tags_and_everything_else_as_fields() -> None:
    e = Event(source=PANEL, type=EventType.FIRE_ALARM, receive_ms=1718000000123, seq=1041,
              source_ms=1718000000000, state=2)
    (p,) = points_for_batch(_batch(e))
    assert p.measurement == "fg_event"
    assert p.tags == (("bus", "gb26875"), ("gateway", "gw-0001"), ("site", "sh-pd-017"),
                      ("source", "panel/1-1/42-0x00000102"), ("type", "fire_alarm"))
    assert dict(p.fields) == {
        "active": True, "priority": 0, "seq": 1041, "source_ms": 1718000000000, "state": 2,
        "description": "三层东走廊感烟探测器", "sys_type": 1, "sys_addr": 1, "comp_type": 42,
        "comp_addr": 258}
    assert p.time_ns == 1718000000123 * 1_000_000 + 1041
    assert type(p.field("priority")) is int  # not the IntEnum: sinks see plain values


def test_measurement_point() -> None:
    m = Measurement(source=PRESSURE, quantity=Quantity.PRESSURE, value=0.32, unit="MPa",
                    receive_ms=1718000000200, seq=1042)
    (p,) = points_for_batch(_batch(m, site=None))
    assert p.measurement == "fg_value"
    assert p.tags == (("bus", "modbus"), ("gateway", "gw-0001"), ("quantity", "pressure"),
                      ("source", "modbus/bus1/3/pressure"))
    assert p.fields == (("value", 0.32), ("unit", "MPa"), ("priority", 3), ("seq", 1042))
    assert p.tag("site") is None and p.field("nope") is None


def test_event_optional_fields() -> None:
    e = Event(source=Source("panel/1-1/system", Bus.GB26875), type="operation",
              receive_ms=5, seq=7, operations=("reset", "silence"), operator=1, value=1.5,
              limit=2.0, detail="x", active=True)
    (p,) = points_for_batch(_batch(e))
    assert dict(p.fields) == {"active": True, "priority": 2, "seq": 7,
                              "operations": "reset,silence", "operator": 1, "value": 1.5,
                              "limit": 2.0, "detail": "x"}


def test_one_point_per_record_in_batch_order() -> None:
    records = [Measurement(source=PRESSURE, quantity="pressure", value=float(i), unit="MPa",
                           receive_ms=1000, seq=i) for i in range(1, 101)]
    points = points_for_batch(_batch(*reversed(records)))
    assert [p.field("seq") for p in points] == list(range(100, 0, -1))
    assert len({p.time_ns for p in points}) == 100  # same ms, same series: 100 distinct times


def test_record_time_is_idempotent_and_clamped() -> None:
    assert record_time_ns(1718000000123, 1041) == 1718000000123001041
    assert record_time_ns(5, 1_000_000) == 5_000_000  # seq wraps inside the millisecond
    assert record_time_ns(2**53 - 1, 3) == MAX_TIME_MS * 1_000_000 + 3
    # The last millisecond whose every seq still fits a signed 64-bit nanosecond time:
    assert MAX_TIME_MS * 1_000_000 + 999_999 <= 2**63 - 1 < (MAX_TIME_MS + 1) * 1_000_000 + 999_999
    far = Measurement(source=PRESSURE, quantity="pressure", value=1.0, unit="MPa",
                      receive_ms=2**53 - 1, seq=3)
    (p,) = points_for_batch(_batch(far))
    assert p.field("receive_ms") == 2**53 - 1


def test_health_points() -> None:
    h = Health(gateway_id="gw-0001", ts_ms=1718000060000, uptime_s=10.0, version="0.1.0",
               outbox_depth=3, evicted={"measurement": 4},
               counters={"modbus/bus1": {"timeout": 2, "exception": 1}},
               links={"uplink": LinkState.UP, "modbus/bus1": LinkState.DOWN}, last_seq=99)
    points = points_for_health(h, "sh-pd-017")
    assert [p.measurement for p in points] == ["fg_health", "fg_counter", "fg_counter",
                                               "fg_link", "fg_link"]
    assert {p.time_ns for p in points} == {1718000060000 * 1_000_000}
    health = dict(points[0].fields)
    assert health["evicted_measurement"] == 4 and health["evicted_fire"] == 0
    assert (health["links_up"], health["links_down"]) == (1, 1)
    assert "cpu_percent" not in health  # absent stays absent: never a fake 0
    assert points[1].tags == (("driver", "modbus/bus1"), ("gateway", "gw-0001"),
                              ("reason", "exception"), ("site", "sh-pd-017"))
    assert points[1].fields == (("count", 1),)
    assert points[3].tags == (("gateway", "gw-0001"), ("link", "modbus/bus1"),
                              ("site", "sh-pd-017"))
    assert points[3].fields == (("up", False),)
    assert all(p.tag("site") is None for p in points_for_health(h, None))


def test_status_points_never_overwrite_each_other_but_repeat_idempotently() -> None:
    online = Status("gw-0001", GatewayState.ONLINE, 1000, version="0.1.0", site="s1")
    will = last_will("gw-0001", 1000, version="0.1.0", site="s1")
    (p_on,) = points_for_status(online, received_ms=1005)
    (p_will,) = points_for_status(will)
    (p_will_rx,) = points_for_status(will, received_ms=90_000)
    assert p_on.time_ns == 1000 * 1_000_000  # received_ms only matters for a will
    assert p_will.time_ns == 1000 * 1_000_000 + 1 != p_on.time_ns
    assert p_will_rx.time_ns == 90_000 * 1_000_000 + 1
    assert p_will_rx.field("status_ms") == 1000 and p_will_rx.field("online") is False
    assert points_for_status(online) == points_for_status(online)


def test_risk_and_gap_points() -> None:
    p = point_for_risk("s1", "yellow", ["fault a", "offline b"], 7)
    assert p.tags == (("site", "s1"),)
    assert p.fields == (("colour", "yellow"), ("level", 1), ("reasons", "fault a; offline b"),
                        ("reason_count", 2))
    with pytest.raises(ValueError, match="orange"):
        point_for_risk("s1", "orange", [], 7)
    with pytest.raises(TypeError):
        point_for_risk("s1", "red", "fire", 7)
    g = point_for_gap("gw-1", 1_000_005, 1_000_009, 3)
    assert g.fields == (("first", 1_000_005), ("last", 1_000_009), ("missing", 5))
    assert g.time_ns == 3_000_005
    for first, last in ((0, 3), (5, 4)):
        with pytest.raises(ValueError):
            point_for_gap("gw-1", first, last, 3)


# -- properties over generated batches -----------------------------------------------------

_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
_text = st.text(max_size=20)  # hypothesis leaves out lone surrogates, as the contract does
_byte = st.none() | st.integers(0, 255)
_sources = st.builds(
    lambda i, bus, desc, sys, sa, ct, ca: Source(i, bus, description=desc, system_type=sys,
                                                 system_address=sa, component_type=ct,
                                                 component_address=ca),
    _ids, st.sampled_from(list(Bus)), st.none() | _text, _byte, _byte, _byte,
    st.none() | st.integers(0, 2**32 - 1))
_floats = st.floats(allow_nan=False, allow_infinity=False)
_ms = st.integers(0, 2**53 - 1)


@st.composite
def _records(draw: st.DrawFn, seq: int) -> Event | Measurement:
    src = draw(_sources)
    if draw(st.booleans()):
        q = draw(st.sampled_from([q for q in Quantity if q is not Quantity.ANALOG]))
        return Measurement(source=src, quantity=q, value=draw(_floats),
                           unit=draw(st.sampled_from(UNITS[q])), receive_ms=draw(_ms), seq=seq,
                           source_ms=draw(st.none() | _ms))
    return Event(source=src, type=draw(st.sampled_from(list(EventType))), receive_ms=draw(_ms),
                 seq=seq, active=draw(st.booleans()), priority=draw(st.sampled_from(Priority)),
                 state=draw(st.none() | st.integers(0, 2**32 - 1)),
                 value=draw(st.none() | _floats), limit=draw(st.none() | _floats),
                 detail=draw(st.none() | _text), operator=draw(st.none() | st.integers(0, 65535)),
                 source_ms=draw(st.none() | _ms),
                 operations=draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
                                          max_size=3)))


@st.composite
def _batches(draw: st.DrawFn) -> Batch:
    seqs = draw(st.lists(st.integers(1, 2**53 - 1), min_size=1, max_size=15, unique=True))
    records = [draw(_records(s)) for s in seqs]
    return Batch("gw-prop", draw(st.none() | st.just("site-1")), 1, tuple(records))


def _expected_fields(r: Event | Measurement) -> dict[str, object]:
    """The schema's fields of a record, written out plainly (docs/collector-storage.md)."""
    src = r.source
    optional: dict[str, object] = {
        "source_ms": r.source_ms, "description": src.description, "sys_type": src.system_type,
        "sys_addr": src.system_address, "comp_type": src.component_type,
        "comp_addr": src.component_address,
        "receive_ms": r.receive_ms if r.receive_ms > MAX_TIME_MS else None}
    if isinstance(r, Measurement):
        out: dict[str, object] = {"value": r.value, "unit": r.unit, "priority": int(r.priority),
                                  "seq": r.seq}
    else:
        out = {"active": r.active, "priority": int(r.priority), "seq": r.seq, "state": r.state,
               "operations": ",".join(r.operations) or None, "operator": r.operator,
               "value": r.value, "limit": r.limit, "detail": r.detail}
    out.update(optional)
    return {k: v for k, v in out.items() if v is not None}


@settings(max_examples=150, deadline=None)
@given(_batches())
def test_points_follow_the_schema_for_any_batch(batch: Batch) -> None:
    points = points_for_batch(batch)
    assert len(points) == len(batch.records)
    for r, p in zip(batch.records, points, strict=True):
        keys = [k for k, _ in p.tags]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert not NEVER_TAGS & set(keys)
        assert all(v for _, v in p.tags)  # a tag value is never empty
        assert p.time_ns == record_time_ns(r.receive_ms, r.seq) < 2**63
        assert p.field("seq") == r.seq and p.tag("source") == r.source.id
        assert dict(p.fields) == _expected_fields(r)
        assert len(dict(p.fields)) == len(p.fields)
    # Redelivery (through the real codec) gives identical points: they overwrite themselves.
    assert points_for_batch(decode_batch(encode_batch(batch))) == points


def _field_types(points: list[Point]) -> dict[tuple[str, str], set[type]]:
    types: dict[tuple[str, str], set[type]] = defaultdict(set)
    for p in points:
        for k, v in p.fields:
            types[(p.measurement, k)].add(type(v))
    return types


@settings(max_examples=100, deadline=None)
@given(st.lists(_batches(), min_size=1, max_size=4))
def test_each_field_has_one_type_per_measurement(batches: list[Batch]) -> None:
    # InfluxDB types a field by its first write and refuses another type afterwards (a
    # 'field type conflict' that would stop the stream), so the mapping must never mix them.
    types = _field_types([p for b in batches for p in points_for_batch(b)])
    assert all(len(t) == 1 for t in types.values()), types
