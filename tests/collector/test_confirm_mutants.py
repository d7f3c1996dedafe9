"""collector/confirm.py at unit level, for the mutation run (issue 19): what ``stored`` says and
to whom, and when a ``resend`` is asked and what its answer settles. The collector's own MQTT
client (:class:`collector.ingest.MqttIngest`) publishes to a real Mosquitto, a paho subscriber
plays the gateway; the gap ledger is a real :class:`collector.ledger.SeqLedger` on disk.
Clocks are plain ``now_ms`` arguments."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import MqttConfig
from collector.confirm import Confirmer, ResendDesk
from collector.ingest import Inbound, Kind, MqttIngest, Prepared, prepare
from collector.ledger import Gap, SeqLedger
from collector.metrics import Metrics
from collector.uitd.pipeline import UitdInbound
from protocols.wire import (
    Bus,
    CommandAck,
    JsonValue,
    Measurement,
    Quantity,
    Source,
    Stored,
    decode_command,
    decode_stored,
    encode_ack,
    encode_batches,
)
from tests.infra.mosquitto import Mosquitto

from .conftest import wait_until

NOW = 1_718_000_000_000
EPOCH = 0x0123456789ABCDEF
SRC = Source("modbus/bus1/3/pressure", Bus.MODBUS)


def inbound(gw: str, channel: str, payload: bytes) -> Inbound:
    return Inbound(f"firegate/v1/{gw}/{channel}", payload, 1, 1, False, 1, NOW, 0)


def batch(gw: str, *seqs: int, epoch: int = EPOCH) -> Prepared:
    recs = [Measurement(source=SRC, quantity=Quantity.PRESSURE, value=0.3, receive_ms=NOW + s,
                        unit="MPa", seq=s) for s in seqs]
    (payload,) = encode_batches(gw, "site-m", NOW, recs, epoch=epoch)
    item = prepare(inbound(gw, "records", payload))
    assert item.kind is Kind.BATCH
    return item


@dataclass
class Heard:
    """The gateways' end: every ``stored`` and ``cmd`` message, by topic."""

    client: mqtt.Client
    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def stored(self) -> list[tuple[str, Stored]]:
        with self.lock:
            return [(t, decode_stored(p)) for t, p in self.messages if t.endswith("/stored")]

    def commands(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return [(t, p) for t, p in self.messages if t.endswith("/cmd")]

    def marker(self, link: MqttIngest) -> None:
        """A positive control: a marker published after everything else has arrived, so what
        was not heard before it was never sent (the broker keeps one publisher's order)."""
        assert link.publish("firegate/v1/zz-marker/stored", b"{}")
        wait_until(lambda: any(t == "firegate/v1/zz-marker/stored" for t, _ in self.messages),
                   "the marker")
        with self.lock:
            self.messages[:] = [(t, p) for t, p in self.messages if "zz-marker" not in t]


@pytest.fixture
def heard(mosquitto: Mosquitto) -> Iterator[Heard]:
    got = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-listener", protocol=mqtt.MQTTv5)
    h = Heard(c)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with h.lock:
            h.messages.append((msg.topic, bytes(msg.payload)))

    c.on_message = on_message
    c.on_subscribe = lambda *_: got.set()
    c.connect("127.0.0.1", mosquitto.port)
    c.subscribe([("firegate/v1/+/stored", 1), ("firegate/v1/+/cmd", 1)])
    c.loop_start()
    assert got.wait(30)
    try:
        yield h
    finally:
        c.disconnect()
        c.loop_stop()


@pytest.fixture
def link(mosquitto: Mosquitto) -> Iterator[MqttIngest]:
    ingest = MqttIngest(MqttConfig(port=mosquitto.port, client_id="coll-mut"), queue.Queue(),
                        Metrics())
    ingest.start()
    try:
        wait_until(lambda: ingest.connected, "the collector's connection")
        yield ingest
    finally:
        ingest.close()


def test_stored_names_every_record_of_its_gateway_and_epoch_and_no_one_else(
        heard: Heard, link: MqttIngest) -> None:
    metrics = Metrics()
    conf = Confirmer(link.publish, "coll-7", metrics)
    bad = batch("gw-a", 8, 9)
    faulty = prepare(inbound("gw-a", "records", bad.inbound.payload.replace(b'"MPa"', b"7", 1)))
    assert faulty.kind is Kind.BATCH and [f.seq for f in faulty.faults] == [8]
    uitd = batch("gw-u", 40)
    uitd.inbound = UitdInbound(*(getattr(uitd.inbound, n) for n in Inbound.__slots__))
    status = prepare(inbound("gw-s", "status", b""))
    group = [batch("gw-a", 1, 2, 3), batch("gw-a", 5), faulty, batch("gw-b", 7, epoch=0),
             batch("gw-a", 20, epoch=5), uitd, status]
    conf.confirm(group, NOW + 1)
    wait_until(lambda: len(heard.stored()) == 3, "three confirmations")
    heard.marker(link)
    got = {(t, s.epoch): s for t, s in heard.stored()}
    assert set(got) == {("firegate/v1/gw-a/stored", EPOCH), ("firegate/v1/gw-b/stored", 0),
                        ("firegate/v1/gw-a/stored", 5)}
    a = got[("firegate/v1/gw-a/stored", EPOCH)]
    assert (a.gateway_id, a.ranges, a.ts_ms, a.collector) == (
        "gw-a", ((1, 3), (5, 5), (8, 9)), NOW + 1, "coll-7")
    assert got[("firegate/v1/gw-b/stored", 0)].ranges == ((7, 7),)
    assert got[("firegate/v1/gw-a/stored", 5)].ranges == ((20, 20),)
    assert metrics.confirmations.value("sent") == 3
    assert metrics.confirmations.value("not_connected") == 0


def test_a_batch_of_only_bad_records_is_confirmed_and_nothing_empty_is_sent(
        heard: Heard, link: MqttIngest) -> None:
    good = batch("gw-f", 4)
    allbad = prepare(inbound("gw-f", "records", good.inbound.payload.replace(b'"MPa"', b"7", 1)))
    assert allbad.batch is None and [f.seq for f in allbad.faults] == [4]
    empty = Prepared(allbad.inbound, Kind.BATCH, "gw-e", epoch=EPOCH)
    metrics = Metrics()
    Confirmer(link.publish, "c", metrics).confirm([empty, allbad], NOW)
    wait_until(lambda: len(heard.stored()) == 1, "the confirmation")
    heard.marker(link)
    ((t, s),) = heard.stored()
    assert (t, s.ranges) == ("firegate/v1/gw-f/stored", ((4, 4),))
    assert metrics.confirmations.value("sent") == 1


def test_a_confirmation_not_sent_is_counted_as_such() -> None:
    idle = MqttIngest(MqttConfig(port=1, client_id="never"), queue.Queue(), Metrics())
    metrics = Metrics()
    Confirmer(idle.publish, "c", metrics).confirm([batch("gw-a", 1), batch("gw-b", 2)], NOW)
    assert metrics.confirmations.value("not_connected") == 2
    assert metrics.confirmations.value("sent") == 0


def gap(gw: str, first: int, last: int, since: int, epoch: int = EPOCH) -> Gap:
    return Gap(gw, first, last, since, epoch)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SeqLedger]:
    led = SeqLedger(tmp_path / "ledger.sqlite")
    try:
        yield led
    finally:
        led.close()


def test_resend_is_asked_after_its_wait_again_after_its_interval_and_at_most_n_a_tick(
        heard: Heard, link: MqttIngest, ledger: SeqLedger) -> None:
    metrics = Metrics()
    desk = ResendDesk(link.publish, ledger, metrics, after_s=2.0, every_s=10.0, max_per_tick=2)
    g1, g2 = gap("gw-r", 4, 6, NOW), gap("gw-q", 10, 10, NOW, epoch=0)
    assert desk.request([g1, g2], NOW + 1_999) == 0  # younger than after_s
    assert desk.request([g1, g2], NOW + 2_000) == 2  # exactly after_s: asked
    wait_until(lambda: len(heard.commands()) == 2, "two requests")
    (t1, p1), (t2, p2) = heard.commands()
    c1, c2 = decode_command(p1), decode_command(p2)
    assert (t1, dict(c1.args)) == ("firegate/v1/gw-r/cmd", {"first": 4, "last": 6,
                                                            "ep": f"{EPOCH:016x}"})
    assert (t2, dict(c2.args)) == ("firegate/v1/gw-q/cmd", {"first": 10, "last": 10})
    assert c1.ttl_s == 300 and c1.id != c2.id and c1.ts_ms == NOW + 2_000
    assert metrics.resend_requests.value() == 2
    assert desk.request([g1, g2], NOW + 11_999) == 0  # within every_s
    assert desk.request([g1, g2], NOW + 12_000) == 2  # exactly every_s later
    g3 = gap("gw-p", 1, 1, NOW)
    assert desk.request([g3, g1, g2], NOW + 30_000) == 2  # max_per_tick
    assert desk.request([g3, g1, g2], NOW + 30_001) == 1  # the one left over
    # A gap closed and open again is asked as new (its old time is forgotten).
    desk.request([], NOW + 30_002)
    assert desk.request([g1], NOW + 30_003) == 1


def test_an_answer_settles_only_what_was_asked_of_whom_it_was_asked(
        heard: Heard, link: MqttIngest, ledger: SeqLedger) -> None:
    ledger.commit("gw-r", [1, 2, 3, 9], NOW, EPOCH)
    assert [(g.first, g.last) for g in ledger.gaps("gw-r")] == [(4, 8)]
    metrics = Metrics()
    desk = ResendDesk(link.publish, ledger, metrics, after_s=0, every_s=1)
    now = [NOW]

    def ask() -> str:
        """A fresh request for the gap as it stands; its command id."""
        before = len(heard.commands())
        now[0] += 1_000
        assert desk.request(ledger.gaps("gw-r"), now[0]) == 1
        wait_until(lambda: len(heard.commands()) == before + 1, "the request")
        return decode_command(heard.commands()[-1][1]).id

    def answer(ident: str, gw: str, ok: bool, missing: JsonValue) -> None:
        ack = CommandAck(ident, ok, NOW, result={"missing": missing} if ok else None,
                         error=None if ok else "busy")
        desk.answer(prepare(inbound(gw, "cmd/ack", encode_ack(ack))), NOW + 5)

    def unsettled() -> None:
        assert [(g.first, g.last) for g in ledger.gaps("gw-r")] == [(4, 8)]
        assert metrics.records_lost.value() == 0

    answer(ask(), "gw-r", False, None)  # could not resend: nothing settled
    unsettled()
    cid = ask()
    answer("resend-999-1", "gw-r", True, [[5, 5]])  # not ours
    unsettled()
    answer(cid, "gw-r", True, [[4, 8]])  # ours: 4..8 gone
    assert metrics.records_lost.value() == 5 and ledger.gaps("gw-r") == []
    answer(cid, "gw-r", True, [[4, 8]])  # an answer counts once
    assert metrics.records_lost.value() == 5


def test_an_answer_from_another_gateway_settles_nothing(
        heard: Heard, link: MqttIngest, ledger: SeqLedger) -> None:
    ledger.commit("gw-r", [1, 9], NOW, EPOCH)
    metrics = Metrics()
    desk = ResendDesk(link.publish, ledger, metrics, after_s=0, every_s=60)
    assert desk.request(ledger.gaps("gw-r"), NOW) == 1
    wait_until(lambda: len(heard.commands()) == 1, "the request")
    cid = decode_command(heard.commands()[0][1]).id
    ack = CommandAck(cid, True, NOW, result={"missing": [[2, 8]]})
    desk.answer(prepare(inbound("gw-x", "cmd/ack", encode_ack(ack))), NOW + 5)
    assert metrics.records_lost.value() == 0
    assert [(g.first, g.last) for g in ledger.gaps("gw-r")] == [(2, 8)]
    # The foreign answer (a guessed id) did not close our request: the real gateway's
    # answer to the same id still settles what it no longer has.
    desk.answer(prepare(inbound("gw-r", "cmd/ack", encode_ack(ack))), NOW + 6)
    assert metrics.records_lost.value() == 7
    assert ledger.gaps("gw-r") == []


def test_an_answer_is_clipped_to_the_request_and_bad_pairs_are_passed_over(
        heard: Heard, link: MqttIngest, ledger: SeqLedger) -> None:
    ledger.commit("gw-r", [1, 2, 3, 9], NOW, EPOCH)
    metrics = Metrics()
    desk = ResendDesk(link.publish, ledger, metrics, after_s=0, every_s=60)
    assert desk.request(ledger.gaps("gw-r"), NOW) == 1
    wait_until(lambda: len(heard.commands()) == 1, "the request")
    (_, payload), = heard.commands()
    cid = decode_command(payload).id
    ack = CommandAck(cid, True, NOW, result={
        "missing": [[0, 4], [7, 100], [6], "x", [5, "6"], ["5", 6], [6, 6], [8, 7]]})
    desk.answer(prepare(inbound("gw-r", "cmd/ack", encode_ack(ack))), NOW + 5)
    assert metrics.records_lost.value() == 4  # 4, 6, 7, 8
    assert [(g.epoch, g.first, g.last) for g in ledger.gaps("gw-r")] == [(EPOCH, 5, 5)]


def test_a_request_not_sent_is_not_open(ledger: SeqLedger) -> None:
    idle = MqttIngest(MqttConfig(port=1, client_id="never"), queue.Queue(), Metrics())
    metrics = Metrics()
    desk = ResendDesk(idle.publish, ledger, metrics, after_s=0, every_s=60)
    assert desk.request([gap("gw-r", 1, 1, NOW)], NOW) == 0
    assert metrics.resend_requests.value() == 0


def test_an_item_passed_over_does_not_end_the_group(heard: Heard, link: MqttIngest) -> None:
    metrics = Metrics()
    status = prepare(inbound("gw-s", "status", b""))
    Confirmer(link.publish, "c", metrics).confirm([status, batch("gw-a", 3)], NOW)
    wait_until(lambda: len(heard.stored()) == 1, "the confirmation")
    assert heard.stored()[0][1].ranges == ((3, 3),)


def test_a_refused_answer_settles_nothing_even_with_a_result(
        heard: Heard, link: MqttIngest, ledger: SeqLedger,
        caplog: pytest.LogCaptureFixture) -> None:
    ledger.commit("gw-r", [1, 9], NOW, EPOCH)
    metrics = Metrics()
    desk = ResendDesk(link.publish, ledger, metrics, after_s=0, every_s=60)
    assert desk.request(ledger.gaps("gw-r"), NOW) == 1
    wait_until(lambda: len(heard.commands()) == 1, "the request")
    cid = decode_command(heard.commands()[0][1]).id
    ack = CommandAck(cid, False, NOW, result={"missing": [[2, 8]]}, error="disk gone")
    with caplog.at_level("WARNING", logger="firegate.collector.confirm"):
        desk.answer(prepare(inbound("gw-r", "cmd/ack", encode_ack(ack))), NOW + 5)
    assert metrics.records_lost.value() == 0
    assert [(g.first, g.last) for g in ledger.gaps("gw-r")] == [(2, 8)]
    assert caplog.messages == ["gateway gw-r could not resend 2..8: disk gone"]


def test_a_loss_is_logged_with_whom_how_many_and_where(
        heard: Heard, link: MqttIngest, ledger: SeqLedger,
        caplog: pytest.LogCaptureFixture) -> None:
    ledger.commit("gw-r", [1, 9], NOW, EPOCH)
    metrics = Metrics()
    desk = ResendDesk(link.publish, ledger, metrics, after_s=0, every_s=60)
    assert desk.request(ledger.gaps("gw-r"), NOW) == 1
    wait_until(lambda: len(heard.commands()) == 1, "the request")
    cid = decode_command(heard.commands()[0][1]).id
    ack = CommandAck(cid, True, NOW, result={"missing": [[2, 5]]})
    with caplog.at_level("WARNING", logger="firegate.collector.confirm"):
        desk.answer(prepare(inbound("gw-r", "cmd/ack", encode_ack(ack))), NOW + 5)
    assert caplog.messages == [
        f"gateway gw-r no longer has 4 record(s) of 2..8 (epoch {EPOCH:016x}): lost, counted "
        "in records_lost_total"]


def test_an_open_request_lives_ten_minutes_across_other_requests(
        heard: Heard, link: MqttIngest, ledger: SeqLedger) -> None:
    ledger.commit("gw-r", [1, 9], NOW, EPOCH)
    metrics = Metrics()
    desk = ResendDesk(link.publish, ledger, metrics, after_s=0, every_s=3_600)
    assert desk.request(ledger.gaps("gw-r"), NOW) == 1
    wait_until(lambda: len(heard.commands()) == 1, "the request")
    cid = decode_command(heard.commands()[0][1]).id
    ack = prepare(inbound("gw-r", "cmd/ack", encode_ack(
        CommandAck(cid, True, NOW, result={"missing": [[2, 2]]}))))
    desk.request(ledger.gaps("gw-r"), NOW + 599_999)  # still open: asked 599.999 s ago
    desk.answer(ack, NOW + 600_500)
    assert metrics.records_lost.value() == 1
    # A second request; the first is forgotten at exactly 600 s.
    desk2 = ResendDesk(link.publish, ledger, metrics, after_s=0, every_s=3_600)
    assert desk2.request(ledger.gaps("gw-r"), NOW) == 1
    wait_until(lambda: len(heard.commands()) == 2, "the second request")
    cid2 = decode_command(heard.commands()[1][1]).id
    desk2.request(ledger.gaps("gw-r"), NOW + 600_000)
    desk2.answer(prepare(inbound("gw-r", "cmd/ack", encode_ack(
        CommandAck(cid2, True, NOW, result={"missing": [[3, 3]]})))), NOW + 600_001)
    assert metrics.records_lost.value() == 1


def test_a_gap_that_cannot_be_asked_does_not_stop_the_others(
        heard: Heard, link: MqttIngest, ledger: SeqLedger) -> None:
    desk = ResendDesk(link.publish, ledger, Metrics(), after_s=0, every_s=60)
    far = gap("gw-z", 2**53, 2**53 + 5, NOW)
    assert desk.request([far, gap("gw-r", 2, 3, NOW)], NOW) == 1
    wait_until(lambda: len(heard.commands()) == 1, "the request")
    assert heard.commands()[0][0] == "firegate/v1/gw-r/cmd"


def test_at_most_a_hundred_requests_a_tick_and_ids_differ_across_restarts(
        heard: Heard, link: MqttIngest, ledger: SeqLedger) -> None:
    gaps = [gap(f"gw-{i}", 2, 3, NOW) for i in range(101)]
    assert ResendDesk(link.publish, ledger, Metrics(), after_s=0, every_s=60
                      ).request(gaps, NOW) == 100
    # never asked: asked at once, even on a clock younger than every_s
    assert ResendDesk(link.publish, ledger, Metrics(), after_s=0, every_s=60
                      ).request([gap("gw-0", 2, 3, 0)], 1_000) == 1
    # A restarted collector's first id is not its predecessor's (the counter starts again).
    wait_until(lambda: len(heard.commands()) == 101, "the requests")
    first = decode_command(heard.commands()[0][1]).id
    ResendDesk(link.publish, ledger, Metrics(), after_s=0, every_s=60).request(gaps[:1],
                                                                              NOW + 1_000)
    wait_until(lambda: len(heard.commands()) == 102, "the restarted desk's request")
    assert decode_command(heard.commands()[-1][1]).id != first
