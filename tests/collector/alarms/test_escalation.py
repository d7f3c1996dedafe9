"""Escalation with a clock the test moves (no sleeps): steps on time, stopped by an
acknowledgement, policies matched in file order, fire alarms escalating after they clear,
steps that were due while the collector was down, what a step carries."""

from __future__ import annotations

import json
import time
from pathlib import Path

from collector.alarms.book import AlarmBook, gateway_signal
from collector.alarms.config import EscalationPolicy, EscalationStep
from collector.alarms.escalation import ESCALATION_KIND, ack_url_base, policy_for
from collector.api.config import HttpConfig
from collector.notify import FIRE, OTHER
from protocols.wire import EventType
from tests.collector.conftest import wait_until

from .helpers import FAULTS, NOW, PUMP, SMOKE, Clock, Sent, book, sig
from .helpers import FIRE as FIRE_POLICY

FA, FAULT = EventType.FIRE_ALARM, EventType.FAULT


def test_step_0_at_once_step_1_when_due_and_not_before(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    b = book(tmp_path, clock, sent)
    b.apply([sig(SMOKE, FA, 1)])
    [a] = b.list()
    assert sent.keys == [f"alarm:{a.id}:step:0"]
    assert b.next_due_ms() == NOW + 60_000
    clock.now = NOW + 59_999
    assert b.fire_due() == NOW + 60_000 and len(sent.notes) == 1
    clock.now = NOW + 60_000
    assert b.fire_due() is None  # the last step: nothing further
    assert sent.keys[1:] == [f"alarm:{a.id}:step:1"]
    assert sent.notes[1].webhooks == ("maintenance", "fire-station")
    a = b.get(a.id)  # type: ignore[assignment]
    assert a.escalation_step == 1 and a.next_step_ms is None
    assert [(e.what, e.detail) for e in b.timeline(a.id)] == [
        ("raised", "policy fire"), ("notified", "step 0: duty"),
        ("notified", "step 1: maintenance, fire-station")]
    clock.now += 3_600_000
    b.fire_due()
    assert len(sent.notes) == 2


def test_what_a_step_carries(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    b = book(tmp_path, clock, sent)
    b.apply([sig(SMOKE, FA, 1)])
    [a] = b.list()
    [n] = sent.notes
    body = json.loads(n.body)
    assert (n.kind, n.lane, n.webhooks, n.order_key) == \
        (ESCALATION_KIND, FIRE, ("duty",), f"gw-1/{SMOKE.id}")
    assert body["alarm_id"] == a.id and body["step"] == 0 and body["policy"] == "fire"
    assert body["ack_url"] == f"https://fire.example.net/api/v1/alarms/{a.id}/ack"
    assert body["url"] == f"https://fire.example.net/#alarm={a.id}"
    assert body["alarm"]["description"] == "三层东走廊感烟探测器"
    assert body["alarm"]["escalation_step"] == 0 and body["key"] == n.key


def test_acknowledging_stops_the_steps(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    b = book(tmp_path, clock, sent)
    b.apply([sig(SMOKE, FA, 1)])
    [a] = b.list()
    clock.now = NOW + 10_000
    b.acknowledge(a.id, by="duty", note=None, origin="cli")
    clock.now = NOW + 120_000
    assert b.fire_due() is None
    assert len(sent.notes) == 1
    assert [e.what for e in b.timeline(a.id)][-2:] == ["acknowledged", "escalation_stopped"]


def test_a_fire_alarm_keeps_escalating_after_it_clears(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    both = EscalationPolicy("all", frozenset({"fire_alarm", "fault"}), until="ack_or_clear",
                            steps=FIRE_POLICY.steps)
    b = book(tmp_path, clock, sent, policies=[both])
    b.apply([sig(SMOKE, FA, 1), sig(PUMP, FAULT, 2)])
    b.apply([sig(SMOKE, FA, 3, active=False), sig(PUMP, FAULT, 4, active=False)])
    clock.now = NOW + 60_000
    b.fire_due()
    fire = next(a for a in b.list(state="all") if a.type == "fire_alarm")
    fault = next(a for a in b.list(state="all") if a.type == "fault")
    assert fire.escalation_step == 1 and fault.escalation_step == 0
    assert [e.what for e in b.timeline(fault.id)][-1] == "escalation_stopped"
    # A fault that comes back while nobody acknowledged it escalates again (step 1 now due).
    clock.now = NOW + 70_000
    b.apply([sig(PUMP, FAULT, 5)])
    assert b.get(fault.id).escalation_step == 1  # type: ignore[union-attr]


def test_until_ack_keeps_escalating_a_cleared_fault(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    policy = EscalationPolicy("f", frozenset({"fault"}), steps=(EscalationStep(5, ("a",)),))
    b = book(tmp_path, clock, sent, policies=[policy])
    b.apply([sig(PUMP, FAULT, 1)])
    b.apply([sig(PUMP, FAULT, 2, active=False)])
    clock.now = NOW + 5_000
    b.fire_due()
    assert [n.webhooks for n in sent.notes] == [("a",)]
    assert sent.notes[0].lane == OTHER


def test_the_first_matching_policy_in_file_order_takes_it(tmp_path: Path) -> None:
    one = EscalationPolicy("one", frozenset({"fault"}), sites=("south-*",),
                           steps=(EscalationStep(0, ("a",)),))
    two = EscalationPolicy("two", frozenset({"fault"}), steps=(EscalationStep(0, ("b",)),))
    three = EscalationPolicy("three", frozenset({"fault"}), steps=(EscalationStep(0, ("c",)),))
    assert policy_for([one, two, three], "fault", "south-3") is one
    assert policy_for([one, two, three], "fault", "north-3") is two
    assert policy_for([one, two, three], "fire_alarm", "north-3") is None
    clock, sent = Clock(), Sent()
    b = book(tmp_path, clock, sent, policies=[one, two, three])
    b.apply([sig(PUMP, FAULT, 1, site="north-3")])
    assert [n.webhooks for n in sent.notes] == [("b",)]
    b.apply([sig(SMOKE, FA, 2, site="north-3")])  # no policy takes fire alarms here
    assert len(sent.notes) == 1
    assert {a.type: a.escalation_policy for a in b.list(site="north-3")} == \
        {"fault": "two", "fire_alarm": None}


def test_steps_due_while_down_all_fire_at_once_each_once(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    b = book(tmp_path, clock, sent, policies=[FAULTS])
    b.apply([gateway_signal("gw-1", "north-1", "gateway_offline", True, "lwt")])
    assert sent.notes == []  # step 0 is after 30 s
    b.close()
    clock.now = NOW + 3_600_000
    b = book(tmp_path, clock, sent, policies=[FAULTS])
    b.fire_due()
    [a] = b.list()
    assert sent.keys == [f"alarm:{a.id}:step:0", f"alarm:{a.id}:step:1"]
    assert a.escalation_step == 1


def test_a_queue_that_fails_loses_no_step(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    b = book(tmp_path, clock, sent)
    b.apply([sig(SMOKE, FA, 1)])
    [a] = b.list()
    clock.now = NOW + 60_000
    sent.fail = True
    try:
        b.fire_due()
        raise AssertionError("the queue's error must reach the caller (the loop logs it)")
    except OSError:
        pass
    assert b.get(a.id).escalation_step == 0  # type: ignore[union-attr]
    sent.fail = False
    b.fire_due()
    assert b.get(a.id).escalation_step == 1  # type: ignore[union-attr]
    assert sent.keys[-1] == f"alarm:{a.id}:step:1"


def test_a_thousand_escalations_due_in_the_same_second(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    b = book(tmp_path, clock, sent)
    b.apply([sig(SMOKE, FA, 1, gateway=f"gw-{i}") for i in range(1000)])
    assert len(sent.notes) == 1000
    clock.now = NOW + 60_500
    b.fire_due()
    assert len(sent.notes) == 2000
    assert {a.escalation_step for a in b.list(limit=5000)} == {1}


def test_the_ack_link_base() -> None:
    assert ack_url_base(None) is None
    assert ack_url_base(HttpConfig("127.0.0.1", 8080)) == "http://127.0.0.1:8080"
    assert ack_url_base(HttpConfig("::1", 8443)) == "http://[::1]:8443"
    assert ack_url_base(HttpConfig("0.0.0.0", 8443, public_url="https://fire.example.net")) \
        == "https://fire.example.net"


def test_a_flapping_contact_does_not_grow_the_timer_heap(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    policy = EscalationPolicy("f", frozenset({"fault"}), steps=(EscalationStep(600, ("a",)),))
    b = book(tmp_path, clock, sent, policies=[policy])
    for seq in range(1, 201, 2):
        b.apply([sig(PUMP, FAULT, seq)])
        b.apply([sig(PUMP, FAULT, seq + 1, active=False)])
    assert b.list(state="all")[0].raise_count == 100
    assert len(b._timers) == 1  # one per change of the due time, not one per apply


def test_a_policy_gone_from_the_config_stops_after_a_restart(tmp_path: Path) -> None:
    clock, sent = Clock(), Sent()
    b = book(tmp_path, clock, sent)
    b.apply([sig(SMOKE, FA, 1)])
    b.close()
    b = book(tmp_path, clock, sent, policies=[FAULTS])
    [a] = b.list()
    assert a.next_step_ms is None and b.next_due_ms() is None
    clock.now = NOW + 3_600_000
    b.fire_due()
    assert len(sent.notes) == 1  # step 0, before the restart


def test_the_loop_fires_on_time_and_outlives_a_failing_queue(tmp_path: Path) -> None:
    """The alarm-escalation thread with the real clock: a step due in 0.3 s is queued once
    due (waited for, never slept on); a queue that fails is retried, logged once."""
    sent = Sent()
    policy = EscalationPolicy("p", frozenset({"fault"}), steps=(EscalationStep(0.3, ("a",)),))
    b = AlarmBook(tmp_path / "alarms.sqlite", [policy], notify=sent).start()
    try:
        sent.fail = True
        b.apply([sig(PUMP, FAULT, 1)])
        [a] = b.list()
        wait_until(lambda: b._loop.errors >= 2, "the loop trying the failing queue again")
        assert b._loop.alive() and sent.notes == []
        sent.fail = False
        wait_until(lambda: len(sent.notes) == 1, "the step once the queue works")
        assert time.time() * 1000 >= a.raised_ms + 300
        assert b.get(a.id).escalation_step == 0  # type: ignore[union-attr]
    finally:
        b.close()
    assert not b._loop.alive()
