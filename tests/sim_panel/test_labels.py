"""Time labels of the panel simulator's timeline do not depend on how busy the machine is.

An event is labelled with when it happened (its ``at``, on the panel clock), not with when the
engine got round to it: a scenario that a driver test replays (two fire alarms a second apart,
a reset between them) keeps its labels on a loaded machine.
"""

from __future__ import annotations

from datetime import timedelta

from protocols.gb26875 import ComponentStatus, TimeLabel, decode_frame
from simulators.panel import UitdEngine
from simulators.panel.scenario import parse_scenario

from .helpers import START, decoded


def label(seconds: float) -> TimeLabel:
    return TimeLabel.from_datetime(START + timedelta(seconds=seconds))


def test_an_event_the_engine_reaches_late_is_labelled_with_when_it_happened() -> None:
    engine = UitdEngine(parse_scenario({"start_time": START.isoformat(), "events": [
        {"at": 1.0, "action": "fire_alarm", "component": "smoke-3F-east"},
        {"at": 3.0, "action": "fire_alarm", "component": "callpoint-3F-stairs"}]}))
    engine.connect(0.0)
    (first,) = engine.poll(9.5)  # the runner was held up for seconds: both are due at once
    (obj,) = decoded(decode_frame(first.data)).objects
    assert isinstance(obj, ComponentStatus) and obj.time == label(1)
    queued = [entry.objects[0]["time"] for entry in engine.ledger.entries]
    assert queued == ["2024-05-01T08:00:01", "2024-05-01T08:00:03"]  # START + 1 s, + 3 s
