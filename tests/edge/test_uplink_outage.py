"""Outages and a broken client: a broker stopped while records keep coming, a frozen broker,
and a network thread that died or hangs (the watchdog). Nothing is lost; fire alarms first.

Records are deleted when a :class:`Collector` confirms them stored (the default
``delete_on = "stored"``), as in production."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from protocols.wire import Priority, Record
from tests.infra.mosquitto import Mosquitto

from .helpers import event, measurement
from .test_uplink_infra import GW, Collector, Observer, running, until, uplink_config

FIRE, ALARM, EVENT, MEAS = Priority


async def test_a_broker_outage_loses_nothing_and_fire_alarms_go_first(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    # Persistent sessions: what is published while they reconnect is kept for them (the
    # broker saves them on SIGTERM). Confirmations published while the gateway is away
    # are not (its session is clean): those records go out again after the timeout.
    obs = Observer(broker.port, persistent=True)
    collector = Collector(broker.port, persistent=True)
    stored: list[Record] = []
    outage: list[Record] = []
    in_outage = stop = False
    try:
        async with running(tmp_path, uplink_config(broker.port, confirm_timeout_s=3.0)) as rig:

            async def produce() -> None:
                i = 0
                while not stop:  # ~100 records/s: measurements with an alarm now and then
                    batch = [measurement(i)] if i % 10 else [event(ALARM, i)]
                    numbered = await rig.outbox.append(batch)
                    stored.extend(numbered)
                    if in_outage:
                        outage.extend(numbered)
                    i += 1
                    await asyncio.sleep(0.01)

            producer = asyncio.create_task(produce())
            await until(lambda: len(set(obs.seqs())) >= 50, "records flowing")
            broker.stop()
            in_outage = True
            fires = []
            for i in range(3):
                await asyncio.sleep(1.0)
                fires += await rig.outbox.append([event(FIRE, 1000 + i)])
            outage.extend(fires)
            stored.extend(fires)
            await asyncio.sleep(2.0)  # the outage goes on with fire alarms stored meanwhile
            await until(lambda: not rig.up, "the uplink to see the broker gone")
            broker.start()  # same port, same persistence
            in_outage = False
            await until(lambda: rig.up, "the reconnect")
            await asyncio.sleep(0.5)
            stop = True  # not cancel(): an append under way must be recorded in ``stored``
            await producer
            await until(lambda: rig.outbox.total_depth == 0, "an empty outbox")
            await until(lambda: set(obs.seqs()) == {r.seq for r in stored},
                        "every stored seq at the broker")
            assert collector.seqs() == {r.seq for r in stored}
        batches = obs.batches()
        copies: dict[int, set[Record]] = defaultdict(set)
        for b in batches:
            for r in b.records:
                copies[r.seq].add(r)
        assert all(len(c) == 1 for c in copies.values())  # a duplicate is the same record
        assert {s: c.pop() for s, c in copies.items()} == {r.seq: r for r in stored}
        # The first message carrying anything stored during the outage holds exactly the
        # outage's fire alarms, and nothing else.
        outage_seqs = {r.seq for r in outage}
        first = next(b for b in batches if outage_seqs & {r.seq for r in b.records})
        assert [r.seq for r in first.records] == [r.seq for r in fires]
        assert rig.counters.get("connection_lost") >= 1
        assert rig.uplink.connects >= 2
    finally:
        collector.close()
        obs.close()
        broker.stop()


@pytest.mark.parametrize(("how", "noticed_by"), [("loop_stop", "watchdog_restart"),
                                                 ("close_socket", "connection_lost")])
async def test_a_client_whose_network_thread_died_is_replaced(
        tmp_path: Path, mosquitto: Mosquitto, how: str, noticed_by: str) -> None:
    """``loop_stop`` ends paho's thread with the TCP connection still open: only the
    watchdog can tell. A socket closed under the thread is seen by paho itself."""
    obs = Observer(mosquitto.port)
    try:
        async with running(tmp_path, uplink_config(mosquitto.port)) as rig:
            session = rig.uplink.session
            assert session is not None
            if how == "loop_stop":
                await asyncio.to_thread(session.client.loop_stop)
            else:
                sock = session.client.socket()
                assert sock is not None
                sock.close()
            await until(lambda: rig.counters.get(noticed_by) == 1, noticed_by)
            await until(lambda: rig.uplink.connects == 2 and rig.up, "a new client")
            await rig.outbox.append([measurement(i) for i in range(5)])
            await until(lambda: sorted(set(obs.seqs())) == [1, 2, 3, 4, 5], "records again")
            assert rig.counters.get("watchdog_restart") + rig.counters.get("connection_lost") == 1
    finally:
        obs.close()


async def test_the_watchdog_replaces_a_client_whose_network_thread_hangs(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    obs = Observer(mosquitto.port)
    collector = Collector(mosquitto.port)
    gate = threading.Event()
    try:
        async with running(tmp_path, uplink_config(mosquitto.port, keepalive_s=1)) as rig:
            session = rig.uplink.session
            assert session is not None

            # A callback that never returns wedges paho's thread: alive, but nothing moves
            # (no reads, no PINGREQ, no keepalive check of its own).
            def wedged(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
                gate.wait(60)

            session.client.on_message = wedged
            obs.client.publish(f"firegate/v1/{GW}/cmd", b"{}", qos=1)
            await until(lambda: rig.counters.get("watchdog_restart") == 1, "the watchdog")
            await until(lambda: rig.uplink.connects == 2 and rig.up, "a new client")
            await rig.outbox.append([measurement(1)])
            await until(lambda: rig.outbox.depth(MEAS) == 0, "records through the new client")
            assert 1 in obs.seqs()
    finally:
        gate.set()
        collector.close()
        obs.close()


async def test_a_frozen_broker_is_noticed_and_left_until_it_answers(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    obs = Observer(mosquitto.port)
    collector = Collector(mosquitto.port)
    assert mosquitto.pid is not None
    cfg = uplink_config(mosquitto.port, keepalive_s=1, connect_timeout_s=1.5)
    try:
        async with running(tmp_path, cfg) as rig:
            os.kill(mosquitto.pid, signal.SIGSTOP)  # the broker we started, by PID
            try:
                await rig.outbox.append([measurement(i) for i in range(3)])
                await until(lambda: not rig.up, "the silent link noticed")
                await until(lambda: rig.counters.get("connect_failed") >= 1,
                            "an attempt that got no CONNACK")
                info = rig.links.get("uplink")
                assert info is not None and info.detail is not None
            finally:
                os.kill(mosquitto.pid, signal.SIGCONT)
            await until(lambda: rig.up, "the reconnect")
            await until(lambda: rig.outbox.depth(MEAS) == 0, "the records delivered")
            assert {1, 2, 3} <= set(obs.seqs())
    finally:
        collector.close()
        obs.close()
