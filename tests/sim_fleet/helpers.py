"""A real collector-side subscriber: paho on its own thread, every message decoded with the wire
contract, every record kept in arrival order, so tests can hold the fleet's ledger against what
actually came out of the broker. Like a real collector it confirms on ``stored`` what it
received (docs/wire-protocol.md, "Stored"), unless told otherwise."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from protocols.wire import (
    Channel,
    Health,
    Record,
    Status,
    Stored,
    WireError,
    collector_subscriptions,
    decode_batch,
    decode_health,
    decode_status,
    encode_stored,
    parse_topic,
    seq_ranges,
    split_ranges,
    topic,
)
from simulators.fleet import FleetReport

WAIT = 30.0  # generous bound for a loaded CI machine; never a timing assertion


@dataclass
class Arrival:
    index: int  # position in the subscriber's arrival order, over all topics
    record: Record
    redelivered: bool = False
    """The broker re-sent this PUBLISH to us (DUP set): our PUBACK for it was not seen, e.g.
    across a broker restart with our persistent session. At-least-once on the broker ->
    subscriber leg, not a gateway re-send."""


@dataclass
class Collector:
    """Subscribed to ``collector_subscriptions()`` before the fleet starts."""

    port: int
    ca: Path | None = None
    username: str | None = None
    password: str | None = None
    persistent: bool = False
    """A session that outlives the connection (and, with persistence, a broker restart)."""
    confirming: bool = True
    """Publish ``stored`` for every batch received, as a collector does after its write."""
    confirm_after: int = 1
    """Confirm a record only when it has arrived this many times (2: every first copy goes
    unconfirmed, so the gateway must send it again after its confirm timeout)."""
    epoch_shift: int = 0
    """XORed into the epoch of every confirmation (1: always another epoch than the batch's)."""
    records: dict[str, list[Arrival]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, list[tuple[int, Status, bool]]] = field(
        default_factory=lambda: defaultdict(list))
    health: dict[str, list[Health]] = field(default_factory=lambda: defaultdict(list))
    epochs: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    """The epochs of the batches received, per gateway."""
    rejects: list[str] = field(default_factory=list)
    count: int = 0
    confirmed: int = 0
    """Records named in the confirmations published."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._index = 0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-collector",
                        protocol=mqtt.MQTTv5)
        if self.ca is not None:
            c.tls_set(ca_certs=str(self.ca), cert_reqs=ssl.CERT_REQUIRED)
        if self.username is not None:
            c.username_pw_set(self.username, self.password)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c

    def __enter__(self) -> Collector:
        if self.persistent:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 300
            self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # floats work
            self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        else:
            self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT), "collector did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        # Retain-as-published: the will arrives with the retain flag it was registered with.
        opts = [(s.filter, SubscribeOptions(qos=s.qos, retainAsPublished=True))
                for s in collector_subscriptions()]
        client.subscribe(opts)

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            gw, channel = parse_topic(msg.topic)
            with self._lock:
                self._index += 1
                if channel is Channel.RECORDS:
                    batch = decode_batch(bytes(msg.payload))
                    assert batch.gateway_id == gw
                    self.epochs[gw].add(batch.epoch)
                    arrived = self.records[gw]
                    for r in batch.records:
                        arrived.append(Arrival(self._index, r, bool(msg.dup)))
                    self.count += len(batch.records)
                    if self.confirming:
                        self._confirm(gw, batch.epoch, [r.seq for r in batch.records])
                elif channel is Channel.STATUS:
                    self.statuses[gw].append((self._index, decode_status(bytes(msg.payload)),
                                              bool(msg.retain)))
                elif channel is Channel.HEALTH:
                    self.health[gw].append(decode_health(bytes(msg.payload)))
        except (WireError, AssertionError) as e:
            self.rejects.append(f"{msg.topic}: {e}")

    def _confirm(self, gw: str, epoch: int, seqs: list[int]) -> None:
        if self.confirm_after > 1:
            times = Counter(a.record.seq for a in self.records[gw])
            seqs = [s for s in seqs if times[s] >= self.confirm_after]
        for part in split_ranges(seq_ranges(seqs)):
            stored = Stored(gw, epoch ^ self.epoch_shift, tuple(part), int(time.time() * 1000),
                            "test-collector")
            self.client.publish(topic(gw, Channel.STORED), encode_stored(stored), qos=1)
            self.confirmed += sum(b - a + 1 for a, b in part)

    def seqs(self, gw: str) -> set[int]:
        with self._lock:
            return {a.record.seq for a in self.records.get(gw, [])}

    def duplicates(self, gw: str) -> set[int]:
        """Seqs that arrived more than once, not counting the broker's re-deliveries to us."""
        with self._lock:
            counts = Counter(a.record.seq for a in self.records.get(gw, [])
                             if not a.redelivered)
        return {s for s, n in counts.items() if n > 1}

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        """Poll until ``predicate`` holds (bounded by WAIT)."""
        deadline = time.monotonic() + WAIT
        while not predicate():
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            await asyncio.sleep(0.05)

    async def wait_for_all(self, report: FleetReport) -> None:
        """Until every acknowledged record of every gateway has arrived here."""
        def complete() -> bool:
            return all(set(g.acked) <= self.seqs(gw) for gw, g in report.gateways.items())
        await self.wait_for(complete, "every acknowledged record at the subscriber")

    def status_trail(self, gw: str) -> list[tuple[str, str | None]]:
        with self._lock:
            return [(s.state.value, s.reason) for _, s, _ in self.statuses.get(gw, [])]


def assert_nothing_lost(report: FleetReport, collector: Collector, *,
                        values: bool = False) -> None:
    """For each gateway: the seqs received equal the seqs produced; a seq arrives twice only
    if the ledger says its batch was re-sent; with ``values``, each record is intact."""
    assert not collector.rejects, collector.rejects[:5]
    for gw, ledger in report.gateways.items():
        assert collector.seqs(gw) == set(ledger.produced), gw
        unexplained = collector.duplicates(gw) - set(ledger.resent)
        assert not unexplained, (gw, sorted(unexplained)[:10])
        assert len(ledger.delivered) == len(ledger.produced), gw
        if values:
            assert ledger.records is not None
            for a in collector.records[gw]:
                assert a.record == ledger.records[a.record.seq], (gw, a.record.seq)
