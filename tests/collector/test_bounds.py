"""Bounds on what one gateway can make the collector keep (issue 14, part 8): health series per
message, distinct sources per gateway, the MQTT packet size, and the embedded store's
retention. Each bound cuts, counts what it cut, and is a documented setting. Real Mosquitto,
real collector (in-process), SQLite store."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import ConfigError, parse_config
from collector.ingest import MAX_PACKET_BYTES
from collector.ledger import SeqLedger
from collector.points import Point, points_for_health
from collector.sinks.sqlite import SqliteSink, read_points
from collector.sinks.sqlite import connect as connect_store
from protocols.wire import (
    MAX_PAYLOAD_BYTES,
    Bus,
    Event,
    EventType,
    Health,
    LinkState,
    Measurement,
    Quantity,
    Record,
    Source,
    encode_batches,
    encode_health,
)
from tests.infra.mosquitto import Mosquitto

from .conftest import (
    REPO,
    config_data,
    running,
    stored_points,
    stored_records,
    wait_until,
    write_config,
)

NOW = int(time.time() * 1000)  # retention is by point time: these tests' records are recent
DAY_MS = 86_400_000


def reading(seq: int, source: str) -> Measurement:
    return Measurement(source=Source(source, Bus.MODBUS), quantity=Quantity.PRESSURE,
                       value=0.3, unit="MPa", receive_ms=NOW + seq, seq=seq)


def event(seq: int, source: str, kind: EventType) -> Event:
    return Event(source=Source(source, Bus.GB26875), type=kind, receive_ms=NOW + seq, seq=seq)


class Gateway:
    """A gateway's MQTT 5 client: publishes and reports what the broker answered."""

    def __init__(self, port: int, gateway: str = "gw-1") -> None:
        self.id = gateway
        self.disconnects: list[str] = []
        self.refused: list[int] = []  # mids the broker answered with a failure reason code
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gateway,
                                  protocol=mqtt.MQTTv5)
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(str(rc))
        self.client.on_publish = lambda _c, _u, mid, rc, _p: \
            self.refused.append(mid) if rc.is_failure else None
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, channel: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(f"firegate/v1/{self.id}/{channel}", payload, qos=1)

    def records(self, records: list[Record]) -> None:
        (payload,) = encode_batches(self.id, "site-1", NOW, records)
        self.publish("records", payload).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def health(counters: dict[str, dict[str, int]], links: dict[str, LinkState],
           gateway: str = "gw-1") -> Health:
    return Health(gateway_id=gateway, ts_ms=NOW, uptime_s=5.0, version="1.0", outbox_depth=0,
                  counters=counters, links=links, last_seq=0)


# -- health: series per message ----------------------------------------------------------------


def test_health_keeps_the_first_entries_in_sorted_order_and_notes_the_cut() -> None:
    counters = {d: {r: 1 for r in ("r3", "r1", "r2", "r0")} for d in ("drv-c", "drv-a", "drv-b")}
    links = {name: LinkState.UP if i % 2 else LinkState.DOWN
             for i, name in enumerate(("l4", "l2", "l0", "l3", "l1"))}
    points = points_for_health(health(counters, links), "s", max_counters=5, max_links=2)
    kept = [(p.tag("driver"), p.tag("reason")) for p in points if p.measurement == "fg_counter"]
    assert kept == [("drv-a", "r0"), ("drv-a", "r1"), ("drv-a", "r2"), ("drv-a", "r3"),
                    ("drv-b", "r0")]
    assert [p.tag("link") for p in points if p.measurement == "fg_link"] == ["l0", "l1"]
    h = points[0]
    assert (h.field("counters_cut"), h.field("links_cut")) == (7, 3)
    assert (h.field("links_up"), h.field("links_down")) == (2, 3)  # over every link
    # Deterministic: the insertion order of the message does not change what is kept.
    reordered = {d: dict(reversed(list(counters[d].items()))) for d in reversed(counters)}
    again = points_for_health(health(reordered, dict(reversed(list(links.items())))), "s",
                              max_counters=5, max_links=2)
    assert again == points
    # Nothing cut: no new fields (the golden files of health stay as they are).
    whole = points_for_health(health(counters, links), "s", max_counters=12, max_links=5)
    assert whole[0].field("counters_cut") is None and whole[0].field("links_cut") is None
    assert len(whole) == 1 + 12 + 5
    none = points_for_health(health(counters, links), "s", max_counters=0, max_links=0)
    assert [p.measurement for p in none] == ["fg_health"]


def test_the_issues_health_message_makes_a_bounded_number_of_series() -> None:
    # The report: one 127 KB health message made 16,001 new series.
    counters = {f"d{i}": {f"r{j}": 1 for j in range(100)} for i in range(160)}
    links = {"uplink": LinkState.UP}
    payload = encode_health(health(counters, links))
    assert len(payload) <= MAX_PAYLOAD_BYTES  # a message the contract allows
    points = points_for_health(health(counters, links), None)
    assert len(points) == 1 + 256 + 1
    assert points[0].field("counters_cut") == 16_000 - 256


def test_a_running_collector_cuts_and_counts_health_entries(mosquitto: Mosquitto,
                                                            tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto,
        collector={"max_health_counters": 3, "max_health_links": 1}))
    gw = Gateway(mosquitto.port)
    try:
        with running(cfg) as c:
            counters = {"modbus/bus1": {"timeout": 2, "crc": 1}, "ble": {"a": 1, "b": 2}}
            links = {"uplink": LinkState.UP, "modbus/bus1": LinkState.DOWN}
            gw.publish("health", encode_health(health(counters, links))).wait_for_publish(10)
            wait_until(lambda: c.metrics.health_entries_cut.value("links") == 1,
                       "the health message handled")
            assert c.metrics.health_entries_cut.value("counters") == 1
    finally:
        gw.close()
    store = cfg.sink.sqlite_path
    (h,) = stored_points(store, "fg_health")
    assert (h.field("counters_cut"), h.field("links_cut")) == (1, 1)
    assert sorted((p.tag("driver"), p.tag("reason")) for p in stored_points(store, "fg_counter")) \
        == [("ble", "a"), ("ble", "b"), ("modbus/bus1", "crc")]
    assert [p.tag("link") for p in stored_points(store, "fg_link")] == ["modbus/bus1"]


# -- distinct sources per gateway ------------------------------------------------------------


def test_sources_past_the_cap_are_cut_except_fire_alarms(
        mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="firegate.collector.writer")
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, collector={"max_sources_per_gateway": 3}))
    gw, other = Gateway(mosquitto.port), Gateway(mosquitto.port, "gw-2")
    try:
        with running(cfg) as c:
            gw.records([reading(1, "s1"), reading(2, "s2"), reading(3, "s3")])
            wait_until(lambda: c.metrics.records_stored.value() == 3, "three sources taken")
            second: list[Record] = [
                reading(4, "s1"),                          # known: stored
                reading(5, "s4"),                          # a fourth source: cut
                event(6, "s5", EventType.FIRE_ALARM),      # fire: always stored
                event(7, "s6", EventType.FAULT),           # not fire: cut
                reading(8, "s5")]                          # the fire's source: not taken
            gw.records(second)
            other.records([reading(1, "x1"), reading(2, "x2"), reading(3, "x3")])
            wait_until(lambda: c.metrics.records_stored.value() == 8, "the second batch")
            assert c.metrics.records_cut.value("sources_per_gateway") == 3
            assert c.snapshot(NOW)["records_cut"] == 3
            # The same batch again (a redelivery): every seq is accounted for, so duplicates.
            gw.records(second)
            wait_until(lambda: c.metrics.duplicates.value() == 5, "the redelivery")
            gw.records([reading(9, "s7")])
            wait_until(lambda: c.metrics.records_cut.value("sources_per_gateway") == 4,
                       "a later cut")
            assert c.metrics.records_stored.value() == 8
    finally:
        gw.close()
        other.close()
    assert {k: sorted(v) for k, v in stored_records(cfg.sink.sqlite_path).items()} == \
        {"gw-1": [1, 2, 3, 4, 6], "gw-2": [1, 2, 3]}
    ledger = SeqLedger(cfg.ledger_path)
    try:
        assert ledger.gaps() == []  # cut records are accounted for, not missing
    finally:
        ledger.close()
    logged = [r for r in caplog.records if "max_sources_per_gateway" in r.getMessage()]
    assert len(logged) == 1 and "gw-1" in logged[0].getMessage()  # once per gateway a while


# -- MQTT 5 Maximum Packet Size --------------------------------------------------------------


def test_the_broker_does_not_send_the_collector_a_packet_past_its_maximum(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Mosquitto here has no message_size_limit: it takes the oversize publish from the
    gateway, and only the collector's CONNECT property keeps it out of the collector."""
    cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", mosquitto))
    gw = Gateway(mosquitto.port, "g" * 64)  # the longest gateway id: the longest topic
    try:
        with running(cfg) as c:
            gw.publish("records", b"x" * (2 * MAX_PAYLOAD_BYTES)).wait_for_publish(10)
            # At the contract's limit exactly (JSON allows the trailing blanks): delivered.
            (full,) = encode_batches(gw.id, "site-1", NOW, [reading(1, "s1")])
            gw.publish("records", full + b" " * (MAX_PAYLOAD_BYTES - len(full))
                       ).wait_for_publish(10)
            wait_until(lambda: c.metrics.records_stored.value() == 1, "the full-size batch")
            assert c.metrics.messages.value("reject") == 0
            assert c.metrics.dead_letters.values() == {}
    finally:
        gw.close()
    # The broker's own account: it dropped the message for the collector, not for anyone else.
    assert f"Dropping too large outgoing PUBLISH for {cfg.mqtt.client_id}" in \
        mosquitto.log.read_text()


class LimitedMosquitto(Mosquitto):
    """A broker configured as docs/collector.md says: ``message_size_limit``."""

    def _config(self) -> Path:
        conf = super()._config()
        with conf.open("a") as f:
            f.write(f"message_size_limit {MAX_PAYLOAD_BYTES}\n")
        return conf


def test_with_the_documented_broker_limit_the_gateway_sees_the_refusal(tmp_path: Path) -> None:
    docs = (REPO / "docs" / "collector.md").read_text()
    assert f"message_size_limit {MAX_PAYLOAD_BYTES}" in docs
    assert f"Maximum Packet Size* of {MAX_PACKET_BYTES:,}" in docs
    with LimitedMosquitto(tmp_path / "broker") as broker:
        cfg = write_config(tmp_path / "c.toml", config_data(tmp_path / "state", broker))
        bad, good = Gateway(broker.port, "gw-bad"), Gateway(broker.port)
        try:
            with running(cfg) as c:
                info = bad.publish("records", b"x" * (MAX_PAYLOAD_BYTES + 1))
                # The gateway is told: a failure reason code, or (Mosquitto 2.0.11, measured in
                # docs/uplink.md) its connection dropped; either way it keeps its records.
                wait_until(lambda: bool(bad.disconnects) or info.mid in bad.refused,
                           "the gateway told of the refusal")
                bad.close()
                good.records([reading(1, "s1")])
                wait_until(lambda: c.metrics.records_stored.value() == 1, "a normal batch")
                assert c.metrics.messages.value("reject") == 0
        finally:
            bad.close()
            good.close()


# -- retention of the embedded store ---------------------------------------------------------


def _point(i: int, time_ms: int, gateway: str = "gw-old") -> Point:
    return Point("fg_value", (("gateway", gateway), ("source", f"s{i}")), (("value", 1.0),),
                 time_ms * 1_000_000 + i % 1_000_000)


def test_prune_deletes_the_oldest_in_bounded_batches_and_keeps_the_rest(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "store.sqlite3", retention_days=1)
    try:
        old = [_point(i, NOW - 3 * DAY_MS) for i in range(5)]
        young = [_point(i, NOW - DAY_MS + 60_000, "gw-new") for i in range(3)]
        sink.write(old + young)
        assert sink.prune(NOW, limit=2) == 2
        assert sink.prune(NOW, limit=2) == 2
        assert sink.prune(NOW, limit=2) == 1  # fewer than the limit: done
        assert sink.prune(NOW, limit=2) == 0
        assert sink.count() == 3
        assert {p.tags["gateway"] for p in read_points(sink._conn)} == {"gw-new"}
    finally:
        sink.close()
    forever = SqliteSink(tmp_path / "forever.sqlite3", retention_days=0)
    try:
        forever.write([_point(1, 0)])
        assert forever.prune(NOW) == 0 and forever.count() == 1
    finally:
        forever.close()


def test_a_running_collector_applies_the_retention(mosquitto: Mosquitto,
                                                   tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, store={"retention_days": 30}))
    assert cfg.sink.retention_days == 30
    n_old = 12_000  # more than one batch (PRUNE_BATCH): deleted over several ticks
    seed = SqliteSink(cfg.sink.sqlite_path)
    try:
        seed.write([_point(i, NOW - 31 * DAY_MS) for i in range(n_old)])
        seed.write([_point(i, NOW - 29 * DAY_MS, "gw-new") for i in range(10)])
    finally:
        seed.close()
    with running(cfg) as c:
        wait_until(lambda: c.metrics.store_pruned.value() == n_old, "the old points pruned")
    conn = connect_store(cfg.sink.sqlite_path, read_only=True)
    try:
        left = conn.execute("SELECT gateway, count(*) FROM points GROUP BY gateway").fetchall()
    finally:
        conn.close()
    assert left == [("gw-new", 10)]


# -- configuration -----------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = parse_config({})
    p = cfg.pipeline
    assert (p.max_health_counters, p.max_health_links, p.max_sources_per_gateway) == (
        256, 64, 10_000)
    assert cfg.sink.retention_days == 90


@pytest.mark.parametrize(("doc", "message"), [
    ({"collector": {"max_sources_per_gateway": 0}},
     "collector.max_sources_per_gateway: must be at least 1, got 0"),
    ({"collector": {"max_health_counters": -1}},
     "collector.max_health_counters: must be at least 0, got -1"),
    ({"collector": {"max_health_links": 100_001}},
     "collector.max_health_links: must be at most 100000, got 100001"),
    ({"store": {"retention_days": -1}}, "store.retention_days: must be at least 0, got -1"),
])
def test_bad_bounds_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert str(info.value) == message


def test_the_sample_and_the_docs_name_every_bound() -> None:
    sample = (REPO / "collector" / "collector.example.toml").read_text()
    docs = (REPO / "docs" / "collector.md").read_text()
    for key in ("max_health_counters", "max_health_links", "max_sources_per_gateway",
                "retention_days"):
        assert re.search(rf"^#? ?{key} = ", sample, re.M), key
        assert key in docs, key

