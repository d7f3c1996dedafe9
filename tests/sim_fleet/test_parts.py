"""The pure parts of the fleet simulator: seq ranges, the record mix, the outbox, settings."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.config import ConfigError
from protocols.wire import (
    UNITS,
    Bus,
    Event,
    EventType,
    Measurement,
    Priority,
    Record,
    decode_batch,
    encode_batches,
)
from simulators.fleet import FleetConfig, SeqRanges, parse_broker
from simulators.fleet.config import expand_template
from simulators.fleet.mix import RecordMix
from simulators.fleet.outbox import FleetOutbox

T0 = 1_718_000_000_000


# -- SeqRanges ----------------------------------------------------------------------------

def test_ranges_merge_and_split() -> None:
    r = SeqRanges([5, 1, 2, 3, 9])
    assert r.ranges() == [(1, 3), (5, 5), (9, 9)] and len(r) == 5
    r.add(4)
    assert r.to_json() == [[1, 5], [9, 9]]
    r.add_range(6, 8)
    assert r.ranges() == [(1, 9)]
    assert r.difference(SeqRanges([3, 4, 9])).ranges() == [(1, 2), (5, 8)]
    assert SeqRanges.from_ranges([[1, 2], [4, 4]]) == SeqRanges([1, 2, 4])
    assert 4 in r and 10 not in r and "4" not in r


@given(st.lists(st.integers(1, 200)), st.lists(st.integers(1, 200)))
def test_ranges_behave_like_sets(a: list[int], b: list[int]) -> None:
    ra, rb = SeqRanges(a), SeqRanges()
    for s in b:
        rb.add(s)
    assert set(ra) == set(a) and len(ra) == len(set(a))
    assert set(ra.difference(rb)) == set(a) - set(b)
    ra.update(b)
    assert set(ra) == set(a) | set(b)
    pairs = ra.ranges()
    assert all(p[1] + 1 < q[0] for p, q in itertools.pairwise(pairs))  # canonical
    assert SeqRanges.from_ranges(ra.to_json()) == ra


# -- the record mix -----------------------------------------------------------------------

def _stream(gateway: str, seed: int, n: int, alarm_rate: float = 0.02) -> list[Record]:
    mix = RecordMix(gateway, seed, alarm_rate)
    out: list[Record] = []
    mix.fill(out, 1, n // 2, T0, T0 + 1000)
    mix.fill(out, n // 2 + 1, n - n // 2, T0 + 1000, T0 + 2000)
    return out


def test_the_mix_is_deterministic_per_seed_and_gateway() -> None:
    a = _stream("gw-1", 7, 2000)
    assert a == _stream("gw-1", 7, 2000)
    assert a != _stream("gw-1", 8, 2000)
    assert a != _stream("gw-2", 7, 2000)
    # Independent of how production is sliced in time: only rt differs.
    mix = RecordMix("gw-1", 7, 0.02)
    sliced: list[Record] = []
    for k in range(100):
        mix.fill(sliced, 20 * k + 1, 20, T0 + k, T0 + k + 1)
    strip = [(r.seq, r.source, getattr(r, "value", None), type(r)) for r in a]
    assert strip == [(r.seq, r.source, getattr(r, "value", None), type(r)) for r in sliced]


def test_the_mix_is_realistic() -> None:
    records = _stream("gw-1", 1, 20_000)
    assert [r.seq for r in records] == list(range(1, 20_001))
    assert all(T0 <= r.receive_ms <= T0 + 2000 for r in records)
    measurements = [r for r in records if isinstance(r, Measurement)]
    events = [r for r in records if isinstance(r, Event)]
    assert 0.9 < len(measurements) / len(records) < 0.99
    assert {m.quantity.value for m in measurements} >= {
        "pressure", "level", "temperature", "residual_current", "battery", "rssi"}
    for m in measurements:
        assert m.unit in UNITS[m.quantity] and m.priority is Priority.MEASUREMENT
    pressures = [m.value for m in measurements if m.quantity.value == "pressure"]
    assert min(pressures) >= 0.25 and max(pressures) <= 0.45  # MPa, a hydrant main
    # Every burst is raised, then restored a little later, with the class of its raise.
    active: dict[tuple[str, EventType], Event] = {}
    for e in events:
        key = (e.source.id, e.type)
        if e.active:
            assert key not in active
            active[key] = e
        else:
            raised = active.pop(key)
            assert e.seq > raised.seq and e.priority is raised.priority
    assert len(active) < 10  # only the last few bursts are still open
    types = {e.type for e in events}
    assert types == {EventType.FIRE_ALARM, EventType.FAULT, EventType.THRESHOLD_LOW,
                     EventType.THRESHOLD_HIGH, EventType.SENSOR_OFFLINE}
    fires = [e for e in events if e.type is EventType.FIRE_ALARM]
    assert fires and all(e.priority is Priority.FIRE and e.source.bus is Bus.GB26875
                         and e.source.component_address is not None for e in fires)
    # The wire contract takes all of it, and gives it back unchanged.
    payloads = encode_batches("gw-1", "site-1", T0, records)
    assert [r for p in payloads for r in decode_batch(p).records] == records


def test_counts_per_priority_and_link_faults() -> None:
    mix = RecordMix("gw-1", 3, 0.05)
    out: list[Record] = []
    mix.fill(out, 1, 3000, T0, T0 + 1000)
    out.append(mix.link_fault(3001, T0 + 1001, down=True))
    assert mix.counts == [sum(1 for r in out if r.priority is p) for p in Priority]
    link = out[-1]
    assert isinstance(link, Event)
    assert link.type is EventType.LINK_FAULT and link.source.bus is Bus.GATEWAY
    assert link.priority is Priority.ALARM


def test_no_alarms_when_the_rate_is_zero() -> None:
    records = _stream("gw-1", 1, 5000, 0.0)
    # all() of an empty stream is true: first, the whole stream was made, seq for seq
    assert [r.seq for r in records] == list(range(1, 5001))
    assert all(isinstance(r, Measurement) for r in records)


# -- the outbox ---------------------------------------------------------------------------

def test_the_outbox_drains_fire_then_alarms_then_the_rest_in_seq_order() -> None:
    mix = RecordMix("gw-1", 4, 0.05)
    records: list[Record] = []
    mix.fill(records, 1, 2000, T0, T0 + 1000)
    box = FleetOutbox()
    box.add(records)
    first = box.take(300)
    rest = box.take(10_000)
    taken = first + rest
    assert len(box) == 0 and sorted(r.seq for r in taken) == list(range(1, 2001))
    keys = [(r.priority, r.seq) for r in taken]
    assert keys == sorted(keys)
    # Put back after a lost link: merged in order, remembered as re-sent once.
    box.add([r for r in records if r.seq > 1990])
    box.put_back(first[:5])
    again = box.take(100)
    assert [(r.priority, r.seq) for r in again] == sorted((r.priority, r.seq) for r in again)
    assert sorted(box.resent(again)) == sorted(r.seq for r in first[:5])
    assert box.resent(again) == []


def test_the_outbox_holds_what_was_sent_until_confirmed_and_resends_it_after_a_timeout() -> None:
    records: list[Record] = []
    RecordMix("gw-1", 4, 0.0).fill(records, 1, 10, T0, T0 + 1000)  # measurements: seq order
    box = FleetOutbox()
    box.add(records)
    sent = box.take(4)
    box.mark_sent(sent, 100.0)  # PUBACKed at loop time 100
    assert (len(box), box.held, box.unconfirmed) == (6, 10, 4)
    box.confirm([2, 3])
    assert (box.held, box.unconfirmed) == (8, 2)
    assert box.expire(100.9, 1.0) == 0
    assert box.expire(101.0, 1.0) == 2  # 1 and 4: a second past their PUBACK, unconfirmed
    again = box.take(100)
    assert [r.seq for r in again] == [1, 4, 5, 6, 7, 8, 9, 10]
    assert sorted(box.resent(again)) == [1, 4] and box.held == 0
    box.mark_sent(again, 102.0)
    box.confirm(range(1, 11))
    assert box.held == 0 and box.expire(200.0, 1.0) == 0  # confirmed: never sent again


def test_a_confirmation_may_overtake_the_puback_or_a_resend() -> None:
    records: list[Record] = []
    RecordMix("gw-1", 4, 0.0).fill(records, 1, 6, T0, T0 + 1000)
    box = FleetOutbox()
    box.add(records)
    flight = box.take(3)  # 1, 2, 3 in flight
    box.confirm([2, 5])  # 2 in flight (the collector was quicker than the PUBACK), 5 waiting
    box.mark_sent(flight, 0.0)  # the PUBACK: 1 and 3 are held, 2 is done
    assert box.unconfirmed == 2
    assert [r.seq for r in box.take(10)] == [4, 6]  # 5 is not sent again
    box.confirm([4])
    box.put_back([r for r in records if r.seq in (4, 6)])  # a drop: 4 was confirmed meanwhile
    assert [r.seq for r in box.take(10)] == [6]
    box.confirm([1, 3, 6])
    box.mark_sent([r for r in records if r.seq == 6], 1.0)
    assert box.held == 0 and box.seqs() == []


# -- settings -----------------------------------------------------------------------------

def test_broker_urls() -> None:
    assert str(parse_broker("mqtt://127.0.0.1")) == "mqtt://127.0.0.1:1883"
    assert str(parse_broker("mqtts://localhost")) == "mqtts://localhost:8883"
    assert parse_broker("mqtts://[::1]:9883/").port == 9883
    assert parse_broker("mqtts://h:1").tls and not parse_broker("mqtt://h:1").tls


@pytest.mark.parametrize(("kwargs", "key", "says"), [
    ({"rate": 5, "total_rate": 100}, "rate", "not both"),
    ({"duration": 5, "records": 100}, "duration", "not both"),
    ({"rate": 0}, "rate", "must be greater than 0, got 0"),
    ({"records": 0}, "records", "must be at least 1, got 0"),
    ({"gateways": 0}, "gateways", "must be at least 1, got 0"),
    ({"gateways": 100_000}, "gateways", "must be at most 99999, got 100000"),
    ({"max_batch": 5001}, "max_batch", "must be at most 5000, got 5001"),
    ({"alarm_rate": 1.5}, "alarm_rate", "must be at most 1, got 1.5"),
    ({"offline_fraction": -0.1}, "offline_fraction", "must be at least 0, got -0.1"),
    ({"mqtt": "4"}, "mqtt", "must be one of '5', '3.1.1', got '4'"),
    ({"prefix": "a/b"}, "prefix", "letters, digits"),
    ({"username": "{gw}"}, "username", "unknown placeholder {gw}; use {gateway}"),
    ({"username": "u", "password": "{"}, "password", "literal brace"),
    ({"password": "x"}, "password", "needs a username"),
    ({"ca": Path("/nonexistent.pem")}, "ca", "needs an mqtts://"),
    ({"broker": "mqtts://h", "ca": Path("/nonexistent.pem")}, "ca", "is not a file"),
    ({"window": 0}, "window", "must be at least 1, got 0"),
    ({"window": 65}, "window", "must be at most 64 (keep it within the broker's receive maximum"),
    ({"rate": "fast"}, "rate", "must be a number, got a string"),
    ({"delete_on": "broker"}, "delete_on", "must be one of 'stored', 'puback', got 'broker'"),
    ({"confirm_timeout": 0}, "confirm_timeout", "must be greater than 0, got 0"),
])
def test_bad_settings_name_the_key(kwargs: dict[str, object], key: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        FleetConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key and says in info.value.message


def test_ids_quotas_and_templates() -> None:
    cfg = FleetConfig(gateways=10, gateways_per_site=4, records=23, total_rate=100)
    assert cfg.gateway_id(7) == "fleet-00007" and cfg.site_id(4) == "fleet-site-0001"
    assert cfg.site_id(5) == "fleet-site-0002"
    assert [cfg.quota(i) for i in range(1, 11)] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert cfg.per_gateway_rate == 10 and cfg.expected_production_s == pytest.approx(0.23)
    assert expand_template("pw-{gateway}-{index}{{x}}", gateway="g", site="s", index=3) \
        == "pw-g-3{x}"
    assert FleetConfig().production_s == 10.0 and FleetConfig().per_gateway_rate == 10.0
