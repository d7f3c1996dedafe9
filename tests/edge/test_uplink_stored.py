"""Delivered means stored (issue 18): a record leaves the outbox when a collector says it
stored it (``firegate/v1/<gw>/stored``), not at the broker's PUBACK. Real Mosquitto, real
outbox; the collector is played by a paho client that stores and confirms (or not).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config.uplink import DeleteOn
from edge.uplink.forwarder import UNCONFIRMED_MESSAGES
from protocols.wire import (
    Channel,
    CommandName,
    GatewayState,
    Priority,
    Stored,
    encode_stored,
    topic,
)
from tests.infra.mosquitto import Mosquitto

from .helpers import event, measurement, record
from .test_uplink_commands import Cloud
from .test_uplink_infra import (
    GW,
    Collector,
    Observer,
    Rig,
    retained_status,
    running,
    until,
    uplink_config,
)

FIRE, ALARM, EVENT, MEAS = Priority
STORED_TOPIC = topic(GW, Channel.STORED)


class Publisher:
    """Publishes raw payloads to the gateway's ``stored`` topic, as a collector would."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="stored-publisher",
                                  protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, payload: bytes) -> None:
        self.client.publish(STORED_TOPIC, payload, qos=1).wait_for_publish(10)

    def stored(self, epoch: int, *ranges: tuple[int, int], gw: str = GW) -> None:
        self.send(encode_stored(Stored(gw, epoch, ranges, int(time.time() * 1000))))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def held(rig: Rig) -> list[int]:
    """Seqs still in the outbox file."""
    import sqlite3

    db = sqlite3.connect(f"file:{rig.outbox.config.path}?mode=ro", uri=True)
    try:
        return [s for (s,) in db.execute("SELECT seq FROM outbox ORDER BY seq")]
    finally:
        db.close()


async def test_pubacked_but_unconfirmed_records_stay_and_go_out_again_after_the_timeout(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    collector = Collector(mosquitto.port, confirming=False)  # stores, never says so
    try:
        cfg = uplink_config(mosquitto.port, confirm_timeout_s=2.0)
        async with running(tmp_path, cfg) as rig:
            stored = await rig.outbox.append([measurement(i) for i in range(10)])
            seqs = {r.seq for r in stored}
            await until(lambda: rig.outbox.sent_unconfirmed == 10, "the PUBACK")
            assert collector.seqs() == seqs
            assert rig.forwarder.acked_records == 10
            assert rig.outbox.total_depth == 10  # acknowledged by the broker, still kept
            assert held(rig) == sorted(seqs)
            await until(lambda: collector.batches >= 2, "the same records sent again")
            (first, once), (second, again) = collector.arrivals[:2]
            assert sorted(again) == sorted(once) == sorted(seqs)
            assert second - first >= 2.0 * 0.9  # not before the timeout
            assert rig.counters.get("unconfirmed_resent") >= 10
            assert rig.outbox.total_depth == 10
            collector.confirming = True  # from the next copy on, the collector says so
            await until(lambda: rig.outbox.total_depth == 0, "the delete after confirmation")
            await until(lambda: rig.forwarder.confirmed_records == 10, "the count")
            assert held(rig) == []
    finally:
        collector.close()


async def test_a_confirmation_deletes_exactly_its_seqs_and_only_of_this_epoch(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    collector = Collector(mosquitto.port, confirming=False)
    cloud = Publisher(mosquitto.port)
    try:
        async with running(tmp_path, uplink_config(mosquitto.port)) as rig:
            await rig.outbox.append([measurement(i) for i in range(10)])
            await until(lambda: rig.outbox.sent_unconfirmed == 10, "the PUBACK")
            epoch = rig.outbox.epoch
            cloud.stored(epoch, (2, 4), (7, 7))
            await until(lambda: rig.outbox.total_depth == 6, "the confirmed seqs deleted")
            assert held(rig) == [1, 5, 6, 8, 9, 10]
            # Another epoch (an earlier store of this gateway): nothing goes. The valid one
            # after it on the same connection shows both were handled.
            cloud.stored(epoch ^ 1, (1, 10))
            cloud.stored(0, (1, 10))
            cloud.stored(epoch, (1, 1))
            await until(lambda: rig.outbox.total_depth == 5, "the confirmation of seq 1")
            assert held(rig) == [5, 6, 8, 9, 10]
            stats = await rig.outbox.stats()
            assert stats.foreign_confirms == 2 and stats.sent_unconfirmed == 5
            await until(lambda: rig.forwarder.confirmed_records == 5, "the count")
            assert rig.counters.get("stored_invalid") == 0
    finally:
        cloud.close()
        collector.close()


async def test_a_malformed_confirmation_is_counted_and_changes_nothing(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    collector = Collector(mosquitto.port, confirming=False)
    cloud = Publisher(mosquitto.port)
    try:
        async with running(tmp_path, uplink_config(mosquitto.port)) as rig:
            await rig.outbox.append([measurement(i) for i in range(4)])
            await until(lambda: rig.outbox.sent_unconfirmed == 4, "the PUBACK")
            ep = f"{rig.outbox.epoch:016x}"
            for payload in (
                    b"\xff not json",
                    b'{"v":1,"gw":"gw-test","seqs":[[1,4]]}',  # no ts
                    b'{"v":2,"gw":"gw-test","seqs":[[1,4]],"ts":1718000000000}',
                    f'{{"v":1,"gw":"gw-test","ep":"{ep}","seqs":[[3,4],[1,2]],'
                    f'"ts":1718000000000}}'.encode(),  # not sorted
                    f'{{"v":1,"gw":"gw-test","ep":"{ep}","seqs":[[1,4]],"ts":1718000000000,'
                    f'"why":1}}'.encode()):
                cloud.send(payload)
            cloud.stored(rig.outbox.epoch, (1, 4), gw="gw-other")  # another gateway's
            await until(lambda: rig.counters.get("stored_invalid") == 6, "six refusals")
            assert rig.outbox.total_depth == 4 and rig.up
            cloud.stored(rig.outbox.epoch, (1, 4))  # the channel still works
            await until(lambda: rig.outbox.total_depth == 0, "a valid confirmation")
            assert rig.counters.get("service_error") == 0
    finally:
        cloud.close()
        collector.close()


async def test_resend_queues_the_seqs_still_held_and_names_the_missing(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    collector = Collector(mosquitto.port, confirming=False)
    obs = Observer(mosquitto.port, topic=f"firegate/v1/{GW}/cmd/ack")
    cloud = Cloud(mosquitto.port, obs)
    stored = Publisher(mosquitto.port)
    try:
        async with running(tmp_path, uplink_config(mosquitto.port)) as rig:
            await rig.outbox.append([measurement(i) for i in range(10)])
            await until(lambda: rig.outbox.sent_unconfirmed == 10, "the PUBACK")
            ep = f"{rig.outbox.epoch:016x}"
            stored.stored(rig.outbox.epoch, (3, 4))
            await until(lambda: rig.outbox.total_depth == 8, "3 and 4 confirmed")
            before = collector.batches
            cloud.command("rs-1", CommandName.RESEND, args={"ep": ep, "first": 1, "last": 12})
            ack = await cloud.ack("rs-1")
            assert (ack.ok, ack.result) == (True, {"resent": 8, "missing": [[3, 4], [11, 12]]})
            await until(lambda: collector.batches > before, "the records sent again")
            again = [s for _, seqs in collector.arrivals[before:] for s in seqs]
            assert sorted(again) == [1, 2, 5, 6, 7, 8, 9, 10]

            other = f"{rig.outbox.epoch ^ 1:016x}"
            cloud.command("rs-2", CommandName.RESEND, args={"ep": other, "first": 5, "last": 6})
            ack = await cloud.ack("rs-2")
            assert (ack.ok, ack.result) == (True, {"resent": 0, "missing": [[5, 6]]})
            cloud.command("rs-3", CommandName.RESEND, args={"first": 7, "last": 6})
            ack = await cloud.ack("rs-3")
            assert (ack.ok, ack.error) == (False, "args.last: must be at least first (7), got 6")
            cloud.command("rs-4", CommandName.RESEND, args={"ep": "ZZ", "first": 1, "last": 2})
            ack = await cloud.ack("rs-4")
            assert not ack.ok and ack.error is not None and ack.error.startswith(
                "bad_value at args.ep: ")
            cloud.command("rs-5", CommandName.RESEND,
                          args={"ep": ep, "first": 1, "last": 100_001})
            ack = await cloud.ack("rs-5")
            assert (ack.ok, ack.error) == (
                False, "args.last: at most 100000 seqs per resend, got 1..100001")
            cloud.command("rs-6", CommandName.RESEND, args={"ep": ep, "first": 1})
            assert (await cloud.ack("rs-6")).error == "args.last: is required"
            cloud.command("rs-7", CommandName.RESEND, args={"first": 1, "last": 2, "x": 1})
            assert (await cloud.ack("rs-7")).error == \
                "args.x: unknown argument (resend takes ep, first, last)"
    finally:
        stored.close()
        cloud.close()
        obs.close()
        collector.close()


async def test_with_delete_on_puback_records_go_at_the_puback(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The old behaviour, for a broker without a firegate collector: nobody confirms, and
    the records are deleted all the same once the broker acknowledged them."""
    obs = Observer(mosquitto.port)  # a subscriber, so that the PUBACK is 0x00
    try:
        cfg = uplink_config(mosquitto.port, delete_on=DeleteOn.PUBACK)
        async with running(tmp_path, cfg) as rig:
            await rig.outbox.append([measurement(i) for i in range(10)])
            await until(lambda: rig.outbox.total_depth == 0, "the delete at the PUBACK")
            assert sorted(obs.seqs()) == list(range(1, 11))
            assert rig.outbox.sent_unconfirmed == 0
            assert rig.forwarder.confirmed_records == 0
            await until(lambda: rig.forwarder.acked_records == 10, "the acks counted")
    finally:
        obs.close()


@pytest.mark.parametrize("delete_on", [DeleteOn.STORED, DeleteOn.PUBACK])
async def test_no_matching_subscribers_is_no_delivery(
        tmp_path: Path, mosquitto: Mosquitto, delete_on: DeleteOn) -> None:
    """PUBACK 0x10: no collector session exists, the message went nowhere. The records stay
    pending (in both modes) and are tried again with back-off, not in a loop."""
    cfg = uplink_config(mosquitto.port, delete_on=delete_on, reconnect_min_s=0.2,
                        reconnect_max_s=1.0)
    async with running(tmp_path, cfg) as rig:
        stored = await rig.outbox.append([measurement(i) for i in range(5)] + [event(ALARM)])
        await until(lambda: rig.counters.get("no_subscribers") >= 3, "three tries")
        started = time.monotonic()
        tries = rig.counters.get("no_subscribers")
        await asyncio.sleep(3.0)
        rate = (rig.counters.get("no_subscribers") - tries) / (time.monotonic() - started)
        assert rate < 8, rate  # 0.5-1 s apart (two messages a try); a loop makes hundreds
        assert rig.outbox.total_depth == 6  # nothing deleted
        s = await rig.outbox.stats()
        assert s.sent_unconfirmed == 0  # nor marked sent: nobody received them
        assert rig.forwarder.acked_records == 0
        assert rig.up and rig.uplink.connects == 1  # 0x10 never ends the session
        assert rig.counters.get("connection_lost") == rig.counters.get("service_error") == 0
        assert rig.counters.get("status_refused") == 0  # the retained status is fine:
        assert (await retained_status(mosquitto.port)).state is GatewayState.ONLINE
        await until(lambda: rig.counters.get("health_unheard") >= 1, "the unheard health")

        collector = Collector(mosquitto.port)  # a collector appears
        try:
            await until(lambda: collector.seqs() == {r.seq for r in stored}, "delivered")
            await until(lambda: rig.outbox.total_depth == 0, "deleted")
            assert collector.arrivals[0][1][0] == stored[-1].seq  # the alarm first
        finally:
            collector.close()


async def test_unconfirmed_records_are_bounded_fire_alarms_excepted(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    collector = Collector(mosquitto.port, confirming=False)
    cloud = Publisher(mosquitto.port)
    try:
        cfg = uplink_config(mosquitto.port, batch_max_records=2, linger_s=0.0)
        cap = UNCONFIRMED_MESSAGES * 2
        async with running(tmp_path, cfg) as rig:
            await rig.outbox.append([measurement(i) for i in range(cap + 50)])
            await until(lambda: rig.outbox.sent_unconfirmed == cap, "the cap reached")
            await asyncio.sleep(0.5)
            assert rig.outbox.sent_unconfirmed == cap and len(collector.seqs()) == cap
            [fire] = await rig.outbox.append([event(FIRE)])
            await until(lambda: fire.seq in collector.seqs(), "the fire alarm despite the cap")
            cloud.stored(rig.outbox.epoch, (1, 40))
            await until(lambda: len(collector.seqs()) == cap + 41, "40 more after confirmation")
    finally:
        cloud.close()
        collector.close()


@pytest.mark.parametrize("delete_on", [DeleteOn.STORED, DeleteOn.PUBACK])
async def test_records_acknowledged_by_a_broker_killed_9_are_not_lost(
        tmp_path: Path, delete_on: DeleteOn) -> None:
    """Issue 18 at small scale. The collector's persistent session is away, so the broker
    queues the records for it and acknowledges them; then it is killed with ``kill -9``
    before its next save (Mosquitto's default autosave: every 30 minutes). With
    ``delete_on = "stored"`` the records the collector never confirmed go out again after
    the restart and the collector ends with every seq; with ``"puback"`` they are lost."""
    broker = Mosquitto(tmp_path / "broker").start()
    collector = Collector(broker.port, client_id="collector-1", persistent=True)
    try:
        collector.disconnect()  # its session (and subscription) stays at the broker
        await until(lambda: "Client collector-1 disconnected" in broker.log.read_text(),
                    "the broker seeing the collector go")
        cfg = uplink_config(broker.port, delete_on=delete_on, confirm_timeout_s=2.0)
        async with running(tmp_path, cfg) as rig:
            records = [record([MEAS, EVENT, ALARM][i % 3], i) for i in range(40)]
            stored = await rig.outbox.append(records)
            [fire] = await rig.outbox.append([event(FIRE, 99)])
            seqs = {r.seq for r in stored} | {fire.seq}
            await until(lambda: rig.forwarder.acked_records == 41, "every PUBACK")
            if delete_on is DeleteOn.STORED:
                assert rig.outbox.sent_unconfirmed == 41 and rig.outbox.total_depth == 41
            else:
                await until(lambda: rig.outbox.total_depth == 0, "the deletes at the PUBACK")
            assert collector.seqs() == set()  # queued at the broker, nowhere else

            broker.stop(signal.SIGKILL)  # the broker we started, by PID
            broker.start()  # same port, same persistence directory: nothing saved
            await until(lambda: rig.up and rig.uplink.connects == 2, "the reconnect")
            collector.connect()  # its session is gone with the broker's memory
            if delete_on is DeleteOn.STORED:
                await until(lambda: collector.seqs() == seqs, "every seq at the collector")
                await until(lambda: rig.outbox.total_depth == 0, "confirmed and deleted")
                assert rig.counters.get("unconfirmed_resent") >= 41
                # Sent again in the usual order: the fire alarm first, alone.
                assert collector.arrivals[0][1] == [fire.seq]
            else:
                [marker] = await rig.outbox.append([measurement(1000)])
                await until(lambda: marker.seq in collector.seqs(), "a record sent after")
                assert collector.seqs() == {marker.seq}  # the 41 are lost for good
    finally:
        collector.close()
        broker.stop()
