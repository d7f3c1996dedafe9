"""Contacts as functions of scenario time: bounce, and the exact time a pressure switch trips."""

from __future__ import annotations

import itertools
import math

import pytest

from simulators.modbus.contacts import Contact
from simulators.modbus.model import Approach, Ramp, Signal


def test_a_contact_without_bounce_changes_once() -> None:
    c = Contact()
    assert c.at(0.0) is False
    assert c.set(5.0, True) is True
    assert [c.at(t) for t in (5.0, 5.001, 100.0)] == [True, True, True]
    assert c.set(6.0, True) is False  # no change: t0 stays
    assert c.t0 == 5.0


def test_bounce_returns_to_the_old_state_then_settles() -> None:
    c = Contact()
    c.set(10.0, True, bounces=3, bounce_s=0.5)
    assert c.settled_at == pytest.approx(13.0)
    # 10.0-10.5 new, 10.5-11.0 old, ... three returns to the old state, settled from 13.0
    samples = [c.at(10.0 + 0.25 + 0.5 * k) for k in range(8)]
    assert samples == [True, False, True, False, True, False, True, True]
    changes = sum(1 for a, b in itertools.pairwise(samples) if a != b)
    assert changes == 6  # what a fast poller sees: six changes for one real one
    assert c.at(13.0) is True and c.at(1e6) is True


def test_bounce_only_on_a_change() -> None:
    c = Contact(True)
    c.set(1.0, True, bounces=5, bounce_s=0.1)
    assert c.bounces == 0 and c.at(1.05) is True


def test_a_change_during_bounce_starts_over() -> None:
    c = Contact()
    c.set(0.0, True, bounces=4, bounce_s=1.0)
    c.set(2.5, False, bounces=1, bounce_s=1.0)  # changed back while still bouncing
    assert [c.at(t) for t in (2.6, 3.6, 4.6, 100.0)] == [False, True, False, False]


@pytest.mark.parametrize("tau", [0.5, 1.5, 10.0])
def test_first_at_or_below_an_approach_is_exact(tau: float) -> None:
    s = Signal(0.35, 5.0, Approach(0.05, tau))
    t = s.first_at_or_below(0.25, 0.0)
    assert t is not None
    assert s.at(t) == pytest.approx(0.25, abs=1e-12)
    assert s.at(t - 1e-6) > 0.25
    assert t == pytest.approx(5.0 + tau * math.log(0.30 / 0.20))


def test_first_at_or_below_a_ramp_and_the_cases_that_never_get_there() -> None:
    s = Signal(4.0, 0.0, Ramp(0.01, 0.0))
    assert s.first_at_or_below(3.7, 0.0) == pytest.approx(30.0)
    assert Signal(4.0, 0.0, Ramp(0.01, 3.8)).first_at_or_below(3.7, 0.0) is None  # stops above
    assert Signal(0.35).first_at_or_below(0.25, 0.0) is None  # holding
    assert Signal(0.35, 0.0, Approach(0.25, 1.0)).first_at_or_below(0.25, 0.0) is None
    assert Signal(0.35, 0.0, Approach(0.65, 1.0)).first_at_or_below(0.25, 0.0) is None
    below = Signal(0.1, 2.0, Approach(0.65, 1.0))  # already below: at once (not before t0)
    assert below.first_at_or_below(0.25, 0.0) == 2.0
    assert below.first_at_or_below(0.25, 7.0) is None  # risen above it by then, rising
