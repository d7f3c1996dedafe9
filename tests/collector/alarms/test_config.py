"""``[[escalation]]`` and ``[alarms]``: the issue's example parses, every mistake is refused
with the key named, and a webhook may exist for escalation only (``events = []``)."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from collector.alarms.config import ALARM_KINDS, GATEWAY_KINDS, AlarmsConfig, EscalationStep
from collector.config import GATEWAY_OFFLINE, RECORDS_MISSING, ConfigError, parse_config
from protocols.wire import DEFAULT_PRIORITY, Priority

SECRET = "0123456789abcdef0123456789abcdef"
EXAMPLE = """
[[webhook]]
name = "duty"
url = "https://duty.example.net/hook"
secret = "SECRET"
events = []
[[webhook]]
name = "maintenance"
url = "https://maint.example.net/hook"
secret = "SECRET"
[[webhook]]
name = "fire-station"
url = "https://119.example.net/hook"
secret = "SECRET"
events = []

[[escalation]]
name = "fire"
events = ["fire_alarm"]
sites = ["*"]
until = "ack"
[[escalation.step]]
after_s = 0
webhooks = ["duty"]
[[escalation.step]]
after_s = 60
webhooks = ["maintenance", "fire-station"]

[[escalation]]
name = "the-rest"
until = "ack_or_clear"
sites = ["hz-*", "sh-pd-017"]
[[escalation.step]]
after_s = 300
webhooks = ["maintenance"]

[alarms]
retention_days = 30
""".replace("SECRET", SECRET)


def doc() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE)


def test_the_issues_example() -> None:
    c = parse_config(doc())
    fire, rest = c.escalation
    assert (fire.name, fire.events, fire.sites, fire.until) == \
        ("fire", frozenset({"fire_alarm"}), ("*",), "ack")
    assert fire.steps == (EscalationStep(0.0, ("duty",)),
                          EscalationStep(60.0, ("maintenance", "fire-station")))
    assert rest.events == frozenset(ALARM_KINDS) and rest.until == "ack_or_clear"
    assert c.webhooks[0].events == frozenset()  # escalation only
    assert c.alarms == AlarmsConfig(retention_days=30)
    assert parse_config({}).alarms == AlarmsConfig() and AlarmsConfig().retention_days == 90


def test_alarm_kinds_follow_the_wire_priorities() -> None:
    assert GATEWAY_KINDS == (GATEWAY_OFFLINE, RECORDS_MISSING)
    assert set(ALARM_KINDS) == {t.value for t, p in DEFAULT_PRIORITY.items()
                                if p <= Priority.ALARM} | {GATEWAY_OFFLINE, RECORDS_MISSING}


def edit(path: str, value: object) -> dict[str, Any]:
    d = doc()
    where: Any = d
    keys = path.split(".")
    for k in keys[:-1]:
        where = where[int(k)] if k.isdigit() else where[k]
    if value is None:
        del where[keys[-1]]
    else:
        where[keys[-1]] = value
    return d


@pytest.mark.parametrize(("path", "value", "error"), [
    ("escalation.0.step.1.webhooks", ["pager"],
     "escalation[0].step[1].webhooks: 'pager' is not a [[webhook]] name "
     "(duty, fire-station, maintenance)"),
    ("escalation.0.step.1.after_s", -1, "escalation[0].step[1].after_s: must be at least 0"),
    ("escalation.0.step.0.after_s", 120,
     "escalation[0].step[1].after_s: steps go in order of after_s; 60 comes after 120"),
    ("escalation.0.step", [], "escalation[0].step: a policy needs at least one"),
    ("escalation.0.step.0.webhooks", [], "escalation[0].step[0].webhooks: must name at least"),
    ("escalation.0.events", ["started"], "escalation[0].events: 'started' does not open an "
                                         "alarm"),
    ("escalation.0.events", [], "escalation[0].events: must name at least one alarm type"),
    ("escalation.0.until", "clear", "escalation[0].until: must be one of 'ack', "
                                    "'ack_or_clear', got 'clear'"),
    ("escalation.0.sites", [], "escalation[0].sites: must be non-empty site globs"),
    ("escalation.0.name", "the-rest", "escalation[1].name: 'the-rest' is used twice"),
    ("escalation.0.name", None, "escalation[0].name"),
    ("escalation.0.name", "no spaces", "escalation[0].name"),
    ("escalation.0.step.0.every_s", 5, "escalation[0].step[0].every_s: unknown key"),
    ("escalation.0.colour", "red", "escalation[0].colour: unknown key"),
    ("alarms.retention_days", 0, "alarms.retention_days: must be at least 1"),
    ("alarms.keep", 1, "alarms.keep: unknown key"),
])
def test_mistakes_are_refused_with_the_key(path: str, value: object, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(edit(path, value))
    assert str(e.value).startswith(error), str(e.value)


def test_a_policy_needs_webhooks_that_exist() -> None:
    d = doc()
    del d["webhook"]
    with pytest.raises(ConfigError, match=r"'duty' is not a \[\[webhook\]\] name \(none"):
        parse_config(d)
