"""``common/``: the one config validator and the one back-off every process uses."""

from __future__ import annotations

from datetime import datetime

import pytest

from common.backoff import Backoff
from common.config import ConfigError, ConfigErrors, ErrorCollector, Table


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    exact = Backoff(0.5, 3.0)
    assert [exact.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert exact.attempts == 5
    exact.reset()
    assert exact.attempts == 0 and exact.next() == 0.5


def test_backoff_jitter_shortens_but_never_below_the_minimum() -> None:
    low = Backoff(1.0, 8.0, jitter=0.25, rng=lambda: 0.0)
    assert [low.next() for _ in range(5)] == [1.0, 1.5, 3.0, 6.0, 6.0]
    high = Backoff(1.0, 8.0, jitter=0.25, rng=lambda: 1.0)
    assert [high.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]


@pytest.mark.parametrize(("args", "jitter"), [((0.0, 1.0), 0.0), ((2.0, 1.0), 0.0),
                                              ((1.0, 2.0), 1.5), ((1.0, 2.0), -0.1)])
def test_backoff_refuses_nonsense(args: tuple[float, float], jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(*args, jitter=jitter)


def test_an_error_names_the_dotted_key_and_the_file() -> None:
    t = Table({"bus": [{"baud": 0}]}, "modbus")
    (bus,) = t.tables("bus")
    with pytest.raises(ConfigError) as info:
        bus.integer("baud", min=1)
    assert str(info.value) == "modbus.bus[0].baud: must be at least 1, got 0"
    named = info.value.within("site.toml")
    assert named.source == "site.toml" and named.key == "modbus.bus[0].baud"
    assert "site.toml" in str(named)


def test_unknown_keys_are_refused_naming_the_allowed_ones() -> None:
    t = Table({"rate": 1, "rtae": 2}, "sim")
    t.integer("rate")
    with pytest.raises(ConfigError, match=r"^sim\.rtae: unknown key; allowed here: rate$"):
        t.finish()


def test_collected_errors_come_together_first_one_leading() -> None:
    t = Table({"a": "x", "b": -1}, "s")
    problems = ErrorCollector()
    problems.attempt(lambda: t.integer("a"), None)
    problems.attempt(lambda: t.integer("b", min=0), None)
    with pytest.raises(ConfigErrors) as info:
        problems.raise_any()
    assert [e.key for e in info.value.errors] == ["s.a", "s.b"]
    assert info.value.key == "s.a" and str(info.value).count("\n") == 1


def test_raw_and_date_time() -> None:
    t = Table({"after": "never", "start": "2024-05-01T08:00:00", "bad": "soon"}, "p")
    assert t.raw("after") == "never"
    assert t.date_time("start") == datetime(2024, 5, 1, 8, 0)
    with pytest.raises(ConfigError, match=r"^p\.bad: must be a date-time"):
        t.date_time("bad")
