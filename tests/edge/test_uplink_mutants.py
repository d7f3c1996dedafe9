"""edge/uplink/forwarder.py at unit level, for the mutation run (issue 19): the no-loss paths of
the outbox -> broker forwarder, each driven directly and fast.

The outbox is a real :class:`edge.outbox.Outbox` on a temporary directory (its confirmation
clock a manual one). The broker is, in most tests, a **stand-in at the session boundary**
(:class:`BrokerStandIn`, in the place of :class:`edge.uplink.session.MqttSession`): it records
every publish and lets the test answer each one - PUBACK 0x00, 0x10 (no subscribers), a
refusal, a lost connection - at the moment the test chooses, and hands the forwarder
``stored`` messages on its inbox. That is what makes windows, class order and late answers
testable without timing. Two tests at the end run the same promises over a real
:class:`MqttSession` and a real Mosquitto (one broker for the module), so the stand-in is held
to what the broker really does.

The promises: a record leaves the outbox only at the collector's ``stored`` confirmation (not
the PUBACK; at the PUBACK with ``delete_on = "puback"``); fire alarms first, alone, past a
full window; what was in flight goes out again in the next session; the window, byte budget
and unconfirmed cap; a refused or unanswered publish loses nothing; what is counted on each
failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config.uplink import DeleteOn, UplinkConfig
from edge.drivers.base import Counters
from edge.outbox import Outbox, StoredRecord
from edge.uplink import forwarder as forwarder_module
from edge.uplink.forwarder import (
    INITIAL_RATE,
    RATE_SAMPLE_MIN_BYTES,
    UNCONFIRMED_MESSAGES,
    Forwarder,
    _Flight,
    _Window,
)
from edge.uplink.session import (
    ConnectionLost,
    Message,
    MqttError,
    MqttSession,
    NoSubscribers,
    PublishRefused,
    SubscribeRefused,
)
from protocols.wire import (
    Batch,
    Channel,
    Priority,
    Stored,
    decode_batch,
    encode_stored,
    topic,
)
from tests.infra.mosquitto import Mosquitto

from .helpers import config as outbox_config
from .helpers import event, measurement
from .test_uplink_infra import until

FIRE, ALARM, EVENT, MEAS = Priority
GW = "gw-mut"
SITE = "site-mut"
NOW = 1_718_000_000_000
RECORDS = topic(GW, Channel.RECORDS)
STORED = topic(GW, Channel.STORED)
WAIT = 10.0  # generous: a loaded 2-core machine; never a timing assertion


# -- the stand-in at the broker boundary ---------------------------------------------------


@dataclass
class Sent:
    """One publish the forwarder made, and the future its PUBACK resolves."""

    topic: str
    payload: bytes
    future: asyncio.Future[None]
    at: float  # loop time

    @property
    def batch(self) -> Batch:
        return decode_batch(self.payload)

    @property
    def seqs(self) -> list[int]:
        return [r.seq for r in self.batch.records]

    @property
    def priorities(self) -> set[Priority]:
        return {r.priority for r in self.batch.records}

    def puback(self) -> None:
        self.future.set_result(None)

    def fail(self, error: BaseException) -> None:
        self.future.set_exception(error)


class BrokerStandIn:
    """Stand-in for :class:`MqttSession` (the broker boundary): the calls the forwarder makes
    (``publish``, ``subscribe``, ``inbox``, ``end``, ``closed``, ``receive_maximum``), with
    every answer in the test's hands. ``autoack``: every publish gets PUBACK 0x00 at once."""

    def __init__(self, *, receive_maximum: int = 65_535, autoack: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.receive_maximum = receive_maximum
        self.autoack = autoack
        self.closed: asyncio.Future[MqttError] = self.loop.create_future()
        self.sent: list[Sent] = []
        self.subscriptions: list[tuple[str, asyncio.Future[None]]] = []
        self.inboxes: dict[str, asyncio.Queue[Message]] = {}
        self.order: list[str] = []  # "inbox <t>", "subscribe <t>", "publish <t>"

    def publish(self, name: str, payload: bytes, *, retain: bool = False
                ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        if self.closed.done():  # as MqttSession: fails at once, nothing sent
            future.set_exception(ConnectionLost(f"not connected: {self.closed.result()}"))
            return future
        self.sent.append(Sent(name, payload, future, self.loop.time()))
        self.order.append(f"publish {name}")
        if self.autoack:
            future.set_result(None)
        return future

    def subscribe(self, name: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        self.subscriptions.append((name, future))
        self.order.append(f"subscribe {name}")
        return future

    def inbox(self, name: str) -> asyncio.Queue[Message]:
        self.order.append(f"inbox {name}")
        return self.inboxes.setdefault(name, asyncio.Queue())

    def end(self, error: MqttError) -> None:
        if not self.closed.done():
            self.closed.set_result(error)

    # -- the test's side --

    def stored(self, *payloads: bytes) -> None:
        """``stored`` messages arriving together (one read of the inbox)."""
        for p in payloads:
            self.inboxes[STORED].put_nowait(Message(STORED, p))

    def of(self, priority: Priority) -> list[Sent]:
        return [s for s in self.sent if priority in s.priorities]


def stored_payload(epoch: int, *ranges: tuple[int, int], gw: str = GW) -> bytes:
    return encode_stored(Stored(gw, epoch, ranges, NOW, "test-collector"))


class ManualClock:
    """The outbox's monotonic clock for confirmation waits; moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Parts:
    outbox: Outbox
    clock: ManualClock
    counters: Counters = field(default_factory=Counters)

    def forwarder(self, *, queue_target_s: float = 1.0, clock_ms: Callable[[], int] = lambda: NOW,
                  **kw: Any) -> Forwarder:
        kw.setdefault("linger_s", 0.0)
        cfg = UplinkConfig("127.0.0.1", 1883, **kw)
        return Forwarder(self.outbox, cfg, gateway_id=GW, site=SITE, counters=self.counters,
                         clock_ms=clock_ms, queue_target_s=queue_target_s)


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    clock = ManualClock()
    async with Outbox(outbox_config(tmp_path), monotonic=clock) as ob:
        yield Parts(ob, clock)


def as_session(broker: BrokerStandIn) -> MqttSession:
    return cast(MqttSession, broker)


@contextlib.asynccontextmanager
async def serving(fwd: Forwarder, broker: BrokerStandIn | MqttSession
                  ) -> AsyncIterator[asyncio.Task[None]]:
    session = broker if isinstance(broker, MqttSession) else as_session(broker)
    task = asyncio.create_task(fwd.serve(session))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def held(outbox: Outbox) -> list[int]:
    """Seqs in the outbox file, read by a second connection."""
    db = sqlite3.connect(f"file:{outbox.config.path}?mode=ro", uri=True)
    try:
        return [s for (s,) in db.execute("SELECT seq FROM outbox ORDER BY seq")]
    finally:
        db.close()


# -- delivered means stored ----------------------------------------------------------------


async def test_a_record_leaves_the_outbox_at_the_stored_confirmation_not_the_puback(
        parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    seen: list[tuple[int, ...]] = []
    fwd.on_confirmed = seen.append
    await ob.append([measurement(i) for i in range(3)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 1, "the first publish")
        # The confirmations' inbox and subscription come before any records go out.
        assert broker.order[:3] == [f"inbox {STORED}", f"subscribe {STORED}",
                                    f"publish {RECORDS}"]
        [(name, _sub)] = broker.subscriptions
        assert name == STORED
        [sent] = broker.sent
        batch = sent.batch
        assert (sent.topic, batch.gateway_id, batch.site, batch.sent_ms, batch.epoch) == (
            RECORDS, GW, SITE, NOW, ob.epoch)
        assert sent.seqs == [1, 2, 3]
        assert ob.sent_unconfirmed == 0 and ob.pending(MEAS) == 0  # in flight

        sent.puback()
        await until(lambda: ob.sent_unconfirmed == 3, "the PUBACK marking them sent")
        assert (fwd.acked_records, fwd.acked_batches, fwd.confirmed_records) == (3, 1, 0)
        assert seen == [(1, 2, 3)]
        assert ob.total_depth == 3 and held(ob) == [1, 2, 3]  # acknowledged, still kept

        broker.stored(stored_payload(ob.epoch, (1, 2)))
        await until(lambda: ob.total_depth == 1, "the confirmed seqs deleted")
        await until(lambda: fwd.confirmed_records == 2, "the count")
        assert held(ob) == [3]
        # Arriving together: another gateway's (refused, counted) and ours.
        broker.stored(stored_payload(ob.epoch, (3, 3), gw="gw-other"),
                      stored_payload(ob.epoch, (3, 3)))
        await until(lambda: ob.total_depth == 0, "the last one deleted")
        await until(lambda: fwd.confirmed_records == 3, "the count")
        assert parts.counters.get("stored_invalid") == 1
        assert held(ob) == []
        assert len(broker.sent) == 1
    assert parts.counters.snapshot() == {"stored_invalid": 1}


async def test_confirmations_arriving_together_are_all_applied_and_counted(
        parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(batch_max_records=2)
    await ob.append([measurement(i) for i in range(6)])
    broker = BrokerStandIn(autoack=True)
    async with serving(fwd, broker):
        await until(lambda: ob.sent_unconfirmed == 6, "every PUBACK")
        assert fwd.acked_batches == 3 and fwd.acked_records == 6
        broker.stored(stored_payload(ob.epoch, (1, 2)), stored_payload(ob.epoch, (3, 3)),
                      stored_payload(ob.epoch, (5, 6)))
        await until(lambda: fwd.confirmed_records == 5, "five confirmed")
        assert held(ob) == [4]
        assert ob.total_depth == 1


@pytest.mark.parametrize("payload", [
    b"\xff not json",
    b'{"v":1,"gw":"gw-mut","seqs":[[1,4]]}',  # no ts
    stored_payload(7, (1, 4), gw="gw-other"),  # another gateway's, on our topic
])
async def test_a_bad_confirmation_is_counted_logged_and_deletes_nothing(
        parts: Parts, payload: bytes, caplog: pytest.LogCaptureFixture) -> None:
    fwd = parts.forwarder()
    with caplog.at_level(logging.WARNING, logger="edge.uplink"):
        assert fwd._decode(payload) is None
    assert parts.counters.snapshot() == {"stored_invalid": 1}
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("uplink: confirmation refused: ")
    if b"gw-other" in payload:
        assert line == ("uplink: confirmation refused: gateway_mismatch at gw: 'gw-other' on "
                        "the topic of 'gw-mut'")
    good = fwd._decode(stored_payload(7, (1, 4)))
    assert good == Stored(GW, 7, ((1, 4),), NOW, "test-collector")
    assert parts.counters.get("stored_invalid") == 1


async def test_with_delete_on_puback_the_puback_deletes_and_nothing_subscribes(
        parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(delete_on=DeleteOn.PUBACK, batch_max_records=2)
    await ob.append([measurement(i) for i in range(4)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 2, "two messages")
        assert broker.subscriptions == [] and broker.inboxes == {}
        assert ob.total_depth == 4
        broker.sent[0].puback()
        await until(lambda: ob.total_depth == 2, "the delete at the first PUBACK")
        await until(lambda: fwd.acked_records == 2, "the acks counted")
        assert held(ob) == [3, 4] and fwd.acked_batches == 1
        broker.sent[1].puback()
        await until(lambda: ob.total_depth == 0, "the delete at the second PUBACK")
        await until(lambda: fwd.acked_records == 4, "the acks counted")
        assert fwd.acked_batches == 2 and fwd.confirmed_records == 0
        assert ob.sent_unconfirmed == 0 and held(ob) == []


async def test_with_delete_on_puback_what_the_broker_acked_is_deleted_as_the_session_ends(
        parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(delete_on=DeleteOn.PUBACK)
    await ob.append([measurement(i) for i in range(3)])
    broker = BrokerStandIn()
    task = asyncio.create_task(fwd.serve(as_session(broker)))
    await until(lambda: len(broker.sent) == 1, "the publish")
    broker.sent[0].puback()
    task.cancel()  # the session ends in the same moment
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert ob.total_depth == 0 and held(ob) == []  # not sent again after the reconnect
    assert fwd.acked_records == 3


async def test_a_failed_ack_is_counted_and_the_records_are_not_counted_acked(
        parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(delete_on=DeleteOn.PUBACK)
    await ob.append([measurement(i) for i in range(2)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 1, "the publish")
        await ob.close()  # the outbox goes away: the delete cannot happen
        with caplog.at_level(logging.ERROR, logger="edge.uplink"):
            broker.sent[0].puback()
            await until(lambda: parts.counters.get("ack_failed") == 1, "the failure counted")
        assert fwd.acked_records == 0 and fwd.acked_batches == 0
    assert parts.counters.snapshot() == {"ack_failed": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "uplink: outbox ack of 2 records failed: the outbox is closed"]


async def test_a_failed_confirm_delete_is_counted(parts: Parts,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: STORED in broker.inboxes, "the inbox")
        epoch = ob.epoch
        await ob.close()
        with caplog.at_level(logging.ERROR, logger="edge.uplink"):
            broker.stored(stored_payload(epoch, (1, 2)))
            await until(lambda: parts.counters.get("confirm_failed") == 1, "the failure counted")
        assert fwd.confirmed_records == 0
        broker.stored(stored_payload(epoch, (3, 3)))  # the channel goes on
        await until(lambda: parts.counters.get("confirm_failed") == 2, "the second one")
    assert [r.getMessage() for r in caplog.records] == [
        "uplink: outbox delete of confirmed records failed: the outbox is closed"] * 2


async def test_unconfirmed_records_go_out_again_after_the_confirm_timeout(
        parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(confirm_timeout_s=2.0)
    await ob.append([measurement(i) for i in range(3)])
    broker = BrokerStandIn(autoack=True)
    with caplog.at_level(logging.WARNING, logger="edge.uplink"):
        async with serving(fwd, broker):
            await until(lambda: ob.sent_unconfirmed == 3, "the PUBACK")
            parts.clock.now += 2.0  # the outbox's clock: the confirmation is late now
            await until(lambda: len(broker.sent) == 2, "the records sent again")
            assert broker.sent[1].seqs == [1, 2, 3]
            assert parts.counters.get("unconfirmed_resent") == 3
            await until(lambda: ob.sent_unconfirmed == 3, "the second PUBACK")
            assert ob.total_depth == 3
    assert "uplink: 3 records not confirmed stored within 2 s go out again" in [
        r.getMessage() for r in caplog.records]


# -- fire alarms first ------------------------------------------------------------------------


async def test_fire_alarms_go_first_alone_and_past_a_full_window(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(max_inflight=1, batch_max_records=10)
    await ob.append([measurement(1), event(ALARM, 2), event(FIRE, 3), measurement(4),
                     event(FIRE, 5)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 2, "two messages")
        assert broker.sent[0].seqs == [3, 5]  # the fire alarms, alone (outside the window)
        assert broker.sent[1].seqs == [2, 1, 4]  # alarm, then readings: the window (1) is full
        broker.sent[0].puback()
        await until(lambda: ob.sent_unconfirmed == 2, "the fire alarms' PUBACK")
        # A new fire alarm does not wait for the full window...
        [fire] = await ob.append([event(FIRE, 6)])
        await until(lambda: len(broker.sent) == 3, "the fire alarm past the full window")
        assert broker.sent[2].seqs == [fire.seq]
        # ... and the next one goes after its PUBACK: taken once the window has room, it
        # is held back until then.
        [fire2] = await ob.append([event(FIRE, 7)])
        broker.sent[1].puback()
        await until(lambda: ob.pending(FIRE) == 0, "the second fire alarm taken")
        assert len(broker.sent) == 3
        broker.sent[2].puback()
        await until(lambda: len(broker.sent) == 4, "the second fire alarm")
        assert broker.sent[3].seqs == [fire2.seq]


async def test_a_fire_only_message_does_not_count_in_the_window(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(max_inflight=1, batch_max_records=1)
    await ob.append([event(FIRE, 1)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 1, "the fire alarm")
        await ob.append([measurement(2)])  # the window (1) is free: the fire alarm is apart
        await until(lambda: len(broker.sent) == 2, "the reading beside it")
        assert broker.sent[1].seqs == [2]
        broker.sent[0].puback()
        broker.sent[1].puback()
        await until(lambda: ob.sent_unconfirmed == 2, "both sent")
        await ob.append([measurement(3)])  # both done: the window is free again
        await until(lambda: len(broker.sent) == 3, "the next reading")


# -- order within a class, the window, the budgets ------------------------------------------


@pytest.mark.parametrize("priority", [ALARM, EVENT, FIRE])
async def test_an_event_class_has_one_message_awaiting_its_puback(
        parts: Parts, priority: Priority) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(batch_max_records=1)
    await ob.append([event(priority, i) for i in range(2)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: ob.pending(priority) == 0, "both taken")
        # The second was taken (it is in flight) and waits for the first one's PUBACK.
        assert [s.seqs for s in broker.sent] == [[1]]
        broker.sent[0].puback()
        await until(lambda: len(broker.sent) == 2, "the second after the PUBACK")
        assert broker.sent[1].seqs == [2]
        # A failed first one releases the class too (and goes out again after).
        await ob.append([event(priority, 3)])
        await until(lambda: ob.pending(priority) == 0, "the third taken")
        assert len(broker.sent) == 2
        broker.sent[1].fail(ConnectionLost("gone"))
        await until(lambda: len(broker.sent) == 3, "the next after the failure")


async def test_readings_pipeline_and_a_mixed_message_orders_its_classes(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(batch_max_records=2)
    await ob.append([measurement(i) for i in range(6)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 3, "three reading messages, unacknowledged")
        await ob.append([event(EVENT, 1), measurement(7)])  # one message: event + reading
        await until(lambda: len(broker.sent) == 4, "the mixed message")
        assert broker.sent[3].seqs == [7, 8]
        await ob.append([event(EVENT, 2)])
        await until(lambda: ob.pending(EVENT) == 0, "the next event taken")
        assert len(broker.sent) == 4  # waits for the mixed message (it carries an event)
        broker.sent[3].puback()
        await until(lambda: len(broker.sent) == 5, "the event after the PUBACK")


@pytest.mark.parametrize(("max_inflight", "receive_maximum", "limit"),
                         [(16, 6, 2), (2, 65_535, 2), (16, 4, 1), (3, 8, 3)])
async def test_the_window_is_the_smaller_of_max_inflight_and_the_brokers_receive_maximum(
        parts: Parts, max_inflight: int, receive_maximum: int, limit: int) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(max_inflight=max_inflight, batch_max_records=1)
    await ob.append([measurement(i) for i in range(6)])
    broker = BrokerStandIn(receive_maximum=receive_maximum)
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) >= limit, f"{limit} messages")
        # A fire alarm marks a later look at the window: nothing more was taken meanwhile.
        await ob.append([event(FIRE)])
        await until(lambda: len(broker.of(FIRE)) == 1, "the fire alarm")
        assert len(broker.of(MEAS)) == limit and ob.pending(MEAS) == 6 - limit
        broker.sent[0].puback()
        await until(lambda: len(broker.of(MEAS)) == limit + 1, "one more after a PUBACK")


async def test_with_a_tiny_byte_budget_one_message_at_a_time(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(batch_max_records=1, queue_target_s=1e-9)
    await ob.append([measurement(i) for i in range(3)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 1, "the first")
        await ob.append([event(FIRE)])
        await until(lambda: len(broker.of(FIRE)) == 1, "a later look at the window")
        assert len(broker.of(MEAS)) == 1
        broker.sent[0].puback()
        await until(lambda: len(broker.of(MEAS)) == 2, "the second after the PUBACK")
        broker.of(MEAS)[1].fail(ConnectionLost("gone"))  # a failure frees the budget too
        await until(lambda: len(broker.of(MEAS)) == 3, "the next after the failure")


@pytest.mark.parametrize("delete_on", [DeleteOn.STORED, DeleteOn.PUBACK])
async def test_unconfirmed_records_are_capped_fire_alarms_excepted(
        parts: Parts, delete_on: DeleteOn) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(batch_max_records=1, delete_on=delete_on)
    cap = UNCONFIRMED_MESSAGES * 1
    await ob.append([measurement(i) for i in range(cap + 3)])
    broker = BrokerStandIn(autoack=True)
    async with serving(fwd, broker):
        if delete_on is DeleteOn.PUBACK:  # nothing waits for a confirmation: no cap
            await until(lambda: ob.total_depth == 0, "everything")
            return
        await until(lambda: ob.sent_unconfirmed == cap, "the cap")
        await ob.append([event(FIRE)])
        await until(lambda: len(broker.of(FIRE)) == 1, "the fire alarm despite the cap")
        await until(lambda: ob.sent_unconfirmed == cap + 1, "its PUBACK")
        assert len(broker.of(MEAS)) == cap
        broker.stored(stored_payload(ob.epoch, (1, 2)))  # two confirmed: room for one
        await until(lambda: len(broker.of(MEAS)) == cap + 1, "one more")
        await ob.append([event(FIRE)])
        await until(lambda: len(broker.of(FIRE)) == 2, "a later look")
        assert len(broker.of(MEAS)) == cap + 1


# -- failures: nothing lost, the right things counted ---------------------------------------


async def test_no_subscribers_puts_the_records_back_and_pauses_with_back_off(
        parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(batch_max_records=2, reconnect_min_s=0.2, reconnect_max_s=1.0)
    loop = asyncio.get_running_loop()
    await ob.append([measurement(i) for i in range(4)])
    broker = BrokerStandIn()
    with caplog.at_level(logging.WARNING, logger="edge.uplink"):
        async with serving(fwd, broker):
            await until(lambda: len(broker.sent) == 2, "two messages")
            t0 = loop.time()
            for s in broker.sent:  # both come back 0x10: one back-off step
                s.fail(NoSubscribers(RECORDS))
            await until(lambda: parts.counters.get("no_subscribers") == 2, "both counted")
            t1 = loop.time()
            assert fwd._quiet.attempts == 1
            assert t0 + 0.2 <= fwd._quiet_until <= t1 + 0.2
            assert ob.pending(MEAS) == 4 and ob.sent_unconfirmed == 0 and fwd.acked_records == 0
            [fire] = await ob.append([event(FIRE)])  # nobody to send to: fire alarms neither
            await until(lambda: len(broker.sent) == 5, "the next try")
            assert all(s.at >= t0 + 0.2 for s in broker.sent[2:])  # not before the pause ended
            assert broker.sent[2].seqs == [fire.seq]  # the fire alarm first
            assert sorted(broker.sent[3].seqs + broker.sent[4].seqs) == [1, 2, 3, 4]  # the same
            broker.sent[2].puback()
            await until(lambda: ob.sent_unconfirmed == 1, "the PUBACK")
            assert fwd._quiet.attempts == 0  # a delivery resets the back-off
    assert parts.counters.snapshot() == {"no_subscribers": 2}
    assert [r.getMessage() for r in caplog.records] == [
        f"uplink: no subscriber for {RECORDS} (no collector session); the records stay in the "
        "outbox, next try in 0.2 s"]


async def test_the_pause_is_one_step_per_pause_and_capped(parts: Parts) -> None:
    fwd = parts.forwarder(reconnect_min_s=0.5, reconnect_max_s=100.0)
    assert (fwd._quiet.min_s, fwd._quiet.max_s, fwd._quiet.jitter) == (0.5, 10.0, 0.5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    fwd._pause()
    first = fwd._quiet_until
    assert t0 + 0.5 <= first <= loop.time() + 0.5
    fwd._pause()  # still paused: no second step
    assert fwd._quiet_until == first and fwd._quiet.attempts == 1
    fwd._quiet_until = loop.time() - 1  # the pause is over: the next one is longer
    fwd._pause()
    assert fwd._quiet.attempts == 2 and fwd._quiet_until >= loop.time() + 0.5
    assert parts.forwarder(reconnect_min_s=0.5, reconnect_max_s=5.0)._quiet.max_s == 5.0
    assert parts.forwarder(reconnect_min_s=20.0, reconnect_max_s=60.0)._quiet.max_s == 20.0


async def test_a_refused_publish_ends_the_session_and_keeps_the_records(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    await ob.append([measurement(i) for i in range(2)])
    broker = BrokerStandIn()
    async with serving(fwd, broker) as task:
        await until(lambda: len(broker.sent) == 1, "the publish")
        refused = PublishRefused(RECORDS, 0x87, "Not authorized")
        broker.sent[0].fail(refused)
        await asyncio.wait_for(task, WAIT)  # the forwarder stops with the session
        assert broker.closed.result() is refused and len(broker.sent) == 1
        assert ob.total_depth == 2 and ob.sent_unconfirmed == 0  # kept, not marked sent
        assert parts.counters.snapshot() == {}
    again = BrokerStandIn()  # the reconnect
    async with serving(fwd, again):
        await until(lambda: len(again.sent) == 1, "sent again")
        assert again.sent[0].seqs == [1, 2]


async def test_a_lost_publish_puts_the_records_back_and_the_session_goes_on(
        parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    await ob.append([measurement(i) for i in range(2)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 1, "the publish")
        broker.sent[0].fail(ConnectionLost("gone"))
        await until(lambda: len(broker.sent) == 2, "sent again, same seqs")
        assert broker.sent[1].seqs == [1, 2]
        assert not broker.closed.done() and parts.counters.snapshot() == {}
        assert fwd._quiet.attempts == 0


async def test_what_was_in_flight_goes_out_again_in_the_next_session(
        parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    await ob.append([measurement(i) for i in range(3)])
    first = BrokerStandIn()
    async with serving(fwd, first):
        await until(lambda: len(first.sent) == 1, "the publish")
    # The session is over; a late answer changes nothing (the next session releases them).
    first.sent[0].puback()
    await asyncio.sleep(0)
    assert ob.sent_unconfirmed == 0 and fwd.acked_records == 0
    assert ob.pending(MEAS) == 0  # still in flight until the next session
    second = BrokerStandIn()
    with caplog.at_level(logging.INFO, logger="edge.uplink"):
        async with serving(fwd, second):
            await until(lambda: len(second.sent) == 1, "sent again")
            assert second.sent[0].seqs == [1, 2, 3]
    assert "uplink: 3 records in flight in the last session go out again" in [
        r.getMessage() for r in caplog.records]


async def test_a_late_failure_of_an_ended_session_changes_nothing(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    await ob.append([measurement(i) for i in range(2)])
    first = BrokerStandIn()
    async with serving(fwd, first):
        await until(lambda: len(first.sent) == 1, "the publish")
    first.sent[0].fail(NoSubscribers(RECORDS))
    await asyncio.sleep(0)
    assert parts.counters.snapshot() == {} and fwd._quiet.attempts == 0
    assert ob.pending(MEAS) == 0  # not released by the old session's window


async def test_sent_records_are_not_sent_again_at_reconnect_but_wait_for_confirmation(
        parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    await ob.append([measurement(i) for i in range(2)])
    first = BrokerStandIn(autoack=True)
    async with serving(fwd, first):
        await until(lambda: ob.sent_unconfirmed == 2, "the PUBACK")
    second = BrokerStandIn()
    with caplog.at_level(logging.INFO, logger="edge.uplink"):
        async with serving(fwd, second):
            await until(lambda: STORED in second.inboxes, "the new subscription")
            second.stored(stored_payload(ob.epoch, (1, 2)))  # confirmed in the new session
            await until(lambda: ob.total_depth == 0, "deleted")
    assert second.sent == []
    assert not any("go out again" in r.getMessage() for r in caplog.records)


async def test_an_unsendable_batch_is_counted_and_stays_in_flight(
        parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(clock_ms=lambda: -1)  # a clock the wire refuses
    await ob.append([measurement(i) for i in range(3)])
    broker = BrokerStandIn()
    with caplog.at_level(logging.ERROR, logger="edge.uplink"):
        async with serving(fwd, broker):
            await until(lambda: parts.counters.get("unsendable") == 3, "counted")
            assert broker.sent == [] and ob.pending(MEAS) == 0  # not retried in a loop
            assert ob.total_depth == 3
    assert [r.getMessage() for r in caplog.records] == [
        "uplink: cannot encode seqs 1..3: bad_value at ts: -1 is outside 0..9007199254740991"]


async def test_an_outbox_read_error_is_counted_and_retried(
        parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    await ob.append([measurement(i) for i in range(2)])
    other = sqlite3.connect(ob.config.path)
    try:
        other.execute("ALTER TABLE outbox RENAME TO outbox_away")  # the next read fails
        other.commit()
        broker = BrokerStandIn()
        with caplog.at_level(logging.ERROR, logger="edge.uplink"):
            async with serving(fwd, broker) as task:
                await until(lambda: parts.counters.get("outbox_error") == 1, "the failure")
                other.execute("ALTER TABLE outbox_away RENAME TO outbox")  # the disk recovers
                other.commit()
                await until(lambda: len(broker.sent) == 1, "sent after the retry")
                assert broker.sent[0].seqs == [1, 2] and not task.done()
        assert parts.counters.get("outbox_error") == 1
        assert caplog.records[0].getMessage() == \
            "uplink: outbox read failed: other: SQLITE_ERROR: no such table: outbox"
    finally:
        other.close()


async def test_a_refused_stored_subscription_is_counted_and_records_still_flow(
        parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(confirm_timeout_s=7.0)
    broker = BrokerStandIn()
    with caplog.at_level(logging.ERROR, logger="edge.uplink"):
        async with serving(fwd, broker) as task:
            await until(lambda: len(broker.subscriptions) == 1, "the subscription")
            broker.subscriptions[0][1].set_exception(SubscribeRefused(STORED, 0x87, "no"))
            await until(lambda: parts.counters.get("subscribe_refused") == 1, "counted")
            await ob.append([measurement(1)])
            await until(lambda: len(broker.sent) == 1, "records still go out")
            broker.sent[0].puback()
            await until(lambda: ob.sent_unconfirmed == 1, "sent, kept")
            assert not task.done()
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("uplink: broker refused the subscription to ")
    assert line.endswith("; records are kept and sent again every 7 s until a confirmation "
                         "can arrive")


async def test_a_helper_that_fails_ends_the_session_with_its_error(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    broker = BrokerStandIn()
    task = asyncio.create_task(fwd.serve(as_session(broker)))
    try:
        await until(lambda: len(broker.subscriptions) == 1, "the subscription")
        lost = ConnectionLost("gone while subscribing")
        broker.subscriptions[0][1].set_exception(lost)
        await ob.append([measurement(1)])  # the pump goes round and sees it
        with pytest.raises(ConnectionLost) as info:
            await asyncio.wait_for(task, WAIT)
        assert info.value is lost
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
            await task


async def test_the_pump_stops_taking_once_the_session_is_closed(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    broker = BrokerStandIn()
    broker.end(ConnectionLost("gone"))
    await ob.append([measurement(1)])
    await asyncio.wait_for(fwd.serve(as_session(broker)), WAIT)  # returns, takes nothing
    assert broker.sent == [] and ob.pending(MEAS) == 1


async def test_on_confirmed_errors_are_logged_and_change_nothing(
        parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()

    def broken(_seqs: tuple[int, ...]) -> None:
        raise RuntimeError("boom")

    fwd.on_confirmed = broken
    await ob.append([measurement(1)])
    broker = BrokerStandIn(autoack=True)
    with caplog.at_level(logging.ERROR, logger="edge.uplink"):
        async with serving(fwd, broker) as task:
            await until(lambda: ob.sent_unconfirmed == 1, "marked sent")
            await ob.append([measurement(2)])
            await until(lambda: ob.sent_unconfirmed == 2, "the next one too")
            assert not task.done()
    assert [r.getMessage() for r in caplog.records] == ["uplink: on_confirmed failed"] * 2


# -- drain, linger --------------------------------------------------------------------------


async def test_drain_waits_for_the_outbox_to_empty_and_returns_what_is_left(
        parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(delete_on=DeleteOn.PUBACK, linger_s=5.0)
    await ob.append([measurement(i) for i in range(2)])
    assert await fwd.drain(0.0) == 2  # nobody sends: left as it was
    assert fwd._linger_s == 0.0  # a clean stop does not linger
    broker = BrokerStandIn(autoack=True)
    async with serving(fwd, broker):
        assert await fwd.drain(WAIT) == 0
    assert ob.total_depth == 0


async def test_drain_counts_records_not_yet_committed(tmp_path: Path) -> None:
    async with Outbox(outbox_config(tmp_path, submit_window_s=5.0)) as ob:
        fwd = Forwarder(ob, UplinkConfig("127.0.0.1", 1883), gateway_id=GW)
        await ob.append([measurement(1)])
        future = await ob.submit([measurement(2), measurement(3)])
        assert ob.queued_records == 2
        assert await fwd.drain(0.0) == 3
    assert [r.seq for r in future.result()] == [2, 3]  # committed by the close


async def test_few_readings_is_only_readings_fewer_than_a_message(parts: Parts) -> None:
    ob = parts.outbox
    await ob.append([measurement(i) for i in range(3)])
    assert parts.forwarder(batch_max_records=4)._few_readings() is True
    assert parts.forwarder(batch_max_records=3)._few_readings() is False  # a full message
    [ev] = await ob.append([event(EVENT)])
    assert parts.forwarder(batch_max_records=4)._few_readings() is False
    await ob.confirm(ob.epoch, [(ev.seq, ev.seq)])
    assert parts.forwarder(batch_max_records=4)._few_readings() is True
    # Readings in flight do not count as pending ones.
    taken = await ob.next_batch(2)
    assert len(taken) == 2
    assert parts.forwarder(batch_max_records=2)._few_readings() is True


async def test_few_readings_of_an_empty_outbox_is_no_division_by_zero(parts: Parts) -> None:
    """Readings confirmed or expired during a linger leave no readings stored at all."""
    assert parts.forwarder()._few_readings() is True


async def test_few_readings_counts_their_bytes(parts: Parts) -> None:
    ob = parts.outbox
    await ob.append([measurement(i) for i in range(2000)])
    each = ob.payload_bytes(MEAS) / 2000  # the forwarder's estimate: the mean size
    fits = math.ceil((128 * 1024 - 256) / each)  # fewest readings that fill a message
    assert 100 < fits < 2000
    assert parts.forwarder(batch_max_records=5000)._few_readings() is False
    taken = await ob.next_batch(2000 - fits + 1)  # pending: fits - 1 readings
    assert len(taken) == 2000 - fits + 1
    assert parts.forwarder(batch_max_records=5000)._few_readings() is True
    ob.nack([taken[0].seq])  # pending: fits
    assert parts.forwarder(batch_max_records=5000)._few_readings() is False


async def test_linger_waits_for_more_readings_until_an_event_ends_it(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(linger_s=30.0)
    await ob.append([measurement(1)])
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task = asyncio.create_task(fwd._linger())
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()  # 30 s to go
        since = fwd._linger_since
        assert since is not None and t0 <= since <= loop.time()
        await ob.append([measurement(2)])  # another reading: still few, still waiting
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done() and fwd._linger_since == since
        await ob.append([event(EVENT)])
        await asyncio.wait_for(task, WAIT)  # ends at once
        assert fwd._linger_since == since  # kept until readings go out
    finally:
        task.cancel()


async def test_linger_ends_at_its_deadline_from_the_first_wait(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(linger_s=30.0)
    await ob.append([measurement(1)])
    loop = asyncio.get_running_loop()
    fwd._linger_since = loop.time() - 29.99  # began 29.99 s ago: ends within 10 ms
    await asyncio.wait_for(fwd._linger(), WAIT)
    fwd._linger_since = loop.time() - 31.0
    await asyncio.wait_for(fwd._linger(), WAIT)


async def test_a_lingering_reading_keeps_its_start_when_a_fire_alarm_passes(
        parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(linger_s=30.0)
    await ob.append([measurement(1)])
    broker = BrokerStandIn(autoack=True)
    async with serving(fwd, broker):
        await until(lambda: fwd._linger_since is not None, "the linger")
        since = fwd._linger_since
        await ob.append([event(FIRE)])
        await until(lambda: len(broker.sent) == 1, "the fire alarm, at once")
        assert broker.sent[0].seqs == [2]
        await until(lambda: ob.sent_unconfirmed == 1, "its PUBACK")
        assert fwd._linger_since == since and ob.pending(MEAS) == 1
        await ob.append([event(ALARM)])  # an alarm ends the linger; the reading goes along
        await until(lambda: len(broker.sent) == 2, "alarm and reading")
        assert broker.sent[1].seqs == [3, 1]
        assert fwd._linger_since is None


# -- the decision parts, directly ------------------------------------------------------------


def stored_record(seq: int, priority: Priority) -> StoredRecord:
    return StoredRecord(seq, priority, NOW, b"{}")


def test_a_flight_knows_its_seqs_classes_and_whether_it_is_a_fire_alarm() -> None:
    f = _Flight.of([stored_record(5, ALARM), stored_record(6, MEAS), stored_record(7, MEAS)])
    assert f.seqs == (5, 6, 7)
    assert f.per_class == Counter({MEAS: 2, ALARM: 1})
    assert f.fire is False and f.ordered == frozenset({ALARM})
    assert (f.nbytes, f.sent_at) == (0, 0.0)
    fire = _Flight.of([stored_record(1, FIRE)])
    assert fire.fire is True and fire.ordered == frozenset({FIRE})
    assert _Flight.of([stored_record(1, MEAS)]).ordered == frozenset()
    assert _Flight.of([stored_record(1, EVENT), stored_record(2, MEAS)]).ordered == \
        frozenset({EVENT})


async def test_the_window_counts_non_fire_messages_and_held_records() -> None:
    w = _Window(3)
    assert (w.limit, w.flights, w.bytes_out, w.last_ack_at, w.closed) == (3, 0, 0, 0.0, False)
    assert w.busy == Counter() and w.held == Counter() and w.to_ack == []
    a = _Flight.of([stored_record(1, MEAS), stored_record(2, ALARM)])
    fire = _Flight.of([stored_record(3, FIRE)])
    b = _Flight.of([stored_record(4, MEAS)])
    w.take(a)
    w.take(fire)
    w.take(b)
    assert w.flights == 2 and w.held == Counter({MEAS: 2, ALARM: 1, FIRE: 1})
    assert not w.changed.is_set()
    w.finish(fire)
    assert w.flights == 2 and w.changed.is_set()
    w.finish(b)
    assert w.flights == 1 and w.held == Counter({MEAS: 1, ALARM: 1, FIRE: 0})
    w.finish(a)
    assert w.flights == 0 and sum(w.held.values()) == 0
    await asyncio.wait_for(w.wait_changed(0.0), WAIT)  # clears, then returns at its timeout
    assert not w.changed.is_set()
    waiter = asyncio.create_task(w.wait_changed(None))
    await asyncio.sleep(0)
    assert not waiter.done()
    w.changed.set()
    await asyncio.wait_for(waiter, WAIT)


async def test_may_take_within_the_window_the_budget_and_the_cap(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(batch_max_records=2)  # cap: 128 unconfirmed records
    w = _Window(2)
    assert fwd._may_take(w) is True
    w.flights = 1
    assert fwd._may_take(w) is True
    w.flights = 2
    assert fwd._may_take(w) is False  # full, and no fire alarm waiting
    w.flights = 0
    budget = INITIAL_RATE * 1.0
    assert fwd._byte_budget() == budget
    w.bytes_out = int(budget) - 1
    assert fwd._may_take(w) is True
    w.bytes_out = int(budget)
    assert fwd._may_take(w) is False
    fwd.throughput = 1000.0
    assert fwd._byte_budget() == 1000.0
    w.bytes_out = 999
    assert fwd._may_take(w) is True
    w.bytes_out = 1000
    assert fwd._may_take(w) is False
    fwd.throughput = 0.0  # a budget of nothing still lets one message out
    w.bytes_out = 0
    assert fwd._may_take(w) is True
    fwd.throughput = None

    await ob.append([measurement(i) for i in range(128)])
    batch = await ob.next_batch(127)
    assert ob.mark_sent([r.seq for r in batch]) == 127
    assert fwd._may_take(w) is True  # 127 unconfirmed
    w.held[MEAS] = 1
    assert fwd._may_take(w) is False  # 127 + 1 held = the cap
    puback = parts.forwarder(batch_max_records=2, delete_on=DeleteOn.PUBACK)
    assert puback._may_take(w) is True  # no cap without confirmations
    w.held[MEAS] = 0
    w.held[ALARM] = 1
    assert fwd._may_take(w) is False  # held of any class counts
    w.held[ALARM] = 0

    w.flights = 2  # full: only a fire alarm, and only one at a time
    assert fwd._may_take(w) is False
    await ob.append([event(FIRE)])
    assert fwd._may_take(w) is True
    w.busy[FIRE] = 1
    assert fwd._may_take(w) is False
    w.busy[FIRE] = 0
    fwd._quiet_until = asyncio.get_running_loop().time() + 60
    assert fwd._may_take(w) is False  # paused after 0x10: fire alarms neither
    w.flights = 0
    assert fwd._may_take(w) is False


async def test_the_byte_budget_scales_with_the_queue_target(parts: Parts) -> None:
    fwd = parts.forwarder(queue_target_s=0.5)
    assert fwd._byte_budget() == INITIAL_RATE * 0.5
    fwd.throughput = 4000.0
    assert fwd._byte_budget() == 2000.0


async def test_throughput_is_measured_on_large_messages_only(parts: Parts) -> None:
    fwd = parts.forwarder()
    w = _Window(4)
    future = time.monotonic() + 1000  # busy time below the floor: exactly 1e-4 s
    big = _Flight((1,), Counter({MEAS: 1}), False, frozenset(), RATE_SAMPLE_MIN_BYTES, future)
    t0 = time.monotonic()
    fwd._measure(w, big)
    assert fwd.throughput == RATE_SAMPLE_MIN_BYTES / 1e-4
    assert t0 <= w.last_ack_at <= time.monotonic()
    fwd._measure(w, _Flight((2,), Counter({MEAS: 1}), False, frozenset(), 32768, future))
    assert fwd.throughput == pytest.approx(0.8 * RATE_SAMPLE_MIN_BYTES / 1e-4 + 0.2 * 32768 / 1e-4)
    before = fwd.throughput
    small = _Flight((3,), Counter({MEAS: 1}), False, frozenset(), RATE_SAMPLE_MIN_BYTES - 1,
                    future)
    fwd._measure(w, small)
    fire = _Flight((4,), Counter({FIRE: 1}), True, frozenset({FIRE}), 10**6, future)
    w.last_ack_at = 0.0
    fwd._measure(w, fire)
    assert fwd.throughput == before  # neither is a sample
    assert w.last_ack_at > 0.0  # but both are acks


async def test_the_busy_time_runs_from_the_later_of_send_and_previous_ack(parts: Parts) -> None:
    fwd = parts.forwarder()
    w = _Window(4)
    n = 100_000
    t0 = time.monotonic()
    sent = _Flight((1,), Counter({MEAS: 1}), False, frozenset(), n, t0 - 10.0)
    w.last_ack_at = t0 - 100.0  # an idle link: the time since it was sent
    fwd._measure(w, sent)
    t1 = time.monotonic()
    assert fwd.throughput is not None
    assert n / (t1 - t0 + 10.0) <= fwd.throughput <= n / 10.0
    fwd.throughput = None
    w.last_ack_at = t1 - 5.0  # it waited behind the previous message: since its PUBACK
    fwd._measure(w, sent)
    t2 = time.monotonic()
    assert n / (t2 - t1 + 5.0) <= measured(fwd) <= n / 5.0


def measured(fwd: Forwarder) -> float:
    assert fwd.throughput is not None
    return fwd.throughput


# -- over a real broker -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One real Mosquitto for this module's real-session tests."""
    with Mosquitto(tmp_path_factory.mktemp("uplink-mutants") / "broker") as b:
        yield b


class Listener:
    """A paho subscriber to the records topic (so that the broker answers PUBACK 0x00), which
    can also publish ``stored`` as a collector does."""

    def __init__(self, port: int) -> None:
        self.seqs: list[int] = []
        self._lock = threading.Lock()
        got = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="mut-listener",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: got.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(RECORDS, qos=1)
        self.client.loop_start()
        assert got.wait(WAIT)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.seqs += [r.seq for r in decode_batch(bytes(msg.payload)).records]

    def got(self) -> list[int]:
        with self._lock:
            return list(self.seqs)

    def confirm(self, payload: bytes) -> None:
        self.client.publish(STORED, payload, qos=1).wait_for_publish(WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.asynccontextmanager
async def real_session(port: int) -> AsyncIterator[MqttSession]:
    session = MqttSession(UplinkConfig("127.0.0.1", port, connect_timeout_s=5.0), "gw-mut")
    await session.connect()
    try:
        yield session
    finally:
        await session.disconnect()


async def test_over_a_real_broker_the_puback_marks_sent_and_stored_deletes(
        parts: Parts, broker: Mosquitto) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    listener = Listener(broker.port)
    try:
        await ob.append([measurement(i) for i in range(3)])
        async with real_session(broker.port) as session, serving(fwd, session):
            await until(lambda: ob.sent_unconfirmed == 3, "the PUBACK")
            await until(lambda: listener.got() == [1, 2, 3], "the records at the listener")
            assert ob.total_depth == 3 and fwd.acked_records == 3
            listener.confirm(stored_payload(ob.epoch, (1, 3)))
            await until(lambda: ob.total_depth == 0, "the delete at the confirmation")
            await until(lambda: fwd.confirmed_records == 3, "the count")
            assert held(ob) == []
    finally:
        listener.close()


async def test_over_a_real_broker_no_subscriber_keeps_the_records_pending(
        parts: Parts, broker: Mosquitto) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(reconnect_min_s=5.0, reconnect_max_s=5.0)
    await ob.append([measurement(i) for i in range(2)])
    async with real_session(broker.port) as session, serving(fwd, session):
        await until(lambda: parts.counters.get("no_subscribers") == 1, "PUBACK 0x10")
        assert ob.pending(MEAS) == 2 and ob.sent_unconfirmed == 0 and ob.total_depth == 2
        assert fwd.acked_records == 0 and session.is_open


# -- added after reading the mutants ---------------------------------------------------------


@pytest.mark.parametrize("delete_on", [DeleteOn.STORED, DeleteOn.PUBACK])
async def test_a_session_with_nothing_to_ack_ends_at_once(
        parts: Parts, delete_on: DeleteOn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end of a session waits for the acks of what the broker confirmed (puback), not
    for the flush timeout when there is nothing to ack, and never for the stored helpers."""
    monkeypatch.setattr(forwarder_module, "ACK_FLUSH_S", 600.0)
    fwd = parts.forwarder(delete_on=delete_on)
    broker = BrokerStandIn(autoack=True)
    await parts.outbox.append([measurement(1)])
    task = asyncio.create_task(fwd.serve(as_session(broker)))
    await until(lambda: len(broker.sent) == 1 and parts.outbox.pending(MEAS) == 0, "a publish")
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert task.done()


async def test_the_helpers_have_names(parts: Parts) -> None:
    def names() -> set[str]:
        return {t.get_name() for t in asyncio.all_tasks()}

    async with serving(parts.forwarder(), BrokerStandIn()):
        await asyncio.sleep(0)
        assert {"uplink stored subscription", "uplink confirmations",
                "uplink confirm timeout"} <= names()
    async with serving(parts.forwarder(delete_on=DeleteOn.PUBACK), BrokerStandIn()):
        await asyncio.sleep(0)
        assert "uplink acks" in names()


async def test_a_message_of_two_event_classes_waits_for_either(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    await ob.append([event(ALARM, 1)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 1, "the alarm")
        await ob.append([event(EVENT, 2), event(ALARM, 3)])  # one message: alarm + event
        await until(lambda: ob.pending(ALARM) == ob.pending(EVENT) == 0, "both taken")
        assert len(broker.sent) == 1  # an alarm awaits its PUBACK
        broker.sent[0].puback()
        await until(lambda: len(broker.sent) == 2, "the second after the PUBACK")
        assert broker.sent[1].seqs == [3, 2]


async def test_the_byte_budget_counts_every_message_awaiting_its_puback(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(batch_max_records=1)
    await ob.append([measurement(1)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 1, "a first message, to size one")
        size = len(broker.sent[0].payload)
        broker.sent[0].puback()
        await until(lambda: ob.sent_unconfirmed == 1, "its PUBACK")
        fwd.throughput = 1.5 * size  # a budget of one and a half messages (1 s target)
        await ob.append([measurement(i) for i in range(2, 6)])  # same size: seqs 2..5
        await until(lambda: len(broker.sent) == 3, "two more")
        assert {len(s.payload) for s in broker.sent} == {size}
        await ob.append([event(FIRE)])
        await until(lambda: len(broker.of(FIRE)) == 1, "a later look at the window")
        assert len(broker.of(MEAS)) == 3  # two messages out: over the budget
        broker.sent[1].puback()
        await until(lambda: len(broker.of(MEAS)) == 4, "the next after one PUBACK")
        await ob.append([event(FIRE, 1)])
        broker.of(FIRE)[0].puback()
        await until(lambda: len(broker.of(FIRE)) == 2, "another look")
        assert len(broker.of(MEAS)) == 4


async def test_a_short_linger_is_still_a_linger(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(linger_s=0.3)
    broker = BrokerStandIn()
    loop = asyncio.get_running_loop()
    async with serving(fwd, broker):
        await until(lambda: STORED in broker.inboxes, "the session")
        t0 = loop.time()
        await ob.append([measurement(1)])
        await until(lambda: len(broker.sent) == 1, "the reading after its linger")
        assert broker.sent[0].at >= t0 + 0.3


async def test_linger_waits_out_its_last_fraction_of_a_second(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder(linger_s=30.0)
    await ob.append([measurement(1)])
    loop = asyncio.get_running_loop()
    fwd._linger_since = loop.time() - 29.2  # 0.8 s to go
    task = asyncio.create_task(fwd._linger())
    try:
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()
        await asyncio.wait_for(task, WAIT)
        assert loop.time() >= fwd._linger_since + 30.0
    finally:
        task.cancel()


async def test_a_cancelled_puback_future_is_no_delivery(parts: Parts) -> None:
    ob = parts.outbox
    fwd = parts.forwarder()
    await ob.append([measurement(1)])
    broker = BrokerStandIn()
    async with serving(fwd, broker):
        await until(lambda: len(broker.sent) == 1, "the publish")
        broker.sent[0].future.cancel()
        await until(lambda: len(broker.sent) == 2, "sent again")
        assert broker.sent[1].seqs == [1] and ob.sent_unconfirmed == 0
        assert fwd.acked_records == 0


async def test_a_session_end_waits_for_a_stuck_delete_only_so_long(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``delete_on = "puback"`` the end of a session waits for the deletes of what the
    broker acknowledged, but at most ``ACK_FLUSH_S``: a disk held by another writer must not
    hold up the reconnect. The delete is still queued in the outbox and happens later."""
    monkeypatch.setattr(forwarder_module, "ACK_FLUSH_S", 0.05)
    async with Outbox(outbox_config(tmp_path, busy_timeout_ms=120_000)) as ob:
        fwd = Forwarder(ob, UplinkConfig("127.0.0.1", 1883, delete_on=DeleteOn.PUBACK,
                                         linger_s=0.0), gateway_id=GW)
        await ob.append([measurement(1)])
        broker = BrokerStandIn()
        task = asyncio.create_task(fwd.serve(as_session(broker)))
        other = sqlite3.connect(ob.config.path, isolation_level=None)
        try:
            await until(lambda: len(broker.sent) == 1, "the publish")
            other.execute("BEGIN IMMEDIATE")  # another writer holds the database
            broker.sent[0].puback()
            await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, WAIT)  # not the 120 s of the busy timeout
            assert fwd.acked_records == 0
        finally:
            other.execute("ROLLBACK")
            other.close()
            task.cancel()
        await until(lambda: ob.total_depth == 0, "the delete once the disk is free")


async def test_a_batch_that_vanished_under_the_lock_does_not_stop_the_forwarder(
        parts: Parts) -> None:
    """``next_batch`` finds nothing when the records the pump woke for were deleted while it
    waited for the outbox's lock (a late confirmation of a record sent again). The forwarder
    must go on: a service that returns leaves the session up with nothing forwarding."""
    ob = parts.outbox
    fwd = parts.forwarder(max_inflight=1)
    await ob.append([measurement(1)])
    broker = BrokerStandIn()
    lock = ob._core.lock

    def waiters() -> int:  # asyncio.Lock's queue (CPython: a deque, None until first used)
        return len(lock._waiters or ())

    async with serving(fwd, broker) as task:
        await until(lambda: len(broker.sent) == 1, "a message filling the window")
        [r] = await ob.append([measurement(2)])  # pending; the pump waits for the window
        await lock.acquire()  # an outbox transaction under way
        try:
            deleting = asyncio.create_task(ob.confirm(ob.epoch, [(r.seq, r.seq)]))
            await until(lambda: waiters() == 1, "the delete waiting for the lock")
            broker.sent[0].puback()  # the window has room: the pump goes for the record
            await until(lambda: waiters() == 2, "the pump waiting behind the delete")
        finally:
            lock.release()
        assert await deleting == 1
        [r3] = await ob.append([measurement(3)])
        await until(lambda: len(broker.sent) == 2, "the next record")
        assert broker.sent[1].seqs == [r3.seq] and not task.done()


async def test_with_no_byte_budget_at_all_one_message_still_goes(parts: Parts) -> None:
    fwd = parts.forwarder(queue_target_s=0.0)
    assert fwd._byte_budget() == 0.0
    w = _Window(4)
    assert fwd._may_take(w) is True  # nothing out: one message, however small the budget
    w.bytes_out = 1
    assert fwd._may_take(w) is False


async def test_a_forwarder_without_counters_has_its_own(parts: Parts) -> None:
    fwd = Forwarder(parts.outbox, UplinkConfig("127.0.0.1", 1883), gateway_id=GW)
    assert fwd.counters.snapshot() == {}
    assert fwd._decode(b"not json") is None
    assert fwd.counters.snapshot() == {"stored_invalid": 1}
