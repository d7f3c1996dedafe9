"""InfluxSink against a real InfluxDB-protocol server (VictoriaMetrics, ``/api/v2/write``).

Proves exact counts and numbers (VictoriaMetrics keeps numbers and millisecond times, not
strings), that a redelivered batch is not stored twice, that a stopped server is a
retryable SinkError, and that writes succeed again once it is back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from collector.lineproto import to_line
from collector.points import Line, Point, Storable, points_for_batch
from collector.sinks import SinkConfig, SinkError, open_sink
from collector.sinks.influx import InfluxSink
from protocols.wire import Batch, Bus, Event, EventType, Measurement, Quantity, Source
from tests.collector.test_lineproto import _expected_identifier
from tests.collector.test_lineproto_golden import golden_points
from tests.infra.victoria import VictoriaMetrics

SENSORS = 20
READINGS = 600  # 12,000 measurements: three chunks of at most 5,000 lines
ALARMS = 150


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path / "vm") as server:
        yield server


def _sink(vm: VictoriaMetrics, **kw: Any) -> InfluxSink:
    sink = open_sink(SinkConfig(influx_url=vm.url, token="unused", bucket="fg", **kw))
    assert isinstance(sink, InfluxSink) and sink.name == "influx"
    return sink


def _fleet_points(start_ms: int) -> tuple[list[Point], dict[str, list[tuple[int, float]]]]:
    """Readings of SENSORS pressure sensors (one per ms each) and ALARMS fire alarms."""
    expected: dict[str, list[tuple[int, float]]] = {}
    records: list[Event | Measurement] = []
    seq = 0
    for s in range(SENSORS):
        src = Source(f"modbus/bus1/{s + 1}/pressure", Bus.MODBUS)
        samples = expected[src.id] = []
        for i in range(READINGS):
            seq += 1
            t, v = start_ms + i, round(0.1 + s / 100 + i / 10_000, 6)
            records.append(Measurement(source=src, quantity=Quantity.PRESSURE, value=v,
                                       unit="MPa", receive_ms=t, seq=seq))
            samples.append((t, v))
    panel = Source("panel/1-1/42-0x00000102", Bus.GB26875, description="三层东走廊感烟探测器")
    for i in range(ALARMS):
        seq += 1
        records.append(Event(source=panel, type=EventType.FIRE_ALARM, receive_ms=start_ms + i,
                             seq=seq, active=i % 2 == 0))
    points: list[Point] = []
    for i in range(0, len(records), 5000):
        points += points_for_batch(Batch("gw-vm", "site-vm", start_ms,
                                        tuple(records[i:i + 5000])))
    return points, expected


def _series(vm: VictoriaMetrics, name: str) -> dict[str, dict[str, list[float] | list[int]]]:
    return {row["metric"]["source"]: row for row in vm.export(f'{{__name__="{name}"}}')}


def _assert_fleet_stored(vm: VictoriaMetrics, expected: dict[str, list[tuple[int, float]]],
                         start_ms: int) -> None:
    values = _series(vm, "fg_value_value")
    assert set(values) == set(expected)
    for source, samples in expected.items():
        row = values[source]
        assert list(zip(row["timestamps"], row["values"], strict=True)) == samples
    (alarms,) = _series(vm, "fg_event_active").values()
    assert alarms["timestamps"] == [start_ms + i for i in range(ALARMS)]
    assert alarms["values"] == [1 - i % 2 for i in range(ALARMS)]
    (prio,) = _series(vm, "fg_event_priority").values()
    assert prio["values"] == [0] * ALARMS
    assert vm.metric('vm_rows_invalid_total{type="influx"}') == 0


def test_writes_exact_counts_values_and_times(vm: VictoriaMetrics) -> None:
    start = int(time.time() * 1000) - 3_600_000  # inside the 1-day retention
    points, expected = _fleet_points(start)
    with closing(_sink(vm)) as sink:
        sink.write(points)
    _assert_fleet_stored(vm, expected, start)
    seqs = _series(vm, "fg_value_seq")
    assert sorted(v for row in seqs.values() for v in row["values"]) == \
        list(range(1, SENSORS * READINGS + 1))
    rows = vm.export('{__name__="fg_value_value",source="modbus/bus1/1/pressure"}')
    assert rows[0]["metric"] == {"__name__": "fg_value_value", "bus": "modbus",
                                 "gateway": "gw-vm", "quantity": "pressure", "site": "site-vm",
                                 "source": "modbus/bus1/1/pressure"}


def test_redelivered_points_are_not_stored_twice(vm: VictoriaMetrics) -> None:
    start = int(time.time() * 1000) - 3_600_000
    points, expected = _fleet_points(start)
    # chunk edges fall elsewhere on the rewrite
    with closing(_sink(vm, max_points_per_write=777)) as sink:
        sink.write(points)
        sink.write(points[: len(points) // 2])  # a half-acknowledged batch, sent again
        sink.write(points)
    _assert_fleet_stored(vm, expected, start)


def test_rendered_lines_and_points_mixed_store_the_same(vm: VictoriaMetrics) -> None:
    # What the collector sends: record points already rendered by the decode thread
    # (Lines), and its own points (Point) in the same write.
    start = int(time.time() * 1000) - 3_600_000
    points, expected = _fleet_points(start)
    half = len(points) // 2
    mixed: list[Storable] = [Line(to_line(p)) for p in points[:half]] + list(points[half:])
    with closing(_sink(vm)) as sink:
        sink.write(mixed)
    _assert_fleet_stored(vm, expected, start)


def test_server_down_is_retryable_and_writes_resume(vm: VictoriaMetrics) -> None:
    start = int(time.time() * 1000) - 3_600_000
    points, expected = _fleet_points(start)
    with closing(_sink(vm, timeout_s=5.0)) as sink:
        sink.write(points[:1000])
        vm.stop()
        with pytest.raises(SinkError) as err:
            sink.write(points)
        assert not err.value.permanent and err.value.status is None
        assert err.value.retry_after_s is None
        vm.start()  # same port, same data
        sink.write(points)  # what the pipeline's retry does: the whole write again
    _assert_fleet_stored(vm, expected, start)


def test_escaped_identifiers_read_back_as_documented(vm: VictoriaMetrics) -> None:
    shift = int(time.time() * 1000 - 3_600_000 - 1718000400000) * 1_000_000
    points = [Point(p.measurement, p.tags, p.fields, p.time_ns + shift)
              for p in golden_points("batch-escaping")]
    with closing(_sink(vm)) as sink:
        sink.write(points)
    stored = {row["metric"]["source"] for row in vm.export('{__name__="fg_event_seq"}')}
    stored |= {row["metric"]["source"] for row in vm.export('{__name__="fg_value_value"}')}
    assert stored == {_expected_identifier(str(p.tag("source"))) for p in points}
    assert vm.metric('vm_rows_invalid_total{type="influx"}') == 0


def test_free_text_tags_read_back_as_documented(vm: VictoriaMetrics) -> None:
    # Driver, reason and link names from a health message: spaces, commas, =, Chinese.
    shift = int(time.time() * 1000 - 3_600_000 - 1718000120000) * 1_000_000
    points = [Point(p.measurement, p.tags, p.fields, p.time_ns + shift)
              for p in golden_points("health-escaping")]
    with closing(_sink(vm)) as sink:
        sink.write(points)
    counters = {(r["metric"]["driver"], r["metric"]["reason"]): r["values"]
                for r in vm.export('{__name__="fg_counter_count"}')}
    assert counters == {
        (_expected_identifier(str(p.tag("driver"))), _expected_identifier(str(p.tag("reason")))):
        [p.field("count")] for p in points if p.measurement == "fg_counter"}
    links = {r["metric"]["link"]: r["values"] for r in vm.export('{__name__="fg_link_up"}')}
    assert links == {"a=b\\c": [1], "link one": [0], "上行链路": [1]}
    assert vm.metric('vm_rows_invalid_total{type="influx"}') == 0
