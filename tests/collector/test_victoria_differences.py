"""What VictoriaMetrics keeps of what the InfluxDB sink writes, next to what InfluxDB keeps.

The sink writes through influxdb-client's v2 API (``/api/v2/write?precision=ns``). InfluxDB 2
and 3 cannot be installed on these machines, so the only v2 server the tests meet is
VictoriaMetrics 1.79.5 (tests/infra/victoria.py), and it is not InfluxDB: a string field is
stored as the number 0, a time is cut to milliseconds, measurement and field become one metric
name, the bucket is ignored. Real InfluxDB storage (1.6, v1 ``/write``, tests/infra/influx1.py)
keeps strings and nanoseconds. Each difference is pinned here exactly, in both directions, so a
change of either server (an upgrade that starts keeping strings, or stops writing a string
field at all) fails a test instead of silently changing what the other tests prove. Which
guarantee rests on which server: docs/collector-storage.md, "Which servers the tests meet".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from collector.lineproto import to_lines
from collector.points import Point
from collector.sinks import SinkConfig
from collector.sinks.influx import InfluxSink
from tests.collector.test_lineproto_golden import golden_points
from tests.infra.influx1 import Influx1
from tests.infra.victoria import VictoriaMetrics


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx1]:
    with Influx1(tmp_path_factory.mktemp("influx1")) as server:
        yield server


def database(influx: Influx1, name: str) -> Influx1:
    """A database of its own for one test (the server is shared by the module)."""
    influx.db = name
    influx.query(f'CREATE DATABASE "{name}"')
    return influx


def recent(case: str) -> list[Point]:
    """A golden case's points moved to an hour ago (VictoriaMetrics drops samples older than
    its 1-day retention) by whole milliseconds, so every nanosecond remainder is kept."""
    points = golden_points(case)
    first_ms = min(p.time_ns for p in points) // 1_000_000
    shift = (int(time.time() * 1000) - 3_600_000 - first_ms) * 1_000_000
    return [Point(p.measurement, p.tags, p.fields, p.time_ns + shift) for p in points]


def write(vm: VictoriaMetrics, points: list[Point], bucket: str = "firegate") -> None:
    with closing(InfluxSink(SinkConfig(influx_url=vm.url, token="unused",
                                       bucket=bucket))) as sink:
        sink.write(points)


def samples(vm: VictoriaMetrics, match: str = '{__name__=~"fg_.*"}'
            ) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float]]]:
    """(metric name, labels) -> [(time ms, value)] of every stored series."""
    out = {}
    for row in vm.export(match):
        labels = dict(row["metric"])
        name = labels.pop("__name__")
        out[(name, tuple(sorted(labels.items())))] = list(
            zip(row["timestamps"], row["values"], strict=True))
    return out


def as_victoria_keeps(points: list[Point]
                      ) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float]]]:
    """What VictoriaMetrics 1.79.5 makes of ``points`` (distinct series and milliseconds):
    metric ``<measurement>_<field>``, tags as labels, time // 10**6 ms, booleans 1/0, every
    number as itself and every string as 0."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float]]] = {}
    for p in points:
        for key, value in p.fields:
            number = 0 if isinstance(value, str) else int(value) if isinstance(
                value, bool) else value
            out.setdefault((f"{p.measurement}_{key}", p.tags), []).append(
                (p.time_ns // 1_000_000, number))
    return {k: sorted(v) for k, v in out.items()}


def test_strings_become_zero_and_times_milliseconds(tmp_path: Path, influx: Influx1) -> None:
    # The documentation's batch: Chinese descriptions, units, booleans, integers, floats, and
    # times with a nanosecond remainder (receive_ms * 10**6 + seq).
    points = recent("batch-doc-example")
    assert any(isinstance(v, str) for p in points for _, v in p.fields)
    assert all(p.time_ns % 1_000_000 for p in points)
    with VictoriaMetrics(tmp_path / "vm") as vm:
        write(vm, points)
        got = samples(vm)
        assert vm.metric('vm_rows_invalid_total{type="influx"}') == 0
    assert got == as_victoria_keeps(points)
    # Spelled out for one panel event: the text is a 0 sample, not kept and not dropped.
    (fire,) = [p for p in points if p.tag("type") == "fire_alarm"]
    assert got[("fg_event_description", fire.tags)] == [(fire.time_ns // 1_000_000, 0)]
    assert got[("fg_event_comp_addr", fire.tags)] == [(fire.time_ns // 1_000_000, 258)]
    # The same lines in InfluxDB's own engine: the text and every nanosecond kept.
    database(influx, "strings")
    assert influx.write(to_lines(points))[0] == 204
    (row,) = [r for r in influx.rows("fg_event") if r["type"] == "fire_alarm"]
    assert row["description"] == "三层东走廊感烟探测器" and row["time"] == fire.time_ns
    assert sorted(r["unit"] for r in influx.rows("fg_value")) == ["MPa", "°C"]


def test_three_readings_in_one_millisecond(tmp_path: Path, influx: Influx1) -> None:
    # Idempotent time keeps three readings of one sensor received in the same millisecond
    # apart by their seq (…999999, …000000, …000001 ns). VictoriaMetrics cuts all three to
    # the same millisecond - the largest remainder too: cut, not rounded.
    points = recent("batch-same-millisecond")
    readings = [p for p in points if p.measurement == "fg_value"]
    (ms,) = {p.time_ns // 1_000_000 for p in readings}
    assert len({p.time_ns for p in readings}) == 3
    values = sorted(v for p in readings if isinstance(v := p.field("value"), float))
    assert len(values) == 3
    with VictoriaMetrics(tmp_path / "dedup", dedup=True) as vm:
        write(vm, points)
        (kept,) = [v for (name, _), v in samples(vm).items() if name == "fg_value_value"]
    assert len(kept) == 1 and kept[0][0] == ms and kept[0][1] in values  # one sample of three
    with VictoriaMetrics(tmp_path / "installed", dedup=False) as vm:
        write(vm, points)
        (kept,) = [v for (name, _), v in samples(vm).items() if name == "fg_value_value"]
    assert sorted(kept) == [(ms, v) for v in values]  # three samples, one timestamp
    # InfluxDB keeps three points with their own nanosecond times.
    database(influx, "same_millisecond")
    assert influx.write(to_lines(points))[0] == 204
    assert sorted(r["time"] for r in influx.rows("fg_value")) == \
        sorted(p.time_ns for p in readings)


def test_the_bucket_is_ignored(tmp_path: Path) -> None:
    # InfluxDB keeps buckets apart; VictoriaMetrics has one namespace: the same point written
    # to two buckets is one series (and, with deduplication, one sample).
    points = recent("batch-doc-example")[:1]
    with VictoriaMetrics(tmp_path / "vm") as vm:
        write(vm, points, bucket="site-a")
        write(vm, points, bucket="site-b")
        got = samples(vm)
    assert got == as_victoria_keeps(points)
