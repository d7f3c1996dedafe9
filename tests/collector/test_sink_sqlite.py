"""The embedded SQLite sink: same interface, exact values, overwrite, all or nothing."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from collector.lineproto import to_line
from collector.points import Line, Point
from collector.sinks import SinkConfig, SinkError, open_sink
from collector.sinks.influx import InfluxSink
from collector.sinks.sqlite import SqliteSink, connect, read_points
from tests.collector.test_lineproto_golden import CASES, golden_points
from tests.infra.ports import free_port


def _all_golden() -> list[Point]:
    return [p for case in CASES for p in golden_points(case)]


Row = tuple[str, dict[str, str], list[tuple[str, object]], int]


def _read_all(path: Path) -> list[Row]:
    conn = connect(path, read_only=True)
    try:
        rows = read_points(conn, limit=None)
    finally:
        conn.close()
    return [(r.measurement, r.tags, list(r.fields.items()), r.time_ns) for r in rows]


def _as_rows(points: list[Point]) -> list[Row]:
    return [(p.measurement, dict(p.tags), list(p.fields), p.time_ns) for p in points]


def _key(row: Row) -> tuple[int, str, str]:
    return row[3], row[0], repr(sorted(row[1].items()))


def test_open_sink_picks_sqlite_without_a_url(tmp_path: Path) -> None:
    sink = open_sink(SinkConfig(sqlite_path=tmp_path / "s" / "store.sqlite3"))
    assert isinstance(sink, SqliteSink) and sink.name == "sqlite"
    sink.close()
    sink.close()
    # With a URL: the InfluxDB sink, constructed without connecting (nothing listens here).
    influx = open_sink(SinkConfig(influx_url=f"http://127.0.0.1:{free_port()}"))
    assert isinstance(influx, InfluxSink)
    influx.close()


def test_stores_every_golden_point_exactly(tmp_path: Path) -> None:
    points = _all_golden()
    path = tmp_path / "store.sqlite3"
    sink = SqliteSink(path)
    sink.write(points)
    assert sink.count() == len(points)
    sink.close()
    stored = sorted(_read_all(path), key=_key)
    expected = sorted(_as_rows(points), key=_key)
    assert stored == expected
    for (_, _, fields, _), (_, _, sent, _) in zip(stored, expected, strict=True):
        assert [type(v) for _, v in fields] == [type(v) for _, v in sent]  # 1.0 stays float
    texts = {v for _, _, fields, _ in stored for _, v in fields if isinstance(v, str)}
    assert "line 1\nline 2\r\nline 3\ttabbed, \\n is not a newline" in texts  # no escaping
    assert "三层东走廊感烟探测器" in texts


def test_rewrite_overwrites_and_new_times_add(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    sink = SqliteSink(path)
    points = golden_points("batch-doc-example")
    sink.write(points)
    sink.write(points)  # redelivered
    assert sink.count() == len(points)
    p = points[1]
    changed = Point(p.measurement, tuple(reversed(p.tags)),  # caller's tag order must not matter
                    tuple((k, 0.5 if k == "value" else v) for k, v in p.fields), p.time_ns)
    sink.write([changed])
    assert sink.count() == len(points)
    sink.write([Point(p.measurement, p.tags, p.fields, p.time_ns + 1)])
    assert sink.count() == len(points) + 1
    sink.close()
    values = sorted(float(dict(fields)["value"])  # type: ignore[arg-type]
                    for _, tags, fields, _ in _read_all(path)
                    if tags.get("source") == "modbus/bus1/3/pressure")
    assert values == [0.32, 0.5]


def test_write_is_all_or_nothing(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "store.sqlite3")
    good = golden_points("batch-every-quantity")
    with pytest.raises(SinkError) as err:
        sink.write([*good, Point("fg_value", (), (("value", math.nan),), 1)])
    assert err.value.permanent
    assert sink.count() == 0
    sink.write(good)
    assert sink.count() == len(good)
    sink.close()
    with pytest.raises(RuntimeError):
        sink.write(good)


def test_rendered_lines_are_refused(tmp_path: Path) -> None:
    # The collector gives the SQLite store Points (renders_lines is false); a Line reaching
    # it is a wiring error, not data to store half of.
    sink = SqliteSink(tmp_path / "store.sqlite3")
    assert sink.renders_lines is False
    good = golden_points("batch-every-quantity")
    with pytest.raises(TypeError, match="not rendered lines"):
        sink.write([*good, Line(to_line(good[0]))])
    assert sink.count() == 0
    sink.close()


def test_locked_store_is_retryable_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    sink = SqliteSink(path, busy_timeout_s=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    points = golden_points("batch-doc-example")
    try:
        with pytest.raises(SinkError) as err:
            sink.write(points)
        assert not err.value.permanent and "locked" in str(err.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    sink.write(points)  # the pipeline's retry
    assert sink.count() == len(points)
    sink.close()


def test_persists_in_wal_and_reads_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    sink = SqliteSink(path)
    sink.write(golden_points("batch-doc-example"))
    reader = connect(path, read_only=True)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert len(read_points(reader)) == 4
        sink.write(golden_points("batch-micropython"))  # a writer next to an open reader
        assert len(read_points(reader)) == 6
        with pytest.raises(sqlite3.OperationalError):
            reader.execute("DELETE FROM points")
    finally:
        reader.close()
    sink.close()
    again = SqliteSink(path)
    assert again.count() == 6
    again.close()


def test_read_points_filters_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    sink = SqliteSink(path)
    points = _all_golden()
    sink.write(points)
    sink.close()
    conn = connect(path, read_only=True)
    try:
        events = read_points(conn, measurement="fg_event", gateway="gw-0002", limit=None)
        assert len(events) == 26 and all(p.tags["gateway"] == "gw-0002" for p in events)
        assert [p.time_ns for p in events] == sorted(p.time_ns for p in events)
        newest = read_points(conn, limit=3)
        assert [p.time_ns for p in newest] == sorted(p.time_ns for p in points)[-3:]
        by_site = read_points(conn, site="gz-th-101", limit=None)
        assert len(by_site) == len([p for p in points if p.tag("site") == "gz-th-101"])
        source = read_points(conn, source="modbus/bus1/3/pressure", limit=None)
        assert {p.tags["source"] for p in source} == {"modbus/bus1/3/pressure"}
        assert len(source) == len([p for p in points if p.tag("source") ==
                                   "modbus/bus1/3/pressure"])
        since = read_points(conn, since_ns=1718000700000000000, limit=None)
        assert len(since) == len([p for p in points if p.time_ns >= 1718000700000000000])
    finally:
        conn.close()


@pytest.mark.parametrize("kwargs", [
    {"influx_url": "ftp://x"}, {"influx_url": "localhost:8086"}, {"timeout_s": 0},
    {"max_points_per_write": 0}, {"max_points_per_write": 5001}, {"bucket": ""},
])
def test_sink_config_refuses(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SinkConfig(**kwargs)  # type: ignore[arg-type]


def test_sink_config_describe_has_no_secret(tmp_path: Path) -> None:
    c = SinkConfig(influx_url="https://db:8086", token="s3cret", bucket="fire")
    assert c.uses_influx and "bucket=fire" in c.describe()
    assert "s3cret" not in c.describe() and "s3cret" not in repr(c)
    assert SinkConfig(sqlite_path=tmp_path / "x").describe() == f"sqlite {tmp_path / 'x'}"
