"""Local rules: thresholds with hysteresis and debounce, deadband with periodic report."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config.rules import RuleConfig, first_match
from edge.rules import RuleEngine
from protocols.wire import Bus, Event, EventType, Measurement, Priority, Quantity, Source

T0 = 1_718_000_000_000
HYDRANT = Source("modbus/bus1/3/pressure", Bus.MODBUS, description="1号消火栓")
OTHER = Source("modbus/bus1/4/level", Bus.MODBUS)
LOW_RULE = RuleConfig("hydrant-low", "modbus/bus1/*/pressure", low=0.15, high=1.0,
                      hysteresis=0.02, debounce_s=10)


def m(value: float, t_s: float, src: Source = HYDRANT) -> Measurement:
    unit = "MPa" if src is HYDRANT else "m"
    quantity = Quantity.PRESSURE if src is HYDRANT else Quantity.LEVEL
    return Measurement(source=src, quantity=quantity, value=value, unit=unit,
                       receive_ms=T0 + int(t_s * 1000))


def events(records: list[object]) -> list[Event]:
    return [r for r in records if isinstance(r, Event)]


def feed(engine: RuleEngine, samples: list[tuple[float, float]]) -> list[Event]:
    out: list[Event] = []
    for value, t in samples:
        out += events(list(engine.process([m(value, t)])))
    return out


def test_low_pressure_for_debounce_raises_once_then_restores_with_hysteresis() -> None:
    engine = RuleEngine([LOW_RULE])
    got = feed(engine, [(0.30, 0), (0.10, 1), (0.10, 5), (0.10, 10.9)])
    assert got == []  # below for 9.9 s only
    got = feed(engine, [(0.10, 11), (0.09, 12), (0.16, 13)])
    assert [(e.type, e.active) for e in got] == [(EventType.THRESHOLD_LOW, True)]
    raised = got[0]
    assert raised.value == 0.10 and raised.limit == 0.15 and raised.source.bus is Bus.RULE
    assert raised.source.id == HYDRANT.id and raised.source.description == "1号消火栓"
    assert raised.priority is Priority.ALARM and "< 0.15 MPa for 10 s" in (raised.detail or "")
    # 0.16 is above the limit but inside the hysteresis band: still low.
    got = feed(engine, [(0.16, 30), (0.17, 31), (0.17, 40.9)])
    assert got == []
    got = feed(engine, [(0.18, 41)])
    assert [(e.type, e.active) for e in got] == [(EventType.THRESHOLD_LOW, False)]
    assert engine.active == set()


def test_bounce_inside_debounce_restarts_it() -> None:
    engine = RuleEngine([LOW_RULE])
    got = feed(engine, [(0.1, 0), (0.1, 8), (0.3, 9), (0.1, 10), (0.1, 19)])
    assert got == []
    assert engine.next_deadline_ms() == T0 + 20_000


def test_tick_matures_a_crossing_without_a_new_sample() -> None:
    engine = RuleEngine([LOW_RULE])
    feed(engine, [(0.05, 0)])
    assert engine.tick(T0 + 9_999) == []
    matured = engine.tick(T0 + 10_000)
    assert [(e.type, e.active, e.receive_ms) for e in events(list(matured))] == [
        (EventType.THRESHOLD_LOW, True, T0 + 10_000)]
    assert engine.next_deadline_ms() is None
    assert engine.active == {(HYDRANT.id, "threshold_low")}


def test_high_limit_and_no_rule_pass_through() -> None:
    engine = RuleEngine([LOW_RULE])
    got = feed(engine, [(1.2, 0), (1.2, 10)])
    assert [(e.type, e.active) for e in got] == [(EventType.THRESHOLD_HIGH, True)]
    other = m(2.0, 0, OTHER)
    assert engine.process([other]) == [other]


def test_restored_active_alarm_is_cleared_after_restart_not_raised_again() -> None:
    engine = RuleEngine([LOW_RULE], active=[(HYDRANT.id, "threshold_low")])
    assert engine.active == {(HYDRANT.id, "threshold_low")}
    assert feed(engine, [(0.05, 0), (0.05, 20)]) == []  # still low: no second raise
    got = feed(engine, [(0.3, 21), (0.3, 31)])
    assert [(e.type, e.active) for e in got] == [(EventType.THRESHOLD_LOW, False)]


def test_deadband_suppresses_small_moves_and_reports_periodically() -> None:
    rule = RuleConfig("level", "modbus/bus1/4/level", deadband=0.05, report_interval_s=60)
    engine = RuleEngine([rule])
    sent = [r.value for t, v in enumerate([2.0, 2.01, 2.03, 2.06, 2.07, 2.0])
            for r in engine.process([m(v, t, OTHER)])]
    assert sent == [2.0, 2.06, 2.0]
    assert engine.counters.get("suppressed") == 3
    assert [r.value for r in engine.process([m(2.01, 70, OTHER)])] == [2.01]  # proof of life


def test_rule_in_another_unit_is_refused_not_misapplied() -> None:
    rule = RuleConfig("kpa", "modbus/bus1/3/pressure", low=150, unit="kPa")
    engine = RuleEngine([rule])
    assert feed(engine, [(0.1, 0), (0.1, 100)]) == []
    assert engine.counters.get("rule_unit_mismatch") == 1


def test_the_first_matching_rule_applies_to_engine_and_provisioning_alike() -> None:
    """One matcher (``first_match``): an exact id or a case-sensitive glob, first one wins;
    the engine's ``rule_for`` is the rule at the index provisioning writes for the firmware."""
    exact = RuleConfig("exact", "modbus/bus1/3/pressure", low=0.2)
    rules = [RuleConfig("level", "modbus/*/level", low=1.0), LOW_RULE, exact,
             RuleConfig("odd", "ble/[x]", deadband=1.0)]
    engine = RuleEngine(rules)
    for sid, want in [("modbus/bus1/3/pressure", 1), ("modbus/bus1/4/level", 0),
                      ("modbus/bus1/3/Pressure", None), ("ble/[x]", 3), ("ble/x", 3),
                      ("panel/1", None)]:
        assert first_match(rules, sid) == want, sid
        assert engine.rule_for(sid) is (None if want is None else rules[want]), sid
    assert first_match([], "modbus/bus1/3/pressure") is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.5), st.integers(0, 20_000)), max_size=60))
def test_alarms_alternate_and_only_after_debounce(samples: list[tuple[float, int]]) -> None:
    """Whatever the samples: raise and clear alternate per limit, and a raise comes only after
    the value has been beyond the limit for the whole debounce time."""
    engine = RuleEngine([LOW_RULE])
    t = 0
    history: list[tuple[int, float]] = []
    state = {EventType.THRESHOLD_LOW: False, EventType.THRESHOLD_HIGH: False}
    for value, dt in samples:
        t += dt
        history.append((t, value))
        for e in events(list(engine.process([m(value, t / 1000)]))):
            assert e.active is not state[e.type]
            state[e.type] = e.active
            if e.active and e.type is EventType.THRESHOLD_LOW:
                window = [v for ts, v in history if ts >= t - 10_000]
                start = [v for ts, v in history if ts <= t - 10_000]
                assert all(v < 0.15 for v in window) and start and start[-1] < 0.15
