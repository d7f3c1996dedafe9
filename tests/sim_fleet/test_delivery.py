"""The fleet against a real Mosquitto, read back by a real subscriber: nothing lost."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from common.config import ConfigError
from protocols.wire import Priority
from simulators.fleet import FleetConfig, FleetError, FleetReport, run_fleet
from simulators.fleet.runner import Progress
from tests.infra.mosquitto import Mosquitto

from .helpers import Collector, assert_nothing_lost

WAIT = 20.0  # a generous deadline for a loaded machine; never a timing assertion


class Watch:
    """The fleet's progress callback, called in this test's own event loop every poll of the
    run (50 ms): a test acts on the run's state (all online, records delivered, every gateway
    dropped) rather than at a moment guessed in seconds."""

    def __init__(self) -> None:
        self.seen: list[Progress] = []

    def __call__(self, p: Progress) -> None:
        self.seen.append(p)

    async def until(self, task: asyncio.Task[FleetReport], what: str,
                    cond: Callable[[Progress], bool]) -> Progress:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not (self.seen and cond(self.seen[-1])):
            assert not task.done(), f"the fleet ended before {what}: {self.seen[-1:]}"
            assert loop.time() < deadline, f"timed out waiting for {what}: {self.seen[-1:]}"
            await asyncio.sleep(0.01)
        return self.seen[-1]


def url(broker: Mosquitto) -> str:
    return f"mqtt://127.0.0.1:{broker.port}"


async def test_every_record_arrives_intact(mosquitto: Mosquitto) -> None:
    config = FleetConfig(broker=url(mosquitto), gateways=12, records=6000, rate=250,
                         batch_interval=0.2, max_batch=300, alarm_rate=0.01, seed=3,
                         keep_records=True, health_interval=0.5)
    with Collector(mosquitto.port) as sub:
        report = await run_fleet(config)
        await sub.wait_for_all(report)
        await sub.wait_for(lambda: all(sub.status_trail(gw)[-1:] == [("offline", "shutdown")]
                                       for gw in report.gateways), "shutdown statuses")
    assert report.ok, report.to_json()["errors"]
    assert report.produced == 6000  # no drops: exactly the records asked for
    assert_nothing_lost(report, sub, values=True)
    for gw, ledger in report.gateways.items():
        assert set(ledger.produced) == set(range(1, 501))  # seqs start at 1, no gap
        assert sub.status_trail(gw) == [("online", None), ("offline", "shutdown")]
        assert sub.health[gw] and sub.health[gw][-1].last_seq <= 500
        assert ledger.site == f"fleet-site-{(int(gw[-5:]) - 1) // 4 + 1:04d}"
    totals = report.totals()
    assert totals["alarms"] == sum(
        1 for g in report.gateways.values() for r in (g.records or {}).values()
        if r.priority <= Priority.ALARM)
    assert totals["alarms"] > 0


async def test_offline_gateways_send_their_will_then_catch_up_alarms_first(
        mosquitto: Mosquitto) -> None:
    config = FleetConfig(broker=url(mosquitto), gateways=6, rate=60, duration=3.0,
                         batch_interval=0.25, max_batch=50, offline_fraction=0.5,
                         offline_for=1.0, alarm_rate=0.03, seed=11, keep_records=True,
                         confirm_timeout=1.0)
    with Collector(mosquitto.port) as sub:
        report = await run_fleet(config)
        await sub.wait_for_all(report)
    assert not report.all_errors(), report.all_errors()
    assert_nothing_lost(report, sub, values=True)
    dropped = [gw for gw, g in report.gateways.items() if g.drops]
    assert len(dropped) == 3
    for gw in dropped:
        ledger = report.gateways[gw]
        assert sub.status_trail(gw) == [("online", None), ("offline", "lwt"), ("online", None),
                                        ("offline", "shutdown")]
        lwt_at, will, retained = sub.statuses[gw][1]
        assert will.reason == "lwt" and retained  # the retained last will
        (catchup,) = ledger.catchups
        # The uplink's own link_fault (raised at the drop, cleared at return) is in it too.
        assert catchup.alarms >= 2 and len(catchup.backlog) > catchup.alarms
        # The backlog as it arrived after the will: fire, then alarms, then the rest, each
        # class in seq order; nothing of it missing.
        seen: set[int] = set()
        order = []
        for a in sub.records[gw]:
            if a.index > lwt_at and a.record.seq in catchup.backlog and a.record.seq not in seen:
                seen.add(a.record.seq)
                order.append((a.record.priority, a.record.seq))
        assert len(order) == len(catchup.backlog)
        assert order == sorted(order)
        assert all(p <= Priority.ALARM for p, _ in order[:catchup.alarms])
        assert all(p > Priority.ALARM for p, _ in order[catchup.alarms:])
    for gw in set(report.gateways) - set(dropped):
        assert sub.status_trail(gw) == [("online", None), ("offline", "shutdown")]


async def test_several_hundred_gateways_in_one_process(mosquitto: Mosquitto) -> None:
    config = FleetConfig(broker=url(mosquitto), gateways=300, records=9000, rate=10,
                         batch_interval=0.5, seed=5)
    with Collector(mosquitto.port) as sub:
        report = await run_fleet(config)
        await sub.wait_for_all(report)
    assert report.ok, report.to_json()["errors"]
    assert len(report.gateways) == 300 and report.produced == 9000
    assert_nothing_lost(report, sub)
    assert {len(sub.seqs(gw)) for gw in report.gateways} == {30}


async def test_tls_with_per_gateway_passwords(tmp_path: Path) -> None:
    users = {f"fleet-{i:05d}": f"pw-{i}-secret" for i in range(1, 9)}
    users["collector"] = "collector-pw"
    users["fleet-00004"] = "not-what-the-template-gives"
    with Mosquitto(tmp_path / "b", users=users, tls=True) as broker:
        assert broker.ca is not None and broker.tls_port is not None
        config = FleetConfig(broker=f"mqtts://127.0.0.1:{broker.tls_port}", ca=broker.ca.cert,
                             username="{gateway}", password="pw-{index}-secret", gateways=8,
                             records=800, rate=100, batch_interval=0.2)
        with Collector(broker.port, username="collector", password="collector-pw") as sub:
            report = await run_fleet(config)
            await sub.wait_for_all(report)
    refused = report.gateways["fleet-00004"]
    # Mosquitto 2.0 answers a wrong password with CONNACK 0x87 "Not authorized" (not 0x86).
    assert refused.errors == {"connack: Not authorized": 1}
    assert refused.connects == 0 and not refused.delivered
    assert not report.ok and set(report.lost()) == {"fleet-00004"}
    for gw, ledger in report.gateways.items():
        if gw != "fleet-00004":
            assert not ledger.errors and len(ledger.delivered) == 100
            assert sub.seqs(gw) == set(ledger.produced)


async def test_a_publish_the_acl_forbids_is_an_error_not_a_delivery(tmp_path: Path) -> None:
    acl = ("pattern write firegate/v1/%u/status\n"
           "pattern write firegate/v1/%u/health\n"
           "user fleet-00001\ntopic write firegate/v1/fleet-00001/records\n")
    users = {"fleet-00001": "pw", "fleet-00002": "pw"}
    with Mosquitto(tmp_path / "b", users=users, acl=acl) as broker:
        # Nobody confirms here (and the ACL lets no gateway read stored): the PUBACK deletes.
        config = FleetConfig(broker=url(broker), username="{gateway}", password="pw",
                             gateways=2, records=200, rate=100, batch_interval=0.2,
                             delete_on="puback")
        report = await run_fleet(config)
    allowed, refused = report.gateways["fleet-00001"], report.gateways["fleet-00002"]
    assert not allowed.errors and len(allowed.delivered) == 100
    # The first refused batch stops the gateway; what it produces later stays missing.
    assert refused.rejected and set(refused.rejected) < set(refused.produced)
    assert not refused.delivered and set(refused.missing) == set(refused.produced)
    assert refused.errors == {"puback records: Not authorized": 1}
    assert report.to_json()["errors"] == {"puback records: Not authorized": 1}


async def test_mqtt_311(mosquitto: Mosquitto) -> None:
    config = FleetConfig(broker=url(mosquitto), mqtt="3.1.1", gateways=5, records=500,
                         rate=100, batch_interval=0.2, offline_fraction=0.2, offline_for=0.5,
                         confirm_timeout=1.0)
    with Collector(mosquitto.port) as sub:
        report = await run_fleet(config)
        await sub.wait_for_all(report)
    assert report.ok, report.to_json()["errors"]
    assert_nothing_lost(report, sub)
    (dropped,) = [gw for gw, g in report.gateways.items() if g.drops]
    assert ("offline", "lwt") in sub.status_trail(dropped)


async def test_a_broker_restart_is_survived(mosquitto: Mosquitto) -> None:
    """An unplanned loss: every gateway reconnects with backoff and re-sends what was not
    acknowledged; the ledger says so, and a subscriber with a persistent session (which
    Mosquitto keeps over the restart) misses nothing and sees twice only what was re-sent."""
    config = FleetConfig(broker=url(mosquitto), gateways=10, rate=200, duration=2.5,
                         batch_interval=0.1, max_batch=20, seed=2, keep_records=True,
                         confirm_timeout=1.0)
    watch = Watch()
    with Collector(mosquitto.port, persistent=True) as sub:
        task = asyncio.create_task(run_fleet(config, progress=watch, progress_interval=0.05))
        # mid-run: every gateway online and a fifth of the ~500 records delivered
        await watch.until(task, "records flowing from every gateway",
                          lambda p: p.online == p.gateways and p.delivered >= 100)
        mosquitto.restart()  # SIGTERM (the session and its queue are saved), same port
        report = await task
        await sub.wait_for_all(report)
    assert not report.lost(), report.lost()
    assert_nothing_lost(report, sub, values=True)
    errors = report.all_errors()
    assert set(errors) == {"connection lost"} and errors["connection lost"] == 10
    assert all(g.lost == 1 and g.connects == 2 for g in report.gateways.values())


async def test_records_in_flight_at_a_drop_are_sent_again_and_said_so(
        mosquitto: Mosquitto) -> None:
    """The broker hangs (SIGSTOP) while every gateway drops: the PUBACKs of the messages in
    flight never come, so the gateways re-send them after their return. The hung broker still
    had those messages in its socket buffers and forwards them when it resumes, so the
    subscriber sees them twice - and only those: the ledger lists them as re-sent."""
    assert mosquitto.proc is not None
    config = FleetConfig(broker=url(mosquitto), gateways=4, rate=200, duration=2.5,
                         batch_interval=0.1, max_batch=20, offline_fraction=1.0,
                         offline_for=1.0, seed=8, keep_records=True, confirm_timeout=1.0)
    watch = Watch()
    with Collector(mosquitto.port) as sub:
        task = asyncio.create_task(run_fleet(config, progress=watch, progress_interval=0.05))
        # Hung while all are online and sending (the drops are due at 0.5-1.5 s of the run) ...
        await watch.until(task, "every gateway online and sending",
                          lambda p: p.online == p.gateways and p.delivered > 0)
        mosquitto.proc.send_signal(signal.SIGSTOP)  # by PID: the broker this test started
        try:
            # ... until every gateway has dropped (none can come back: the broker is hung)
            await watch.until(task, "every gateway dropped", lambda p: p.online == 0)
        finally:
            mosquitto.proc.send_signal(signal.SIGCONT)
        report = await task
        await sub.wait_for_all(report)
    assert report.ok, report.to_json()["errors"]
    assert all(g.drops == 1 and g.resent for g in report.gateways.values())
    assert_nothing_lost(report, sub, values=True)
    assert any(sub.duplicates(gw) for gw in report.gateways)


async def test_unreachable_broker_is_one_clear_error() -> None:
    from tests.infra.ports import free_port

    port = free_port()
    with pytest.raises(FleetError, match=rf"cannot reach the broker at mqtt://127.0.0.1:{port}"
                                         r": connection refused"):
        await run_fleet(FleetConfig(broker=f"mqtt://127.0.0.1:{port}", gateways=3))


def test_bad_broker_urls_are_refused_before_anything_runs() -> None:
    for bad, why in [("127.0.0.1:1883", "expected mqtt://HOST"),
                     ("tcp://127.0.0.1", "scheme 'tcp' unknown"),
                     ("mqtt://127.0.0.1:0", "port must be 1..65535"),
                     ("mqtt://127.0.0.1:70000", "port must be 1..65535"),
                     ("mqtt://u:p@127.0.0.1", "--username/--password"),
                     ("mqtt://127.0.0.1/x", "no path"),
                     ("mqtt://:1883", "no host")]:
        with pytest.raises(ConfigError, match=why) as info:
            FleetConfig(broker=bad)
        assert info.value.key == "broker"


async def test_the_same_seed_gives_the_same_records_and_drops(mosquitto: Mosquitto) -> None:
    def content(report: FleetReport) -> dict[str, list[tuple[object, ...]]]:
        # Everything but the receive and panel times, which come from the clock.
        return {gw: [(r.seq, r.source, type(r), getattr(r, "value", None),
                      getattr(r, "type", None), getattr(r, "active", None))
                     for _, r in sorted((g.records or {}).items())]
                for gw, g in report.gateways.items()}

    config = FleetConfig(broker=url(mosquitto), gateways=5, records=1500, rate=300,
                         batch_interval=0.2, alarm_rate=0.02, offline_fraction=0.4,
                         offline_for=0.3, seed=42, keep_records=True, delete_on="puback")
    first, second = await run_fleet(config), await run_fleet(config)
    assert first.ok and second.ok
    # The same records, but not the same store: each run's gateways have new epochs, so a
    # collector takes the second run's seqs 1, 2, 3... as new records, not as repeats.
    epochs = [{g.epoch for g in r.gateways.values()} for r in (first, second)]
    assert len(epochs[0]) == len(epochs[1]) == 5 and not epochs[0] & epochs[1]
    dropped = [sorted(gw for gw, g in r.gateways.items() if g.drops) for r in (first, second)]
    assert dropped[0] == dropped[1] and len(dropped[0]) == 2
    # The device streams are equal; the link_fault events of a drop fall where the clock
    # puts them, so compare the gateways that did not drop exactly.
    a, b = content(first), content(second)
    for gw in set(a) - set(dropped[0]):
        assert a[gw] == b[gw]
