"""What one simulated gateway produces: periodic measurements and occasional alarm bursts.

Pure and deterministic: a :class:`RecordMix` is seeded from ``(seed, gateway id)`` and its
stream of records (sources, values, which alarms, when they are restored) depends only on the
position in the stream, never on wall-clock timing. Timing decides only ``rt`` and where the
gateway's own uplink events (:meth:`RecordMix.link_fault`) fall.

A gateway has a few Modbus transmitters (hydrant pressure in MPa, a tank level in m, an
electrical fire detector with residual current in mA and cable temperature), one to three BLE
sensors (temperature, battery %, RSSI) and a fire panel (GB/T 26875.3 addressing) whose points
raise the alarms. Measurements take turns over the meters and drift as a bounded random walk.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any

from protocols.wire import Bus, Event, EventType, Measurement, Priority, Quantity, Record, Source

__all__ = ["BURSTS", "Meter", "RecordMix"]

PLACES = ("一层东走廊", "二层配电间", "三层楼梯前室", "地下一层车库", "消防泵房", "七层电梯厅")
# Component types of GB/T 26875.3 表5 that raise fire alarms, with a Chinese name.
PANEL_POINTS = ((42, "光电感烟探测器"), (31, "点型感温探测器"), (23, "手动报警按钮"),
                (24, "消火栓按钮"))
STATE_FIRE, STATE_FAULT, STATE_NORMAL = 0x0002, 0x0004, 0x0000  # component state word bits
RESTORE_AFTER = (5, 60)  # a burst's restore comes this many records later (inclusive range)
NEVER = 1 << 62


@dataclass(frozen=True, slots=True)
class Meter:
    """One measured value of one source, drifting between ``low`` and ``high``."""

    source: Source
    quantity: Quantity
    unit: str
    low: float
    high: float
    step: float
    digits: int


# Burst kinds and their weights: faults are the most common thing a monitoring centre sees,
# fire alarms the rarest (and the most urgent: Priority.FIRE).
BURSTS: tuple[tuple[str, int], ...] = (
    ("fire_alarm", 1),
    ("fault", 3),
    ("pressure_low", 2),
    ("residual_current_high", 1),
    ("sensor_offline", 2),
)
_KINDS = tuple(k for k, _ in BURSTS)
_WEIGHTS = tuple(w for _, w in BURSTS)


@dataclass(frozen=True, slots=True)
class _Restore:
    source: Source
    type: EventType
    state: int | None
    value: float | None
    limit: float | None


class RecordMix:
    """The record stream of one gateway. ``fill()`` appends numbered records."""

    def __init__(self, gateway_id: str, seed: int, alarm_rate: float) -> None:
        self.rng = rng = random.Random(f"firegate-fleet/{seed}/{gateway_id}")
        self.alarm_rate = alarm_rate
        self.meters: list[Meter] = []
        hydrants = rng.randint(1, 3)
        for a in range(1, hydrants + 1):
            self._meter(f"modbus/bus1/{a}/pressure", Bus.MODBUS, Quantity.PRESSURE, "MPa",
                        0.25, 0.45, 0.005, 3)
        self._meter(f"modbus/bus1/{hydrants + 1}/level", Bus.MODBUS, Quantity.LEVEL, "m",
                    1.0, 4.5, 0.01, 3)
        self._meter("modbus/bus2/1/residual_current", Bus.MODBUS, Quantity.RESIDUAL_CURRENT,
                    "mA", 10.0, 250.0, 4.0, 1)
        self._meter("modbus/bus2/1/temperature", Bus.MODBUS, Quantity.TEMPERATURE, "°C",
                    18.0, 45.0, 0.3, 1)
        self.ble: list[Source] = []
        for _ in range(rng.randint(1, 3)):
            mac = "A4:C1:38:" + ":".join(f"{rng.randrange(256):02X}" for _ in range(3))
            sid = f"ble/{mac}"
            self._meter(sid, Bus.BLE, Quantity.TEMPERATURE, "°C", 15.0, 35.0, 0.2, 1)
            self._meter(sid, Bus.BLE, Quantity.BATTERY, "%", 20.0, 100.0, 0.5, 0)
            self._meter(sid, Bus.BLE, Quantity.RSSI, "dBm", -95.0, -45.0, 3.0, 0)
            self.ble.append(self.meters[-1].source)
        self.panel: list[Source] = []
        for _ in range(rng.randint(4, 8)):
            ct, name = rng.choice(PANEL_POINTS)
            ca = rng.randrange(1, 1024)
            self.panel.append(Source(
                f"panel/1-1/{ct}-0x{ca:08x}", Bus.GB26875, system_type=1, system_address=1,
                component_type=ct, component_address=ca,
                description=rng.choice(PLACES) + name))
        self._rules: dict[str, Source] = {}
        self.uplink = Source("gateway/uplink", Bus.GATEWAY, description="网关上行链路")
        self._values = [round(rng.uniform(m.low, m.high), m.digits) for m in self.meters]
        self._turn = 0
        self._pos = 0  # records produced from the stream so far
        self._next_burst = self._gap()
        self._restores: list[tuple[int, int, _Restore]] = []  # (due position, tie, restore)
        self._active: set[tuple[str, EventType]] = set()  # raised, not yet restored
        self.counts = [0, 0, 0, 0]
        """Records produced per priority class (fire, alarm, event, measurement)."""

    def _meter(self, sid: str, bus: Bus, q: Quantity, unit: str, low: float, high: float,
               step: float, digits: int) -> None:
        source = next((m.source for m in self.meters if m.source.id == sid), None)
        self.meters.append(Meter(source or Source(sid, bus), q, unit, low, high, step, digits))

    def _gap(self) -> int:
        if self.alarm_rate <= 0.0:
            return NEVER
        return self._pos + int(self.rng.expovariate(self.alarm_rate))

    def fill(self, out: list[Record], first_seq: int, n: int, t0_ms: int, t1_ms: int) -> None:
        """Append ``n`` records numbered from ``first_seq``, received evenly over t0..t1
        (the last at t1, in whole milliseconds)."""
        span = t1_ms - t0_ms
        rng, meters, values, counts = self.rng, self.meters, self._values, self.counts
        n_meters = len(meters)
        measured = 0
        for i in range(n):
            rt = t0_ms + span * (i + 1) // n
            pos = self._pos
            self._pos = pos + 1
            if self._restores and self._restores[0][0] <= pos:
                out.append(self._restore(first_seq + i, rt))
                continue
            if pos >= self._next_burst:
                self._next_burst = self._gap()
                burst = self._burst(first_seq + i, rt)
                if burst is not None:
                    out.append(burst)
                    continue
            k = self._turn
            self._turn = k + 1 if k + 1 < n_meters else 0
            m = meters[k]
            v = values[k] + (rng.random() - 0.5) * m.step
            v = m.low if v < m.low else m.high if v > m.high else v
            values[k] = v
            out.append(Measurement(source=m.source, quantity=m.quantity, unit=m.unit,
                                   value=round(v, m.digits), receive_ms=rt, seq=first_seq + i))
            measured += 1
        counts[3] += measured

    @staticmethod
    def _event(seq: int, rt: int, source: Source, type: EventType, active: bool, *,
               state: int | None = None, value: float | None = None,
               limit: float | None = None, source_ms: int | None = None) -> Event:
        return Event(source=source, type=type, active=active, receive_ms=rt, seq=seq,
                     state=state, value=value, limit=limit, source_ms=source_ms)

    def _counted(self, *args: Any, **kwargs: Any) -> Event:
        e = self._event(*args, **kwargs)
        self.counts[e.priority] += 1
        return e

    def _rule(self, name: str, meter: Meter, description: str) -> Source:
        sid = f"rule/{name}/{meter.source.id}"
        if sid not in self._rules:
            self._rules[sid] = Source(sid, Bus.RULE, description=description)
        return self._rules[sid]

    def _burst(self, seq: int, rt: int) -> Event | None:
        """Raise a condition and schedule its restore; None (a measurement is made instead)
        if the condition chosen is still raised: a panel does not raise an active alarm."""
        rng = self.rng
        kind = rng.choices(_KINDS, _WEIGHTS)[0]
        later = self._pos + rng.randint(*RESTORE_AFTER)
        if kind in ("fire_alarm", "fault"):
            point = rng.choice(self.panel)
            fire = kind == "fire_alarm"
            etype = EventType.FIRE_ALARM if fire else EventType.FAULT
            restore = _Restore(point, etype, STATE_NORMAL, None, None)
            # A panel stamps events with its own clock, which lags the gateway's a little.
            event = self._event(seq, rt, point, etype, True, state=STATE_FIRE if fire else
                                STATE_FAULT, source_ms=rt - rng.randrange(0, 2000))
        elif kind == "pressure_low":
            meter = next(m for m in self.meters if m.quantity is Quantity.PRESSURE)
            src = self._rule("pressure-low", meter, "消火栓压力低")
            restore = _Restore(src, EventType.THRESHOLD_LOW, None, 0.3, 0.15)
            event = self._event(seq, rt, src, EventType.THRESHOLD_LOW, True,
                                value=round(rng.uniform(0.05, 0.14), 3), limit=0.15)
        elif kind == "residual_current_high":
            meter = next(m for m in self.meters if m.quantity is Quantity.RESIDUAL_CURRENT)
            src = self._rule("residual-current-high", meter, "剩余电流超限")
            restore = _Restore(src, EventType.THRESHOLD_HIGH, None, 120.0, 300.0)
            event = self._event(seq, rt, src, EventType.THRESHOLD_HIGH, True,
                                value=round(rng.uniform(301.0, 500.0), 1), limit=300.0)
        else:
            src = rng.choice(self.ble)
            restore = _Restore(src, EventType.SENSOR_OFFLINE, None, None, None)
            event = self._event(seq, rt, src, EventType.SENSOR_OFFLINE, True)
        key = (restore.source.id, restore.type)
        if key in self._active:
            return None
        self._active.add(key)
        self.counts[event.priority] += 1
        heapq.heappush(self._restores, (later, seq, restore))
        return event

    def _restore(self, seq: int, rt: int) -> Event:
        r = heapq.heappop(self._restores)[2]
        self._active.discard((r.source.id, r.type))
        return self._counted(seq, rt, r.source, r.type, False, state=r.state, value=r.value,
                           limit=r.limit, source_ms=rt if r.state is not None else None)

    def link_fault(self, seq: int, rt: int, *, down: bool) -> Event:
        """The gateway's own uplink went down (``down=True``) or came back: a ``link_fault``
        (Priority.ALARM) from source ``gateway/uplink``, outside the device stream."""
        return self._counted(seq, rt, self.uplink, EventType.LINK_FAULT, down)

    @staticmethod
    def is_alarm(record: Record) -> bool:
        """Fire or alarm class: what a catch-up sends first."""
        return record.priority <= Priority.ALARM
