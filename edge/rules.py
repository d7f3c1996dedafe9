"""Local rules on measurements: thresholds with hysteresis and debounce, report by exception.

Pure and clock-free: time comes from the records (``receive_ms``) and from ``tick(now_ms)``,
so the same samples always give the same events, in tests and in the field.

Thresholds (configured per sensor with ``[[rule]]``, see ``edge/config/rules.py``): a low
limit is *crossed* when a value is below ``low``, and *cleared* when a value is at or above
``low + hysteresis`` (a high limit mirrors it), so a value hovering at the limit does not
flap. Both must hold for ``debounce_s`` before they are reported: hydrant pressure below
0.15 MPa for 10 s raises ``threshold_low`` once; a single low sample does not. A crossing that
has lasted long enough as far as the samples tell (no contrary sample arrived) matures in
``tick`` without waiting for the next sample, so a sensor polled every minute still alarms
``debounce_s`` after the crossing.

Report by exception: with a ``deadband``, a value is sent only when it moved by at least the
deadband from the last value sent, or ``report_interval_s`` passed (proof of life), or it came
with a threshold event. Suppressed values are counted, not lost data: they are within the
deadband of a value that was sent.

Active alarms are exported (``active``) and restored on start-up from the local state, so an
alarm raised before a restart is cleared after it, and not raised twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from protocols.wire import Bus, Event, EventType, Measurement, Record, Source

from .config.rules import RuleConfig, first_match
from .drivers.base import Counters

__all__ = ["RuleEngine"]

LOW, HIGH = EventType.THRESHOLD_LOW, EventType.THRESHOLD_HIGH


@dataclass(slots=True)
class _Limit:
    """One limit of one sensor: low or high."""

    kind: EventType
    active: bool = False
    pending_since_ms: int | None = None  # the change (raise or clear) seen first at this time
    pending_value: float = 0.0
    unit: str = ""
    source: Source | None = None


@dataclass(slots=True)
class _Sensor:
    rule: RuleConfig | None
    limits: dict[EventType, _Limit] = field(default_factory=dict)
    last_sent_value: float | None = None
    last_sent_ms: int = 0


class RuleEngine:
    """Applies ``[[rule]]`` tables to the records drivers emit."""

    def __init__(self, rules: Sequence[RuleConfig], *,
                 active: Iterable[tuple[str, str]] = (),
                 counters: Counters | None = None) -> None:
        self.rules = tuple(rules)
        self.counters = counters if counters is not None else Counters()
        self._sensors: dict[str, _Sensor] = {}
        self._restored = {(sid, EventType(kind)) for sid, kind in active}

    # -- public --------------------------------------------------------------------------------

    def process(self, records: Sequence[Record]) -> list[Record]:
        """Records to store: events pass through; measurements may be held back by a deadband
        and may bring threshold events (placed after the measurement that caused them)."""
        out: list[Record] = []
        for record in records:
            if isinstance(record, Measurement):
                self._measurement(record, out)
            else:
                out.append(record)
        return out

    def tick(self, now_ms: int) -> list[Record]:
        """Threshold changes whose debounce has run out with no contrary sample."""
        out: list[Record] = []
        for sensor in self._sensors.values():
            rule = sensor.rule
            if rule is None:
                continue
            for limit in sensor.limits.values():
                since = limit.pending_since_ms
                if since is not None and now_ms - since >= rule.debounce_s * 1000:
                    out.append(self._flip(rule, limit, limit.pending_value, now_ms))
        return out

    def next_deadline_ms(self) -> int | None:
        """When ``tick`` next has something to do, or None."""
        deadlines = [
            limit.pending_since_ms + int(s.rule.debounce_s * 1000)
            for s in self._sensors.values() if s.rule is not None
            for limit in s.limits.values() if limit.pending_since_ms is not None
        ]
        return min(deadlines, default=None)

    @property
    def active(self) -> set[tuple[str, str]]:
        """``(source id, event type)`` of every threshold alarm currently raised."""
        out = {(sid, kind.value) for sid, kind in self._restored}
        for sid, sensor in self._sensors.items():
            for limit in sensor.limits.values():
                if limit.active:
                    out.add((sid, limit.kind.value))
        return out

    def rule_for(self, source_id: str) -> RuleConfig | None:
        """The rule applying to a source id (:func:`edge.config.rules.first_match`), or None."""
        i = first_match(self.rules, source_id)
        return None if i is None else self.rules[i]

    # -- internals -----------------------------------------------------------------------------

    def _sensor(self, m: Measurement) -> _Sensor:
        sid = m.source.id
        sensor = self._sensors.get(sid)
        if sensor is None:
            rule = self.rule_for(sid)
            if rule is not None and rule.unit is not None and rule.unit != m.unit:
                # A rule written in kPa must not compare MPa values: refuse it loudly, once.
                self.counters.inc("rule_unit_mismatch")
                rule = None
            sensor = _Sensor(rule)
            if rule is not None:
                for kind, limit_value in ((LOW, rule.low), (HIGH, rule.high)):
                    if limit_value is not None:
                        restored = (sid, kind) in self._restored
                        self._restored.discard((sid, kind))
                        sensor.limits[kind] = _Limit(kind, active=restored)
            self._sensors[sid] = sensor
        return sensor

    def _measurement(self, m: Measurement, out: list[Record]) -> None:
        sensor = self._sensor(m)
        rule = sensor.rule
        if rule is None:
            out.append(m)
            return
        events: list[Event] = []
        for limit in sensor.limits.values():
            limit.unit, limit.source = m.unit, m.source
            changing = self._changing(rule, limit, m.value)
            if not changing:
                limit.pending_since_ms = None
            elif limit.pending_since_ms is None:
                limit.pending_since_ms = m.receive_ms
                limit.pending_value = m.value
            else:
                limit.pending_value = m.value
            since = limit.pending_since_ms
            if since is not None and m.receive_ms - since >= rule.debounce_s * 1000:
                events.append(self._flip(rule, limit, m.value, m.receive_ms))
        if events or self._due(rule, sensor, m):
            sensor.last_sent_value = m.value
            sensor.last_sent_ms = m.receive_ms
            out.append(m)
        else:
            self.counters.inc("suppressed")
        out.extend(events)

    @staticmethod
    def _changing(rule: RuleConfig, limit: _Limit, value: float) -> bool:
        """Whether ``value`` asks this limit to change state (raise if clear, clear if raised)."""
        if limit.kind is LOW:
            assert rule.low is not None
            return value >= rule.low + rule.hysteresis if limit.active else value < rule.low
        assert rule.high is not None
        return value <= rule.high - rule.hysteresis if limit.active else value > rule.high

    @staticmethod
    def _due(rule: RuleConfig, sensor: _Sensor, m: Measurement) -> bool:
        if rule.deadband is None or sensor.last_sent_value is None:
            return True
        if abs(m.value - sensor.last_sent_value) >= rule.deadband:
            return True
        interval = rule.report_interval_s
        return interval is not None and m.receive_ms - sensor.last_sent_ms >= interval * 1000

    def _flip(self, rule: RuleConfig, limit: _Limit, value: float, now_ms: int) -> Event:
        limit.active = not limit.active
        limit.pending_since_ms = None
        assert limit.source is not None
        bound = rule.low if limit.kind is LOW else rule.high
        assert bound is not None
        sign = "<" if limit.kind is LOW else ">"
        if limit.active:
            detail = f"rule {rule.name}: {value:g} {limit.unit} {sign} {bound:g} {limit.unit}"
            if rule.debounce_s:
                detail += f" for {rule.debounce_s:g} s"
        else:
            detail = f"rule {rule.name}: back to {value:g} {limit.unit}"
        self.counters.inc("raised" if limit.active else "cleared")
        src = limit.source
        return Event(
            source=Source(src.id, Bus.RULE, description=src.description),
            type=limit.kind, active=limit.active, priority=rule.priority,
            receive_ms=now_ms, value=value, limit=bound, detail=detail,
        )
