"""``[[escalation]]`` policies and the ``[alarms]`` section, validated (docs/alarms.md).

Imported by :mod:`collector.config` (which owns the file), so this module imports nothing of the
collector's own: the two gateway-level alarm kinds are spelled here and a test checks they are
the ones ``collector.config`` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from common.config import ConfigError, Table
from protocols.wire import DEFAULT_PRIORITY, Priority

__all__ = ["ALARM_KINDS", "AlarmsConfig", "EscalationPolicy", "EscalationStep",
           "matches_site", "parse_alarms", "parse_escalation"]

GATEWAY_KINDS: tuple[str, ...] = ("gateway_offline", "records_missing")
"""``collector.config.GATEWAY_OFFLINE`` and ``RECORDS_MISSING``."""
ALARM_KINDS: tuple[str, ...] = (
    *(t.value for t, p in DEFAULT_PRIORITY.items() if p <= Priority.ALARM), *GATEWAY_KINDS)
"""What opens an alarm: every event type the wire contract sends as fire or alarm class (so a
type added there is an alarm here without a second list), and the gateway-level conditions."""
UNTIL = ("ack", "ack_or_clear")
MAX_STEPS = 20
MAX_AFTER_S = 30 * 86_400.0
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
NAME_HINT = "1-64 chars of A-Z a-z 0-9 _ . -, starting with a letter or digit"
DEFAULT_RETENTION_DAYS = 90.0


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """One ``[[escalation.step]]``: notify ``webhooks`` once the alarm is ``after_s`` old and
    still not acknowledged."""

    after_s: float
    webhooks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """One ``[[escalation]]``."""

    name: str
    events: frozenset[str] = frozenset(ALARM_KINDS)
    sites: tuple[str, ...] = ("*",)
    """fnmatch globs of site ids."""
    until: str = "ack"
    """``ack``: the steps stop when acknowledged; ``ack_or_clear``: also when cleared (never
    for a fire alarm: a cleared fire alarm still needs a person)."""
    steps: tuple[EscalationStep, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class AlarmsConfig:
    """``[alarms]``."""

    retention_days: float = DEFAULT_RETENTION_DAYS
    """Closed alarms (and their timelines) are kept this long after they closed."""
    max_timeline: int = 200
    """Entries kept per alarm; past it re-raises and clears are only counted (a flapping
    contact must not grow the book without bound)."""
    max_open_per_gateway: int = 5_000
    """Open alarms per gateway past which a new one is not opened (counted, logged), unless it
    is a fire alarm: a broken or hostile gateway must not fill the book."""
    max_open_fire_per_gateway: int = 20_000
    """Open alarms per gateway past which a new fire alarm is not opened on its own either: it
    re-raises the gateway's one overflow fire alarm (source ``alarms/overflow``), so a hostile
    gateway or a spoofed UITD cannot grow the book (and the escalations) without bound, and
    still no fire alarm goes unseen."""


def parse_alarms(t: Table | None) -> AlarmsConfig:
    """Validate ``[alarms]`` (absent: the defaults)."""
    if t is None:
        return AlarmsConfig()
    config = AlarmsConfig(
        retention_days=t.number("retention_days", DEFAULT_RETENTION_DAYS, min=1.0,
                                max=36_500.0),
        max_timeline=t.integer("max_timeline", 200, min=20, max=100_000),
        max_open_per_gateway=t.integer("max_open_per_gateway", 5_000, min=1, max=1_000_000),
        max_open_fire_per_gateway=t.integer("max_open_fire_per_gateway", 20_000, min=1,
                                            max=1_000_000),
    )
    t.finish()
    return config


def parse_escalation(tables: Sequence[Table], *, webhook_names: Sequence[str]
                     ) -> tuple[EscalationPolicy, ...]:
    """Validate every ``[[escalation]]``: names unique, event types alarm kinds, steps in
    order of ``after_s``, every webhook named defined by a ``[[webhook]]``."""
    policies: list[EscalationPolicy] = []
    for i, t in enumerate(tables):
        policy = _policy(t, set(webhook_names))
        if any(p.name == policy.name for p in policies):
            raise ConfigError(f"escalation[{i}].name", f"{policy.name!r} is used twice")
        policies.append(policy)
    return tuple(policies)


def _policy(t: Table, webhooks: set[str]) -> EscalationPolicy:
    name = t.text("name", pattern=NAME_PATTERN, hint=NAME_HINT)
    events = t.texts("events", ["*"])
    if events == ["*"]:
        events = list(ALARM_KINDS)
    if not events:
        t.fail("events", "must name at least one alarm type (or [\"*\"] for all)")
    for e in events:
        if e not in ALARM_KINDS:
            t.fail("events", f"{e!r} does not open an alarm; one of {', '.join(ALARM_KINDS)} "
                             "(or [\"*\"])")
    sites = t.texts("sites", ["*"])
    if not sites or any(not s for s in sites):
        t.fail("sites", "must be non-empty site globs (default [\"*\"])")
    until = t.one_of("until", UNTIL, "ack")
    step_tables = t.tables("step")
    if not step_tables:
        t.fail("step", "a policy needs at least one [[escalation.step]]")
    if len(step_tables) > MAX_STEPS:
        t.fail("step", f"at most {MAX_STEPS} steps, got {len(step_tables)}")
    steps: list[EscalationStep] = []
    for s in step_tables:
        after = s.number("after_s", min=0.0, max=MAX_AFTER_S)
        if steps and after < steps[-1].after_s:
            s.fail("after_s", f"steps go in order of after_s; {after:g} comes after "
                              f"{steps[-1].after_s:g}")
        hooks = s.texts("webhooks")
        if not hooks:
            s.fail("webhooks", "must name at least one [[webhook]]")
        for h in hooks:
            if h not in webhooks:
                known = ", ".join(sorted(webhooks)) or "none defined"
                s.fail("webhooks", f"{h!r} is not a [[webhook]] name ({known})")
        s.finish()
        steps.append(EscalationStep(after, tuple(dict.fromkeys(hooks))))
    t.finish()
    return EscalationPolicy(name, frozenset(events), tuple(sites), until, tuple(steps))


def matches_site(policy: EscalationPolicy, site: str) -> bool:
    """Whether ``site`` is one of the policy's (fnmatch, case-sensitive)."""
    return any(fnmatchcase(site, p) for p in policy.sites)
