"""The whole collector against a real Mosquitto and the fleet simulator, SQLite store."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from collector.app import Collector
from collector.deadletter import DeadLetters
from collector.ledger import SeqLedger
from collector.points import GATEWAY, RISK, Point, Storable
from collector.sinks.base import Sink, SinkError
from protocols.wire import (
    Batch,
    Bus,
    Event,
    EventType,
    GatewayState,
    Health,
    LinkState,
    Measurement,
    Quantity,
    Source,
    Status,
    WireError,
    WireErrorReason,
    decode_batch,
    decode_batch_partial,
    decode_health,
    decode_status,
    encode_batch,
    encode_batches,
    encode_health,
    encode_status,
)
from simulators.fleet import FleetConfig, run_fleet
from tests.infra.mosquitto import Mosquitto

from .conftest import (
    assert_store_matches,
    async_wait_until,
    config_data,
    running,
    stored_points,
    stored_records,
    wait_until,
    write_config,
)

NOW = 1_718_000_000_000
SRC_OK = Source("modbus/bus1/3/pressure", Bus.MODBUS)


def publisher(port: int, client_id: str = "tester") -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def publish(c: mqtt.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)


async def test_every_fleet_record_stored_once_with_values_and_times(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", mosquitto))
    fleet = FleetConfig(broker=f"mqtt://127.0.0.1:{mosquitto.port}", gateways=16, records=16_000,
                        rate=400, batch_interval=0.2, max_batch=400, alarm_rate=0.01, seed=4,
                        keep_records=True, health_interval=0.5, offline_fraction=0.25,
                        offline_for=0.5)
    with running(cfg) as c:
        report = await run_fleet(fleet)
        assert report.ok, report.to_json()["errors"]
        await async_wait_until(lambda: c.metrics.records_stored.value() >= report.produced,
                               "every record stored")
        await async_wait_until(lambda: all(
            g.state == "offline" and g.reason == "shutdown" for g in c.registry.gateways.values()
        ) and len(c.registry.gateways) == 16, "the shutdown statuses")
        stats = c.ledger.stats()
        assert not c.metrics.dead_letters.values()
    assert_store_matches(report, cfg.sink.sqlite_path)
    assert stats.stored == report.produced and stats.missing == 0
    # Dropped gateways: online, will (lwt), online, shutdown - all stored as fg_gateway points.
    trail: dict[str | None, list[tuple[object, object]]] = {}
    for p in sorted(stored_points(cfg.sink.sqlite_path, GATEWAY), key=lambda p: p.time_ns):
        trail.setdefault(p.tag("gateway"), []).append((p.field("state"), p.field("reason")))
    dropped = [gw for gw, g in report.gateways.items() if g.drops]
    assert len(dropped) == 4
    for gw in dropped:
        assert trail[gw] == [("online", None), ("offline", "lwt"), ("online", None),
                             ("offline", "shutdown")], gw
    # Fire alarms came: some site went red at some point, and the history is stored.
    colours = {p.field("colour") for p in stored_points(cfg.sink.sqlite_path, RISK)}
    assert "red" in colours


def _bad_payloads(seed: int) -> list[tuple[str, bytes, WireErrorReason | None]]:
    """Hand-made bad cases plus random bytes and byte-flipped valid payloads."""
    src = Source("modbus/bus1/3/pressure", Bus.MODBUS)
    good = encode_batch(decode_batch(encode_batches("gw-1", "site-1", NOW, [
        Measurement(source=src, quantity=Quantity.PRESSURE, value=0.3, receive_ms=NOW, unit="MPa",
                    seq=1)])[0]))
    rec = "firegate/v1/gw-1/records"
    cases: list[tuple[str, bytes, WireErrorReason | None]] = [
        (rec, b"", WireErrorReason.NOT_JSON),
        (rec, b"\xff\xfe", WireErrorReason.NOT_UTF8),
        (rec, b"[]", WireErrorReason.NOT_OBJECT),
        (rec, b'{"v":2,"gw":"gw-1","ts":1,"recs":[]}', WireErrorReason.UNSUPPORTED_VERSION),
        (rec, b'{"v":1,"gw":"gw-1","ts":1,"recs":[]}', WireErrorReason.EMPTY_BATCH),
        (rec, good.replace(b'"v":0.3', b'"v":NaN'), WireErrorReason.NOT_FINITE),
        (rec, good.replace(b'"seq":1', b'"seq":0'), WireErrorReason.BAD_VALUE),
        (rec, good.replace(b'"u":"MPa"', b'"u":"psi"'), WireErrorReason.BAD_VALUE),
        (rec, good.replace(b'"ts"', b'"tz"'), WireErrorReason.UNKNOWN_FIELD),
        (rec, b"x" * 131_073, WireErrorReason.TOO_LARGE),
        ("firegate/v1/gw-2/records", good, WireErrorReason.GATEWAY_MISMATCH),
        ("firegate/v1/gw-1/health", b'{"v":1}', WireErrorReason.MISSING_FIELD),
        ("firegate/v1/gw-1/status", b'{"v":1,"gw":"gw-1","state":"up","ts":1}',
         WireErrorReason.BAD_VALUE),
        ("firegate/v1/gw-1/cmd/ack", b'{"v":1,"id":"x","ok":false,"ts":1}',
         WireErrorReason.MISSING_FIELD),
    ]
    rng = random.Random(seed)
    for _ in range(40):
        cases.append((rec, rng.randbytes(rng.randrange(0, 200)), None))
    for _ in range(60):
        b = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        cases.append((rec, bytes(b), None))
    return cases


def _expected_reason(topic: str, payload: bytes) -> str | None:
    try:
        batch = decode_batch(payload)
    except WireError as e:
        return e.reason.value
    return None if batch.gateway_id == topic.split("/")[2] else "gateway_mismatch"


def _faulty_seq(topic: str, payload: bytes) -> int | None:
    """The seq of a record dead-lettered alone (its batch's header is sound), else None."""
    try:
        partial = decode_batch_partial(payload)
    except WireError:
        return None
    if partial.gateway_id != topic.split("/")[2]:
        return None
    return next((f.seq for f in partial.faults if f.seq is not None), None)


async def test_malformed_and_fuzzed_messages_are_dead_lettered_and_consumer_keeps_going(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", mosquitto))
    cases = _bad_payloads(seed=5)
    expected: dict[str, int] = {}
    stored_seqs: set[int] = set()
    accounted: set[int] = set()  # seqs the ledger holds: stored, or dead-lettered alone
    for topic, payload, reason in cases:
        if topic.endswith("/records"):
            want = _expected_reason(topic, payload)  # the contract's decoder is the oracle
            assert reason is None or want == reason.value, (reason, payload[:60])
            if (seq := _faulty_seq(topic, payload)) is not None:
                accounted.add(seq)  # a bad record with a good seq: a dead letter, not a gap
        else:
            assert reason is not None
            want = reason.value
        if want is None:  # a flip that still decodes, under its own gateway: stored once
            seqs = {r.seq for r in decode_batch(payload).records}
            stored_seqs.update(seqs - accounted)
            accounted |= seqs
        else:
            expected[want] = expected.get(want, 0) + 1
    src = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
    fire = Event(source=src, type=EventType.FIRE_ALARM, receive_ms=NOW, seq=99)
    with running(cfg) as c:
        pub = publisher(mosquitto.port)
        for topic, payload, _ in cases:
            publish(pub, topic, payload)
        # ... and after all of that, a good batch is still stored.
        publish(pub, "firegate/v1/gw-1/records", encode_batches("gw-1", "site-1", NOW, [fire])[0])
        total = sum(expected.values())
        wait_until(lambda: sum(c.metrics.dead_letters.values().values()) >= total and
                   99 in stored_records(cfg.sink.sqlite_path).get("gw-1", {}),
                   "dead letters and the good batch")
        pub.disconnect()
        got = {k[0]: int(v) for k, v in c.metrics.dead_letters.values().items()}
    assert got == expected
    letters = DeadLetters(cfg.deadletter_path)
    try:
        assert letters.count_by_reason() == expected
        recent = letters.recent(500)
        assert {d.reason for d in recent} == set(expected)
        mismatch = [d for d in recent if d.reason == "gateway_mismatch"]
        assert mismatch[0].topic == "firegate/v1/gw-2/records" and mismatch[0].path == "gw"
    finally:
        letters.close()
    assert set(stored_records(cfg.sink.sqlite_path)["gw-1"]) == stored_seqs | {99}


async def test_status_health_and_duplicates(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Retained status, health, a redelivered batch: registry, ledger and store agree."""
    cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", mosquitto))
    src = Source("modbus/bus1/3/pressure", Bus.MODBUS)
    records = [Measurement(source=src, quantity=Quantity.PRESSURE, value=0.3 + i / 100,
                           receive_ms=NOW + i, unit="MPa", seq=i) for i in range(1, 11)]
    pub = publisher(mosquitto.port)
    online = Status("gw-7", GatewayState.ONLINE, NOW, version="1.2.3", site="site-9")
    publish(pub, "firegate/v1/gw-7/status", encode_status(online), retain=True)
    with running(cfg) as c:
        batch = encode_batches("gw-7", "site-9", NOW, records[:6])[0]
        publish(pub, "firegate/v1/gw-7/records", batch)
        publish(pub, "firegate/v1/gw-7/records", batch)  # a resend: duplicates
        publish(pub, "firegate/v1/gw-7/records", encode_batches("gw-7", "site-9", NOW,
                                                                records[8:])[0])
        publish(pub, "firegate/v1/gw-7/health", encode_health(Health(
            gateway_id="gw-7", ts_ms=NOW, uptime_s=5.0, version="1.2.3", outbox_depth=3,
            last_seq=12, links={"uplink": LinkState.UP, "modbus/bus1": LinkState.DOWN})))
        wait_until(lambda: c.metrics.records_stored.value() >= 8 and
                   c.metrics.duplicates.value() == 6 and
                   "gw-7" in c.registry.gateways and
                   c.registry.gateways["gw-7"].outbox_depth == 3, "records, health")
        info = c.registry.gateways["gw-7"]
        assert (info.state, info.site, info.version) == ("online", "site-9", "1.2.3")
        assert info.links_down == ["modbus/bus1"] and info.last_seq == 12
        gaps = [(g.first, g.last) for g in c.ledger.gaps("gw-7")]
        assert gaps == [(7, 8), (11, 12)]  # a hole, and a tail announced by health
    pub.disconnect()
    assert stored_records(cfg.sink.sqlite_path)["gw-7"] == {s: 1 for s in
                                                             [1, 2, 3, 4, 5, 6, 9, 10]}
    ledger = SeqLedger(cfg.ledger_path)
    try:
        st = ledger.stats().gateways["gw-7"]
        # The resend may have shared a write group with the original (dropped before the
        # ledger saw it) or come after its commit (dropped by the ledger): counted once either way.
        assert (st.stored, st.announced) == (8, 12) and st.duplicates in (0, 6)
    finally:
        ledger.close()
    health = stored_points(cfg.sink.sqlite_path, "fg_health")
    assert [(p.tag("site"), p.field("outbox_depth")) for p in health] == [("site-9", 3)]
    assert json.loads(json.dumps([p.field("online") for p in
                                  stored_points(cfg.sink.sqlite_path, GATEWAY)])) == [True]


PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=120).map(str.encode),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
        st.sampled_from(["v", "gw", "ts", "recs", "state", "site", "x"]),
        st.one_of(st.integers(-2, 2**54), st.text(max_size=8), st.none(), st.booleans(),
                  st.lists(st.integers(), max_size=3)), max_size=5)),
)


def _contract_refuses(channel: str, payload: bytes) -> bool:
    if channel == "status" and not payload:
        return False  # an empty retained status deletes it: ignored, not refused
    try:
        msg: Batch | Status | Health = (
            decode_batch(payload) if channel == "records" else
            decode_status(payload) if channel == "status" else decode_health(payload))
    except WireError:
        return True
    return msg.gateway_id != "gw-f"


def test_hypothesis_payloads_through_the_broker(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Hypothesis-generated payloads on every channel, published for real: each one refused by
    the contract is dead-lettered (with a contract reason), and the consumer keeps going."""
    cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", mosquitto))
    reasons = {r.value for r in WireErrorReason}
    with running(cfg) as c:
        pub = publisher(mosquitto.port)
        expected = 0

        @settings(max_examples=6, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(st.lists(st.tuples(st.sampled_from(["records", "status", "health"]), PAYLOADS),
                        min_size=10, max_size=30))
        def publish_all(cases: list[tuple[str, bytes]]) -> None:
            nonlocal expected
            for channel, payload in cases:
                publish(pub, f"firegate/v1/gw-f/{channel}", payload)
                expected += _contract_refuses(channel, payload)
            wait_until(lambda: sum(c.metrics.dead_letters.values().values()) == expected,
                       "every refused payload dead-lettered")

        publish_all()
        fire = Event(source=Source("panel/1-1/42-0x00000102", Bus.GB26875),
                     type=EventType.FIRE_ALARM, receive_ms=NOW, seq=7)
        publish(pub, "firegate/v1/gw-f/records", encode_batches("gw-f", None, NOW, [fire])[0])
        wait_until(lambda: 7 in stored_records(cfg.sink.sqlite_path).get("gw-f", {}),
                   "a good batch after the fuzz")
        pub.disconnect()
        assert set(k[0] for k in c.metrics.dead_letters.values()) <= reasons
    assert expected > 0


class RefusingSink:
    """The real SQLite sink behind a failure injector: refuses (HTTP 400, as InfluxDB does for a
    field type conflict) any write holding a point of source ``poison/1``, and refuses the
    first ``unauthorized`` writes with 401 (a bad token)."""

    name = "sqlite"
    renders_lines = False

    def __init__(self, inner: Sink, unauthorized: int = 0) -> None:
        self.inner = inner
        self.unauthorized = unauthorized

    def write(self, points: Sequence[Storable]) -> None:
        if self.unauthorized > 0:
            self.unauthorized -= 1
            raise SinkError("HTTP 401: unauthorized", permanent=True, status=401)
        if any(isinstance(p, Point) and p.tag("source") == "poison/1" for p in points):
            raise SinkError("HTTP 400: field type conflict", permanent=True, status=400)
        self.inner.write(points)

    def close(self) -> None:
        self.inner.close()


def test_a_message_the_database_refuses_is_dead_lettered_and_the_rest_stored(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, collector={"retry_min_s": 0.05, "retry_max_s": 0.2,
                                                 "group_wait_ms": 200.0}))
    c = Collector(cfg)
    c.writer.sink = RefusingSink(c.sink, unauthorized=3)
    c.start()
    poison = Source("poison/1", Bus.MODBUS)
    try:
        wait_until(c.ingest.subscribed.is_set, "subscribed")
        pub = publisher(mosquitto.port)
        for gw, src in (("gw-1", SRC_OK), ("gw-2", poison), ("gw-3", SRC_OK)):
            m = Measurement(source=src, quantity=Quantity.PRESSURE, value=0.3, receive_ms=NOW,
                            unit="MPa", seq=1)
            publish(pub, f"firegate/v1/{gw}/records", encode_batches(gw, None, NOW, [m])[0])
        wait_until(lambda: c.metrics.records_stored.value() == 2 and
                   c.metrics.dead_letters.value("sink_refused") == 1, "stored and refused")
        pub.disconnect()
        # The bad token was an outage (retried, not a dead letter); the poison a dead letter.
        assert c.metrics.sink_errors.value("config") == 3
        assert c.metrics.acks.value() == 3
    finally:
        c.close()
    assert set(stored_records(cfg.sink.sqlite_path)) == {"gw-1", "gw-3"}
    letters = DeadLetters(cfg.deadletter_path)
    try:
        (letter,) = letters.recent(5)
        assert (letter.reason, letter.topic) == ("sink_refused", "firegate/v1/gw-2/records")
        assert "field type conflict" in (letter.path or "")
    finally:
        letters.close()
    with running(cfg) as again:  # acknowledged: not delivered a second time
        # The positive control instead of a quiet second: the collector's session delivers in
        # order, so a message published now arrives after anything the broker still held
        # for it; once it is stored, it is the only message this collector has seen.
        wait_until(again.ingest.subscribed.is_set, "subscribed again")
        pub = publisher(mosquitto.port)
        m = Measurement(source=SRC_OK, quantity=Quantity.PRESSURE, value=0.4, receive_ms=NOW,
                        unit="MPa", seq=2)
        publish(pub, "firegate/v1/gw-4/records", encode_batches("gw-4", None, NOW, [m])[0])
        wait_until(lambda: "gw-4" in stored_records(cfg.sink.sqlite_path), "the new message")
        pub.disconnect()
        assert sum(again.metrics.messages.values().values()) == 1
