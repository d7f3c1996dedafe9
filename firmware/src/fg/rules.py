# Threshold rules on measurements: low/high limits with hysteresis and debounce, deadband.
#
# The same rules as the edge agent's rule engine (edge/rules.py; config keys of [[rule]] in
# edge/config/rules.py), ported to MicroPython; tests/firmware/test_parity.py
# (test_threshold_rules_match_the_edge_rule_engine) feeds both the same samples and compares
# the events. A low limit is crossed when a value is below ``low`` and cleared when a value is
# at or above ``low + hysteresis`` (a high limit mirrors it); either change must hold for
# ``debounce_s`` before it is reported. A crossing that has lasted long enough matures in
# ``tick()`` without waiting for the next sample. With a ``deadband``, a value is sent only when
# it moved at least that far from the last one sent, or ``report_interval_s`` passed, or it came
# with a threshold event.
#
# Which rule applies to which point is resolved when the device is provisioned (the agent's
# first match over source ids, edge/config/rules.py first_match), so the firmware needs no glob
# matcher.

from fg.records import EV_HIGH, EV_LOW


class _Limit:
    def __init__(self, kind, bound, active):
        self.kind = kind
        self.bound = bound
        self.active = active
        self.since = None  # the change (raise or clear) was first seen at this time
        self.pending = 0.0


class Sensor:
    """One point under one rule (a dict from config.json ``rules``)."""

    def __init__(self, rule, unit, active_kinds):
        self.rule = rule
        self.unit = unit
        self.debounce_ms = rule["debounce_s"] * 1000
        self.limits = []
        for kind, key in ((EV_LOW, "low"), (EV_HIGH, "high")):
            if rule[key] is not None:
                self.limits.append(_Limit(kind, rule[key], kind in active_kinds))
        self.last_value = None
        self.last_ms = 0

    def _changing(self, lim, v):
        h = self.rule["hysteresis"]
        if lim.kind == EV_LOW:
            return v >= lim.bound + h if lim.active else v < lim.bound
        return v <= lim.bound - h if lim.active else v > lim.bound

    def _flip(self, lim, value, ms, out):
        lim.active = not lim.active
        lim.since = None
        out.append((lim.kind, lim.active, value, lim.bound, ms))

    def sample(self, value, ms, out):
        """Feed one measurement; threshold changes go to ``out`` as
        (kind, active, value, limit, ms). Returns whether the measurement is to be sent."""
        n = len(out)
        for lim in self.limits:
            if not self._changing(lim, value):
                lim.since = None
            elif lim.since is None:
                lim.since = ms
                lim.pending = value
            else:
                lim.pending = value
            if lim.since is not None and ms - lim.since >= self.debounce_ms:
                self._flip(lim, value, ms, out)
        if len(out) > n or self._due(value, ms):
            self.last_value = value
            self.last_ms = ms
            return True
        return False

    def _due(self, value, ms):
        band = self.rule["deadband"]
        if band is None or self.last_value is None:
            return True
        if abs(value - self.last_value) >= band:
            return True
        every = self.rule["report_interval_s"]
        return every is not None and ms - self.last_ms >= every * 1000

    def unflip(self, ev):
        """Undo the change ``ev`` (one of ours) that could not be stored (flash failing): the
        limit is as it was and the change is due at once, so the next tick or sample reports
        it again, unless a value on the other side comes first (then there is no change to
        report, as for any change that does not hold)."""
        kind, active, value, _, ms = ev
        for lim in self.limits:
            if lim.kind == kind:
                lim.active = not active
                lim.since = ms - self.debounce_ms
                lim.pending = value

    def tick(self, now, out):
        """Changes whose debounce ran out with no contrary sample."""
        for lim in self.limits:
            if lim.since is not None and now - lim.since >= self.debounce_ms:
                self._flip(lim, lim.pending, now, out)

    def next_deadline(self):
        d = None
        for lim in self.limits:
            if lim.since is not None:
                t = lim.since + int(self.debounce_ms)
                if d is None or t < d:
                    d = t
        return d

    def active_kinds(self):
        return [lim.kind for lim in self.limits if lim.active]
