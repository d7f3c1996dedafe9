"""Parts the uplink tests share: a paho observer, a collector stand-in that stores and
confirms (``stored``), a TCP relay that can hold the broker's answers, and a running uplink
over a real outbox. The relay, observer and collector are tested here too.

The relay is a real TCP hop (like a slow or dead network path), not a mock: it forwards bytes
both ways, parses the PUBLISH packets the gateway sends, and can hold back everything the
broker sends (PUBACKs included) or swallow traffic both ways (a black hole).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.config.uplink import UplinkConfig
from edge.drivers.base import CommandHandler, Counters, LinkBoard
from edge.outbox import Outbox
from edge.uplink import ControlChannel, Forwarder, MqttUplink
from edge.uplink.forwarder import QUEUE_TARGET_S
from protocols.wire import (
    Batch,
    Channel,
    CommandName,
    Health,
    LinkState,
    Status,
    Stored,
    decode_batch,
    decode_status,
    encode_stored,
    seq_ranges,
    split_ranges,
    topic,
)
from tests.infra.mosquitto import Mosquitto

from .helpers import config as outbox_config

GW = "gw-test"
SITE = "site-1"
VERSION = "0.1.0-test"
WAIT = 20.0  # generous: a loaded 2-core machine; never a timing assertion


async def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` until true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


# -- the observer: what reached the broker -------------------------------------------------


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool
    at: float


class Observer:
    """A paho subscriber (its own thread) recording everything under ``firegate/v1/#``.

    ``persistent=True`` keeps a broker-side session (clean_session off, QoS 1), so messages
    published while the observer is cut off by a broker restart are queued for it."""

    def __init__(self, port: int, *, client_id: str = "observer", persistent: bool = False,
                 username: str | None = None, password: str | None = None,
                 topic: str = "firegate/v1/#") -> None:
        self.messages: list[Seen] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv311, clean_session=not persistent)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        # Whatever is published before the broker has our SUBSCRIBE is not ours to see: wait
        # for the SUBACK, or a test publishing at once can miss its first batches.
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(WAIT):
            self.close()
            raise AssertionError(f"observer {client_id!r}: no SUBACK from the broker in {WAIT} s")

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Seen(msg.topic, bytes(msg.payload), bool(msg.retain),
                                      time.monotonic()))

    def seen(self, channel: str, gw: str = GW) -> list[Seen]:
        name = f"firegate/v1/{gw}/{channel}"
        with self._lock:
            return [m for m in self.messages if m.topic == name]

    def batches(self, gw: str = GW) -> list[Batch]:
        return [decode_batch(m.payload) for m in self.seen("records", gw)]

    def seqs(self, gw: str = GW) -> list[int]:
        """Seqs in arrival order (with duplicates, if any)."""
        return [r.seq for b in self.batches(gw) for r in b.records]

    def statuses(self, gw: str = GW) -> list[Status]:
        return [decode_status(m.payload) for m in self.seen("status", gw)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Collector:
    """Plays the firegate collector: a paho subscriber (its own thread) to every gateway's
    records that stores each batch's seqs and then, as the collector does after each write,
    publishes them to the gateway's ``stored`` topic (QoS 1).

    ``confirming = False`` stores without confirming (a collector that never says so).
    ``persistent=True`` keeps a broker-side session (clean_session off): records published
    while it is away are queued for it by the broker - in the broker's memory until its
    next save. ``disconnect()`` / ``connect()`` take it away and back."""

    def __init__(self, port: int, *, client_id: str = "collector", persistent: bool = False,
                 confirming: bool = True) -> None:
        self.port = port
        self.confirming = confirming
        self._stored: dict[tuple[str, int], set[int]] = defaultdict(set)
        self.arrivals: list[tuple[float, list[int]]] = []
        """(monotonic time, seqs in the batch's order) of every batch received."""
        self.confirmations = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv311, clean_session=not persistent)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe("firegate/v1/+/records", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.reconnect_delay_set(1, 1)
        self.connect()

    def connect(self) -> None:
        """Connect and wait for the SUBACK (from the broker: it has our subscription)."""
        self.subscribed.clear()
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(WAIT):
            raise AssertionError(f"collector: no SUBACK from the broker in {WAIT} s")

    def disconnect(self) -> None:
        """Say goodbye (a persistent session stays at the broker); ``connect`` comes back."""
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        batch = decode_batch(bytes(msg.payload))
        seqs = [r.seq for r in batch.records]
        with self._lock:
            self._stored[(batch.gateway_id, batch.epoch)].update(seqs)
            self.arrivals.append((time.monotonic(), seqs))
            confirming = self.confirming
        if not confirming:
            return
        for ranges in split_ranges(seq_ranges(seqs)):
            stored = Stored(batch.gateway_id, batch.epoch, tuple(ranges),
                            int(time.time() * 1000), "test-collector")
            self.client.publish(topic(batch.gateway_id, Channel.STORED), encode_stored(stored),
                                qos=1)
            with self._lock:
                self.confirmations += 1

    @property
    def batches(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def seqs(self, gw: str = GW, epoch: int | None = None) -> set[int]:
        """Seqs stored for ``gw`` (of one epoch, or of all)."""
        with self._lock:
            return {s for (g, e), seqs in self._stored.items()
                    if g == gw and (epoch is None or e == epoch) for s in seqs}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def retained_status(port: int, gw: str = GW) -> Status:
    """The retained status a collector starting now would get."""
    obs = Observer(port, client_id="late-observer", topic=f"firegate/v1/{gw}/status")
    try:
        await until(lambda: bool(obs.seen("status", gw)), "the retained status")
        first = obs.seen("status", gw)[0]
        assert first.retain
        return decode_status(first.payload)
    finally:
        obs.close()


# -- the relay: a network path we can stall -----------------------------------------------


@dataclass
class Published:
    topic: str
    payload: bytes


class _PacketReader:
    """Splits the gateway's byte stream into MQTT packets; keeps PUBLISH topic + payload."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.v5 = False

    def feed(self, data: bytes) -> list[Published]:
        self.buf += data
        out: list[Published] = []
        while True:
            header = self._header()
            if header is None:
                return out
            start, length = header
            if len(self.buf) < start + length:
                return out
            kind, body = self.buf[0] >> 4, bytes(self.buf[start:start + length])
            qos = (self.buf[0] >> 1) & 3
            del self.buf[:start + length]
            if kind == 1:  # CONNECT: protocol level after the protocol name
                self.v5 = body[6] == 5
            elif kind == 3:
                out.append(self._publish(body, qos))

    def _header(self) -> tuple[int, int] | None:
        length, mult = 0, 1
        for i in range(1, 5):
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                return i + 1, length
        raise ValueError("bad remaining length")

    def _publish(self, body: bytes, qos: int) -> Published:
        n = int.from_bytes(body[:2], "big")
        name = body[2:2 + n].decode()
        pos = 2 + n + (2 if qos else 0)
        if self.v5:
            plen, mult = 0, 1
            while True:
                b = body[pos]
                pos += 1
                plen += (b & 0x7F) * mult
                mult *= 128
                if not b & 0x80:
                    break
            pos += plen
        return Published(name, body[pos:])


@dataclass
class Relay:
    """127.0.0.1:``port`` -> the broker. ``hold()`` stops the broker -> gateway direction
    (PUBACKs wait in the kernel), ``release()`` lets it flow; ``black_hole()`` drops bytes
    both ways without closing anything, like a dead path; ``rate`` paces the gateway's
    bytes like a slow uplink."""

    target_port: int
    rate: float | None = None  # bytes/s gateway -> broker, like a slow link; None: no limit
    port: int = 0
    published: list[Published] = field(default_factory=list)
    _open: asyncio.Event = field(default_factory=asyncio.Event)
    _black_hole: bool = False
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> Relay:
        self._open.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def records(self, gw: str = GW) -> list[Batch]:
        return [decode_batch(p.payload) for p in self.published
                if p.topic == f"firegate/v1/{gw}/records"]

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def black_hole(self, on: bool = True) -> None:
        self._black_hole = on

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for coro in (self._pump(reader, b_writer, _PacketReader()),
                     self._pump(b_reader, writer, None)):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    packets: _PacketReader | None) -> None:
        paced = packets is not None and self.rate is not None
        try:
            while data := await reader.read(8192 if paced else 65536):
                if packets is None:
                    await self._open.wait()
                if self._black_hole:
                    continue
                if paced and self.rate is not None:
                    await asyncio.sleep(len(data) / self.rate)
                if packets is not None:
                    self.published.extend(packets.feed(data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- a running uplink over a real outbox --------------------------------------------------


def uplink_config(port: int, **kw: object) -> UplinkConfig:
    """Test timings: fast back-off, short timeouts."""
    kw.setdefault("reconnect_min_s", 0.2)
    kw.setdefault("reconnect_max_s", 1.0)
    kw.setdefault("connect_timeout_s", 5.0)
    kw.setdefault("keepalive_s", 10)
    return UplinkConfig("127.0.0.1", port, **kw)  # type: ignore[arg-type]


@dataclass
class Rig:
    outbox: Outbox
    uplink: MqttUplink
    forwarder: Forwarder
    control: ControlChannel
    links: LinkBoard
    counters: Counters
    task: asyncio.Task[None]

    @property
    def up(self) -> bool:
        info = self.links.get("uplink")
        return info is not None and info.state is LinkState.UP

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def running(tmp_path: Path, config: UplinkConfig, *,
                  handlers: Mapping[CommandName, CommandHandler] | None = None,
                  health: Callable[[], object] | None = None,
                  wait_up: bool = True, queue_target_s: float = QUEUE_TARGET_S
                  ) -> AsyncIterator[Rig]:
    """Outbox + uplink (forwarder and control channel) running until the block ends."""
    links, counters = LinkBoard(), Counters()
    async with Outbox(outbox_config(tmp_path)) as outbox:

        async def default_health() -> Health:
            stats = await outbox.stats()
            return Health(gateway_id=GW, ts_ms=int(time.time() * 1000), uptime_s=1.0,
                          version=VERSION, outbox_depth=stats.total_depth,
                          links={k: v.state for k, v in links.snapshot().items()},
                          last_seq=stats.last_seq, epoch=stats.epoch)

        uplink = MqttUplink(config, gateway_id=GW, version=VERSION, site=SITE, links=links,
                            counters=counters)
        fwd = Forwarder(outbox, config, gateway_id=GW, site=SITE, counters=counters,
                        queue_target_s=queue_target_s)
        control = ControlChannel(gateway_id=GW, handlers=handlers or {},
                                 health=health or default_health,  # type: ignore[arg-type]
                                 health_interval_s=config.health_interval_s, counters=counters,
                                 outbox=outbox)
        task = asyncio.create_task(uplink.run(fwd.serve, control.serve))
        rig = Rig(outbox, uplink, fwd, control, links, counters, task)
        try:
            if wait_up:
                await until(lambda: rig.up, "the uplink to connect")
            yield rig
        finally:
            await rig.stop()


# -- tests of the parts above ----------------------------------------------------------------


async def test_relay_forwards_both_ways_parses_publishes_and_holds(mosquitto: Mosquitto) -> None:
    relay = await Relay(mosquitto.port).start()
    obs = Observer(mosquitto.port)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=paho.MQTTv5)
    acked: list[int] = []
    pub.on_publish = lambda _c, _u, mid, _rc, _p: acked.append(mid)
    try:
        await until(obs.client.is_connected, "the observer")
        await asyncio.to_thread(pub.connect, "127.0.0.1", relay.port)
        pub.loop_start()
        await until(pub.is_connected, "a client through the relay")
        relay.hold()
        pub.publish("firegate/v1/gw-test/health", b"one", qos=1)
        await until(lambda: bool(obs.seen("health")), "the message at the broker")
        await asyncio.sleep(0.3)
        assert acked == []  # the broker answered, the relay holds the PUBACK back
        relay.release()
        await until(lambda: acked == [1], "the PUBACK after release")
        assert [(p.topic, p.payload) for p in relay.published] == [
            ("firegate/v1/gw-test/health", b"one")]
    finally:
        pub.disconnect()
        pub.loop_stop()
        obs.close()
        await relay.close()


async def test_the_collector_stand_in_stores_and_confirms_each_batch(
        mosquitto: Mosquitto) -> None:
    from protocols.wire import decode_stored, encode_batch

    from .helpers import T0, measurement

    collector = Collector(mosquitto.port)
    gateway = Observer(mosquitto.port, client_id="gateway-side", topic=f"firegate/v1/{GW}/stored")
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=paho.MQTTv5)
    try:
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        records = tuple(measurement(i).with_seq(s) for i, s in enumerate((9, 5, 6, 7)))
        batch = Batch(GW, None, T0, records, epoch=0x1234)
        pub.publish(f"firegate/v1/{GW}/records", encode_batch(batch), qos=1).wait_for_publish(5)
        await until(lambda: len(gateway.seen("stored")) == 1, "the confirmation")
        stored = decode_stored(gateway.seen("stored")[0].payload)
        assert (stored.gateway_id, stored.epoch, stored.ranges) == (GW, 0x1234, ((5, 7), (9, 9)))
        assert collector.seqs(epoch=0x1234) == {5, 6, 7, 9} and collector.seqs(epoch=1) == set()
        assert collector.arrivals[0][1] == [9, 5, 6, 7]
        collector.confirming = False
        pub.publish(f"firegate/v1/{GW}/records", encode_batch(batch), qos=1).wait_for_publish(5)
        await until(lambda: collector.batches == 2, "the second copy")
        assert len(gateway.seen("stored")) == 1
    finally:
        pub.disconnect()
        pub.loop_stop()
        gateway.close()
        collector.close()
