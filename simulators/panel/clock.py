"""Clocks of the panel simulator.

Two different times live in a simulated UITD:

* **Scenario time**, in seconds from the start of the run. The timeline (``at = 5.0``), the
  confirm timeout, the periodic-state interval, the check-post answer delay and link-loss
  durations are all scenario seconds. :class:`ScaledClock` runs it at ``speed`` times the wall
  clock (the CLI's ``--speed``), :class:`ManualClock` only moves when a test says so, so a test
  steps through minutes of scenario without sleeping.
* **The panel's own calendar clock** (:class:`PanelClock`), which writes the time labels: a base
  date plus the scenario time, shifted by the centre's clock sync (type 90). At ``speed = 10`` the
  labels advance ten seconds per wall-clock second, consistently with the timeline.

The wire itself (baud-rate pacing, gaps between the pieces of a split frame) always runs in real
seconds: a byte takes as long to cross a 9600-baud line whatever the scenario speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from protocols.gb26875 import TimeLabel


class Clock(Protocol):
    """Scenario time as the simulator's runner sees it."""

    def now(self) -> float:
        """Scenario seconds since the start."""
        ...

    def real_delay(self, until: float) -> float | None:
        """Wall-clock seconds until scenario time ``until`` (None: only an explicit advance gets
        there, as with a manual clock)."""
        ...

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the clock jumps (manual clocks); scaled clocks never do."""
        ...


class ScaledClock:
    """Scenario time = wall-clock (monotonic) time since creation x ``speed``."""

    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._start = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._start) * self.speed

    def real_delay(self, until: float) -> float | None:
        return max(0.0, (until - self.now()) / self.speed)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Nothing to do: a scaled clock never jumps."""


class ManualClock:
    """Scenario time that moves only by :meth:`advance` or :meth:`set` (tests)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._callbacks: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    def real_delay(self, until: float) -> float | None:
        return 0.0 if until <= self._now else None

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def advance(self, seconds: float) -> float:
        """Move forward ``seconds``; wakes the runners that use this clock."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        return self.set(self._now + seconds)

    def set(self, now: float) -> float:
        """Jump to scenario time ``now`` (not backwards)."""
        if now < self._now:
            raise ValueError("a clock does not go back")
        self._now = now
        for callback in list(self._callbacks):
            callback()
        return now


class PanelClock:
    """The UITD's calendar clock: ``base`` at scenario time 0, shifted by clock syncs.

    Labels are naive local time, like the standard's (§8.2.2 defines no zone).
    """

    def __init__(self, base: datetime | None = None) -> None:
        self.base = (base or datetime.now()).replace(microsecond=0)
        self.offset = timedelta(0)

    def at(self, scenario_time: float) -> datetime:
        """The panel's calendar time at a scenario time."""
        return self.base + timedelta(seconds=scenario_time) + self.offset

    def label(self, scenario_time: float) -> TimeLabel:
        """The time label the panel writes at a scenario time."""
        return TimeLabel.from_datetime(self.at(scenario_time))

    def sync(self, to: datetime, scenario_time: float) -> timedelta:
        """Type 90: from now on the clock reads ``to`` at ``scenario_time``; returns the shift."""
        shift = to - self.at(scenario_time)
        self.offset += shift
        return shift
