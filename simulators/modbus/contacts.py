"""Two-state contacts of the simulated devices as functions of scenario time. No I/O.

A contact (a valve's position switch, a pump controller's "running" relay, a fault relay, a
hand/auto selector, one input of a DI module) is a bit on the wire: 1 or 0 (``on``). What the
bit *means* (valve open, pump running, fault...) is the register map's business
(``protocols.registers.BitPoint``: ``invert``, ``normal``); the simulated device keeps the raw
bit, as the real one does. As with the analogue signals of :mod:`.model`, the bit is a
function of the clock, so what a client reads does not depend on how often it polls.

:class:`Contact` holds the bit set at ``t0`` and, optionally, the **bounce** that follows the
change: ``bounces`` brief returns to the old value, each ``bounce_s`` long and ``bounce_s``
apart, before it settles. Real contacts chatter for milliseconds; a valve position switch on a
slowly turning valve, or a pressure switch under surge, chatters for seconds, which a poller
sees as several changes. The edge agent's and the firmware's debounce must report that as one
change. (The exact time a pressure switch trips, for a pump that starts on a pressure drop, is
:meth:`.model.Signal.first_at_or_below`.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Largest bounce the scenario accepts: more reversals than this is a broken contact, not bounce.
MAX_BOUNCES = 50
#: Longest single bounce (seconds) the scenario accepts.
MAX_BOUNCE_S = 60.0


@dataclass(slots=True)
class Contact:
    """A bit that is ``on`` from ``t0``, after ``bounces`` reversals of ``bounce_s`` each."""

    on: bool = False
    t0: float = 0.0
    bounces: int = 0
    bounce_s: float = 0.0

    @property
    def settled_at(self) -> float:
        """When the contact stops bouncing."""
        return self.t0 + 2 * self.bounces * self.bounce_s

    def at(self, t: float) -> bool:
        """The bit at ``t`` (never evaluated before ``t0``)."""
        if self.bounces <= 0 or t >= self.settled_at or t < self.t0:
            return self.on
        phase = math.floor((t - self.t0) / self.bounce_s)
        return self.on if phase % 2 == 0 else not self.on

    def set(self, t: float, on: bool, bounces: int = 0, bounce_s: float = 0.0) -> bool:
        """From ``t`` the bit is ``on``; a change bounces as told. Returns whether the settled
        value changed (setting the same value again neither bounces nor moves ``t0``)."""
        if on == self.on and t >= self.settled_at:
            return False
        changed = on != self.on
        self.on, self.t0 = on, t
        self.bounces, self.bounce_s = (bounces, bounce_s) if changed and bounce_s > 0 else (0, 0.0)
        return changed
