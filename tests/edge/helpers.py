"""Record factories and a config shortcut for the outbox tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.outbox import OutboxConfig
from protocols.wire import Bus, Event, EventType, Measurement, Priority, Quantity, Record, Source

T0 = 1_718_000_000_000
SENSOR = Source("modbus/bus1/3/pressure", Bus.MODBUS)
DETECTOR = Source("panel/1-1/258-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")

EVENT_OF = {
    Priority.FIRE: EventType.FIRE_ALARM,
    Priority.ALARM: EventType.FAULT,
    Priority.EVENT: EventType.OPERATION,
}


def measurement(i: int = 0, value: float = 0.32) -> Measurement:
    return Measurement(
        source=SENSOR, quantity=Quantity.PRESSURE, value=value, unit="MPa", receive_ms=T0 + i
    )


def event(priority: Priority, i: int = 0) -> Event:
    return Event(source=DETECTOR, type=EVENT_OF[priority], receive_ms=T0 + i, state=2)


def record(priority: Priority, i: int = 0) -> Record:
    """A record of the class ``priority``; ``i`` varies its content."""
    return measurement(i) if priority is Priority.MEASUREMENT else event(priority, i)


def config(path: Path, **kw: Any) -> OutboxConfig:
    """Test default: no commit window (tests do not wait for company)."""
    kw.setdefault("commit_window_s", 0.0)
    return OutboxConfig(path / "outbox.db" if path.is_dir() else path, **kw)
