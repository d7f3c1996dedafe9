"""The uplink against a real Mosquitto with a real outbox: batches, deletes gated by the
collector's confirmation (or the PUBACK), the send window, fire alarms first, status and the
last will.

The records tests run with the default ``delete_on = "stored"`` and a :class:`Collector` that
stores and confirms like the real one (it is also what keeps the broker from answering 0x10,
no subscribers); the test of the PUBACK gate itself runs with ``delete_on = "puback"``.
Helpers (observer, collector, relay, rig) are in test_uplink_infra.py; the stored-specific
tests are in test_uplink_stored.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from common.backoff import Backoff
from edge.config.uplink import DeleteOn
from edge.drivers.base import wall_ms
from protocols.wire import (
    Event,
    EventType,
    GatewayState,
    Priority,
    Record,
    decode_batch,
    encode_batch,
)
from tests.infra.mosquitto import Mosquitto

from .helpers import DETECTOR, T0, event, measurement, record
from .test_uplink_infra import (
    GW,
    SITE,
    VERSION,
    WAIT,
    Collector,
    Observer,
    Relay,
    retained_status,
    running,
    until,
    uplink_config,
)

FIRE, ALARM, EVENT, MEAS = Priority
REPO = Path(__file__).resolve().parents[2]


async def test_records_arrive_as_contract_batches_and_are_deleted_once_stored(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    obs = Observer(mosquitto.port)
    collector = Collector(mosquitto.port)
    before = wall_ms()
    try:
        async with running(tmp_path, uplink_config(mosquitto.port, batch_max_records=300)) as rig:
            mix = [record([MEAS, EVENT, ALARM, MEAS][i % 4], i) for i in range(2_500)]
            numbered: list[Record] = []
            for i in range(0, len(mix), 500):
                numbered += await rig.outbox.append(mix[i:i + 500])
            await until(lambda: rig.outbox.total_depth == 0, "an empty outbox")
            # The forwarder counts a confirmation once outbox.confirm() returned to it, a
            # moment after the delete is committed (and total_depth already 0).
            await until(lambda: rig.forwarder.confirmed_records >= 2_500, "the deletes counted")
            assert collector.seqs(epoch=rig.outbox.epoch) == {r.seq for r in numbered}
            await until(lambda: len(set(obs.seqs())) == 2_500, "every record at the broker")
            batches = obs.batches()
            assert all(b.gateway_id == GW and b.site == SITE for b in batches)
            assert all(1 <= len(b.records) <= 300 for b in batches)
            got = {r.seq: r for b in batches for r in b.records}
            assert got == {r.seq: r for r in numbered}  # the same records, field for field
            assert rig.forwarder.acked_records == 2_500  # each PUBACKed once: no resend
            assert rig.forwarder.confirmed_records == 2_500
            assert rig.counters.snapshot() == {}  # nothing refused, lost or failed
            last = rig.uplink.last_ack_ms  # the last packet from the broker
            assert last is not None and before <= last <= wall_ms()
    finally:
        collector.close()
        obs.close()


async def test_records_leave_the_outbox_only_after_the_puback(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """``delete_on = "puback"``: the PUBACK is the deletion point (with "stored" it is only
    the point where a record is marked sent, test_uplink_stored.py)."""
    relay = await Relay(mosquitto.port).start()
    obs = Observer(mosquitto.port)
    try:
        async with running(tmp_path, uplink_config(relay.port,
                                                   delete_on=DeleteOn.PUBACK)) as rig:
            relay.hold()  # the broker's PUBACKs wait in the relay
            await rig.outbox.append([measurement(i) for i in range(10)])
            await until(lambda: len(obs.seqs()) == 10, "the batch at the broker")
            await asyncio.sleep(0.5)
            assert rig.outbox.depth(MEAS) == 10  # delivered, but not confirmed: kept
            assert rig.forwarder.acked_records == 0
            relay.release()  # the positive control: the same PUBACKs, let through, delete
            await until(lambda: rig.outbox.depth(MEAS) == 0, "the delete after the PUBACK")
            assert rig.forwarder.acked_records == 10
    finally:
        obs.close()
        await relay.close()


async def test_a_fire_alarm_does_not_wait_for_a_full_window(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    relay = await Relay(mosquitto.port).start()
    collector = Collector(mosquitto.port)  # stores and confirms
    try:
        cfg = uplink_config(relay.port, max_inflight=2, batch_max_records=5)
        async with running(tmp_path, cfg) as rig:
            relay.hold()
            await rig.outbox.append([measurement(i) for i in range(50)])
            await until(lambda: len(relay.records()) == 2, "a full window")
            await asyncio.sleep(0.3)
            assert len(relay.records()) == 2  # the window is full: nothing more goes out
            # the positive control on the same path: a fire alarm does go out
            [fire] = await rig.outbox.append([event(FIRE, 99)])
            await until(lambda: len(relay.records()) == 3, "the fire alarm despite the window")
            assert [r.seq for r in relay.records()[2].records] == [fire.seq]
            relay.release()
            await until(lambda: rig.outbox.depth(MEAS) == 0, "the backlog drained")
            seqs = [r.seq for b in relay.records() for r in b.records]
            assert sorted(set(seqs)) == list(range(1, 52))
    finally:
        collector.close()
        await relay.close()


async def test_on_a_slow_link_a_fire_alarm_queues_behind_little_data(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The window is bounded by measured throughput too: with 0.25 s of a 2 MB/s path
    allowed, a fire alarm finds a few messages ahead of it, not the whole window of 64."""
    relay = await Relay(mosquitto.port, rate=2_000_000).start()
    collector = Collector(mosquitto.port)  # stores and confirms
    try:
        cfg = uplink_config(relay.port, max_inflight=64, batch_max_records=1000)
        async with running(tmp_path, cfg, queue_target_s=0.25) as rig:
            for i in range(0, 24_000, 4_000):
                await rig.outbox.append([measurement(i + k) for k in range(4_000)])
            await until(lambda: len(relay.records()) >= 6, "the backlog flowing")
            seen_then = len(relay.records())
            [fire] = await rig.outbox.append([event(FIRE, 99)])
            await until(lambda: any(b.records[0].seq == fire.seq for b in relay.records()),
                        "the fire alarm at the broker")
            position = next(i for i, b in enumerate(relay.records())
                            if b.records[0].seq == fire.seq)
            # ~500 kB allowed = about 4 messages of ~128 kB (+1 sent as the limit is checked
            # before a batch is taken); without the bound all 24 would be queued ahead.
            assert position - seen_then <= 9, (seen_then, position)
            assert rig.forwarder.throughput is not None
            await until(lambda: rig.outbox.depth(MEAS) == 0, "the backlog drained")
    finally:
        collector.close()
        await relay.close()


async def test_event_classes_are_not_pipelined_measurements_are(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A restore must never overtake its raise: one message per event class awaits its
    PUBACK at a time; measurements fill the window."""
    relay = await Relay(mosquitto.port).start()
    collector = Collector(mosquitto.port)  # stores and confirms
    try:
        cfg = uplink_config(relay.port, max_inflight=8, batch_max_records=2)
        async with running(tmp_path, cfg) as rig:
            relay.hold()
            alarms = [Event(source=DETECTOR, type=EventType.FAULT, receive_ms=T0 + i,
                            active=i % 2 == 0) for i in range(6)]  # raise, restore, ...
            stored = await rig.outbox.append(alarms)
            await until(lambda: len(relay.records()) == 1, "the first alarm batch")
            await asyncio.sleep(0.5)
            assert len(relay.records()) == 1  # the next alarm batch waits for this PUBACK
            relay.release()  # the positive control: with the PUBACK through, the rest follow
            await until(lambda: rig.outbox.depth(ALARM) == 0, "the alarms delivered")
            assert [r.seq for b in relay.records() for r in b.records] == \
                [r.seq for r in stored]  # seq order, raise before restore

            relay.hold()
            await rig.outbox.append([measurement(i) for i in range(12)])
            await until(lambda: len(relay.records()) == 3 + 6, "six measurement batches at once")
            relay.release()
            await until(lambda: rig.outbox.depth(MEAS) == 0, "the measurements delivered")
    finally:
        collector.close()
        await relay.close()


async def test_a_few_readings_linger_to_fill_a_message_but_events_never_wait(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A trickle of readings waits up to ``linger_s`` for company (one message instead of
    hundreds); an event, a fire alarm or a full message ends the wait at once.

    "At once" without a stopwatch: the linger (60 s) is longer than every wait of this test
    (``until``: 20 s), so whatever arrives arrived because the wait was cut, not because it
    ran out. How fast a fire alarm travels is bench/bench_uplink.py's figure."""
    obs = Observer(mosquitto.port)
    collector = Collector(mosquitto.port)
    try:
        cfg = uplink_config(mosquitto.port, linger_s=60.0, batch_max_records=100)
        assert cfg.linger_s > WAIT
        async with running(tmp_path, cfg) as rig:
            await rig.outbox.append([measurement(i) for i in range(3)])
            # A quiet period, and the positive control right after it on the same channel:
            # the fault brings the readings with it, so "nothing yet" meant "lingering".
            await asyncio.sleep(0.6)
            assert obs.seqs() == []
            [fault] = await rig.outbox.append([event(ALARM, 1)])
            await until(lambda: len(obs.seqs()) == 4, "the fault, and the readings with it")
            assert obs.batches()[0].records[0].seq == fault.seq  # alarms go first

            readings = await rig.outbox.append([measurement(i) for i in range(10, 15)])
            [fire] = await rig.outbox.append([event(FIRE, 2)])
            await until(lambda: fire.seq in obs.seqs(), "the fire alarm")
            # it travelled alone: the readings queued before it keep lingering
            assert [r.seq for r in obs.batches()[-1].records] == [fire.seq]
            assert len(obs.seqs()) == 5
            assert rig.outbox.pending(MEAS) == len(readings)

            # 95 more fill a message (100): it goes at once, the 5 lingering ones in it
            await rig.outbox.append([measurement(i) for i in range(100, 195)])
            await until(lambda: len(obs.seqs()) == 105, "a full message at once")
            assert {r.seq for r in obs.batches()[-1].records} >= {r.seq for r in readings}
            await until(lambda: rig.outbox.total_depth == 0, "an empty outbox")
    finally:
        collector.close()
        obs.close()


async def test_lingering_readings_keep_their_deadline_when_a_fire_alarm_passes(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The linger's own deadline, so bounds in time, but each bound is the promise itself:
    a lone reading waits (nearly) the whole linger - a lower bound, which a busy machine can
    only help - and readings lingering when a fire alarm goes out alone are not given a new
    linger from that moment: they arrive before one started at the fire alarm could end."""
    linger = 3.0
    obs = Observer(mosquitto.port)
    collector = Collector(mosquitto.port)
    try:
        cfg = uplink_config(mosquitto.port, linger_s=linger, batch_max_records=100)
        async with running(tmp_path, cfg) as rig:
            loop = asyncio.get_running_loop()
            t = loop.time()
            await rig.outbox.append([measurement(300)])
            await until(lambda: len(obs.seqs()) == 1, "the lone reading after the linger")
            assert loop.time() - t >= linger * 0.8  # it waited (nearly) the whole linger

            await rig.outbox.append([measurement(i) for i in range(10, 15)])
            await asyncio.sleep(linger / 2)  # spacing, not an assertion
            fire_appended = loop.time()
            [fire] = await rig.outbox.append([event(FIRE, 2)])
            await until(lambda: fire.seq in obs.seqs(), "the fire alarm")
            assert [r.seq for r in obs.batches()[-1].records] == [fire.seq]  # alone
            await until(lambda: len(obs.seqs()) == 7, "the readings after their linger")
            # a linger restarted by the fire alarm would end after fire_appended + linger
            assert loop.time() < fire_appended + linger
    finally:
        collector.close()
        obs.close()


async def test_status_online_on_connect_offline_on_stop(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with running(tmp_path, uplink_config(mosquitto.port)) as rig:
        online = await retained_status(mosquitto.port)
        assert (online.state, online.version, online.site, online.reason) == \
            (GatewayState.ONLINE, VERSION, SITE, None)
        obs = Observer(mosquitto.port)
        await until(lambda: bool(obs.statuses()), "the observer's retained copy")
        await rig.stop()
        try:
            await until(lambda: len(obs.statuses()) == 2, "the offline status")
            offline = obs.statuses()[1]
            assert (offline.state, offline.reason, offline.version) == \
                (GatewayState.OFFLINE, "shutdown", VERSION)
            await asyncio.sleep(0.5)
            assert len(obs.statuses()) == 2  # a clean DISCONNECT: the will is not published
            # The positive control on the same topic: the gateway comes back, and its online
            # status is the next one the observer sees (a will sent at the stop would have
            # come before it).
            async with running(tmp_path / "again.db", uplink_config(mosquitto.port)):
                await until(lambda: len(obs.statuses()) >= 3, "the online status again")
                assert [st.state for st in obs.statuses()] == \
                    [GatewayState.ONLINE, GatewayState.OFFLINE, GatewayState.ONLINE]
        finally:
            obs.close()
    stored = await retained_status(mosquitto.port)  # the second run's clean stop
    assert (stored.state, stored.reason) == (GatewayState.OFFLINE, "shutdown")
    info = rig.links.get("uplink")
    assert info is not None and info.detail == "stopped"


CHILD = """
import asyncio, sys
from edge.config.uplink import UplinkConfig
from edge.uplink import MqttUplink

async def main() -> None:
    up = MqttUplink(UplinkConfig("127.0.0.1", int(sys.argv[1])), gateway_id="gw-child",
                    version="9.9")
    task = asyncio.create_task(up.run())
    while up.session is None:
        await asyncio.sleep(0.02)
    print("up", flush=True)
    await task

asyncio.run(main())
"""


async def test_the_last_will_marks_a_killed_gateway_offline(mosquitto: Mosquitto) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(mosquitto.port)], cwd=REPO,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None
        assert (await asyncio.to_thread(child.stdout.readline)) == b"up\n"
        online = await retained_status(mosquitto.port, "gw-child")
        assert online.state is GatewayState.ONLINE
        obs = Observer(mosquitto.port)
        await until(lambda: bool(obs.statuses("gw-child")), "the retained online status")
        child.send_signal(signal.SIGKILL)  # by PID: the process we started
        try:
            await until(lambda: len(obs.statuses("gw-child")) == 2, "the last will")
            will = obs.statuses("gw-child")[1]
            assert (will.state, will.reason, will.version) == \
                (GatewayState.OFFLINE, "lwt", "9.9")
        finally:
            obs.close()
        assert (await retained_status(mosquitto.port, "gw-child")).reason == "lwt"
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        if child.stdout:
            child.stdout.close()


async def test_payloads_are_byte_identical_to_the_reference_encoder(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    relay = await Relay(mosquitto.port).start()
    collector = Collector(mosquitto.port)  # stores and confirms
    try:
        async with running(tmp_path, uplink_config(relay.port)) as rig:
            stored = await rig.outbox.append([event(ALARM, 1), measurement(2)])
            await until(lambda: rig.outbox.depth(MEAS) == 0, "the delivery")
            [sent] = [p for p in relay.published if p.topic.endswith("/records")]
            batch = decode_batch(sent.payload)
            assert list(batch.records) == stored
            assert encode_batch(batch) == sent.payload
    finally:
        collector.close()
        await relay.close()


async def test_small_packets_are_not_held_back_by_nagle(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """TCP_NODELAY on the gateway's socket: with confirmations coming down the same link,
    Nagle held a fifth of the records PUBACKs for the peer's delayed ACK (27-40 ms)."""
    async with running(tmp_path, uplink_config(mosquitto.port)) as rig:
        session = rig.uplink.session
        assert session is not None
        sock = session.client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_back_off_doubles_with_jitter_between_min_and_max() -> None:
    low = Backoff(1.0, 60.0, jitter=0.5, rng=lambda: 0.0)
    assert [low.next() for _ in range(9)] == [1, 1, 2, 4, 8, 16, 30, 30, 30]
    high = Backoff(1.0, 60.0, jitter=0.5, rng=lambda: 1.0)
    assert [high.next() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    high.reset()
    assert high.next() == 1
    assert [Backoff(0.5, 0.5).next() for _ in range(5)] == [0.5] * 5
