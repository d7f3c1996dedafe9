"""``[[rule]]`` tables: local threshold and report-by-exception rules on measurements."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from common.config import Table
from protocols.wire import Priority

__all__ = ["RuleConfig", "first_match", "parse_rule"]

_PRIORITY_NAMES = {"fire": Priority.FIRE, "alarm": Priority.ALARM, "event": Priority.EVENT}


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """One rule; the first rule whose ``match`` fits a measurement's source id applies."""

    name: str
    match: str
    """A source id or a glob over source ids (``modbus/bus1/*/pressure``, ``ble/*``)."""
    low: float | None = None
    """Raise ``threshold_low`` when the value stays below this for ``debounce_s``."""
    high: float | None = None
    """Raise ``threshold_high`` when the value stays above this for ``debounce_s``."""
    hysteresis: float = 0.0
    """A low alarm clears at ``low + hysteresis`` or above, a high one at ``high - hysteresis``."""
    debounce_s: float = 0.0
    """How long a crossing (and a clearing) must last before it is reported."""
    deadband: float | None = None
    """Report by exception: a value within ``deadband`` of the last one sent is not sent."""
    report_interval_s: float | None = 300.0
    """With a deadband, a value is still sent at least this often (proof of life)."""
    priority: Priority = Priority.ALARM
    """Class of the threshold events (``fire`` for, say, a gas concentration rule)."""
    unit: str | None = None
    """The unit ``low``/``high`` are written in; must match the measurement's unit if given."""

    def matches(self, source_id: str) -> bool:
        """Whether ``match`` fits a source id: the id itself, or a glob over ids
        (``fnmatchcase``: case-sensitive on every platform, as source ids are)."""
        return self.match == source_id or fnmatch.fnmatchcase(source_id, self.match)


def first_match(rules: Sequence[RuleConfig], source_id: str) -> int | None:
    """Index of the rule that applies to a source id (the first that matches), or None.

    The one place the choice is made: the agent's rule engine asks it per sensor, and
    provisioning asks it per firmware point (so the firmware needs no glob matcher).
    """
    for i, rule in enumerate(rules):
        if rule.matches(source_id):
            return i
    return None


def parse_rule(t: Table) -> RuleConfig:
    name = t.text("name", pattern=r"[A-Za-z0-9_.\-]{1,64}", hint="1-64 letters, digits, _ . -")
    match = t.text("match", pattern=r"[!-~]{1,128}", hint="a source id or glob without spaces")
    low = t.opt_number("low")
    high = t.opt_number("high")
    hysteresis = t.number("hysteresis", 0.0, min=0.0)
    debounce_s = t.number("debounce_s", 0.0, min=0.0, max=86_400.0)
    deadband = t.opt_number("deadband", min=0.0)
    report_interval_s = t.opt_number("report_interval_s", min=1.0) if t.has(
        "report_interval_s") else 300.0
    priority = _PRIORITY_NAMES[t.one_of("priority", list(_PRIORITY_NAMES), "alarm")]
    unit = t.opt_text("unit", max_len=16)
    if low is not None and high is not None and not low < high:
        t.fail("high", f"must be greater than low ({low:g}), got {high:g}")
    if low is None and high is None and deadband is None:
        t.fail("", "a rule needs at least one of low, high or deadband")
    if low is not None and high is not None and hysteresis * 2 >= high - low:
        t.fail("hysteresis", f"must be less than half of high - low ({(high - low) / 2:g}), "
                             f"got {hysteresis:g}")
    t.finish()
    return RuleConfig(name, match, low, high, hysteresis, debounce_s, deadband,
                      report_interval_s, priority, unit)
