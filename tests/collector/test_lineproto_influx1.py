"""The golden line protocol in a real InfluxDB (1.6, v1 ``/write``): what is stored is exact.

VictoriaMetrics (the ``/api/v2/write`` stand-in) stores strings as 0 and cuts times to
milliseconds; InfluxDB's own engine does neither. Every golden ``expected.lp`` is posted as
it is and read back with InfluxQL: tags, every field with its type, Chinese text, escaped
characters and nanosecond times must come back as the points that produced them (changed only
as collector/lineproto.py documents), and a point written again must overwrite, not add.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from collector.lineproto import to_line, to_lines
from collector.points import Point
from collector.sinks import SinkConfig, SinkError
from collector.sinks.influx import InfluxSink
from tests.collector.test_lineproto import _expected_identifier, _expected_value
from tests.collector.test_lineproto_golden import CASES, GOLDEN, golden_points
from tests.infra.influx1 import Influx1

_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string"}


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx1]:
    with Influx1(tmp_path_factory.mktemp("influx1")) as server:
        yield server


def _use_db(influx: Influx1, name: str) -> None:
    influx.db = name
    influx.query(f'CREATE DATABASE "{name}"')


@pytest.mark.parametrize("case", CASES)
def test_golden_case_is_stored_exactly(influx: Influx1, case: str) -> None:
    _use_db(influx, "g_" + case.replace("-", "_"))
    status, body = influx.write((GOLDEN / case / "expected.lp").read_bytes())
    assert status == 204, body
    points = golden_points(case)
    for measurement in sorted({p.measurement for p in points}):
        mine = [p for p in points if p.measurement == measurement]
        rows = influx.rows(measurement)
        assert len(rows) == len(mine), measurement
        for p in mine:
            # The row of this point: same time, every tag as written (SELECT * shows tags
            # and fields as columns; a tag a series lacks is null).
            matches = [r for r in rows if r["time"] == p.time_ns and all(
                r.get(k) == _expected_identifier(v) for k, v in p.tags)]
            assert len(matches) == 1, (p, rows)
            for k, v in p.fields:
                assert matches[0][k] == _expected_value(v), (k, matches[0][k], v)
        types = {name: kind for s in influx.query(f'SHOW FIELD KEYS FROM "{measurement}"')
                 for name, kind in s["values"]}
        for p in mine:
            for k, v in p.fields:
                assert types[k] == _TYPES[type(v)], (k, types[k], v)


def test_chinese_text_and_nanoseconds_exact(influx: Influx1) -> None:
    _use_db(influx, "exact")
    p = Point("fg_event", (("gateway", "gw-1"), ("source", "panel/1-1/system")),
              (("description", "三层东走廊感烟探测器 ℃ °C m³/h"), ("seq", 1)),
              1718000000123456789)
    assert influx.write(to_line(p))[0] == 204
    (row,) = influx.rows("fg_event")
    assert row["description"] == "三层东走廊感烟探测器 ℃ °C m³/h"
    assert row["time"] == 1718000000123456789


def test_same_series_and_time_overwrites(influx: Influx1) -> None:
    _use_db(influx, "overwrite")
    base = golden_points("batch-doc-example")
    assert influx.write(to_lines(base))[0] == 204
    assert influx.write(to_lines(base))[0] == 204  # a redelivered batch
    assert len(influx.rows("fg_event")) == 2 and len(influx.rows("fg_value")) == 2
    first = base[1]
    changed = Point(first.measurement, first.tags,
                    tuple((k, 0.5 if k == "value" else v) for k, v in first.fields), first.time_ns)
    assert influx.write(to_line(changed))[0] == 204
    values = sorted(r["value"] for r in influx.rows("fg_value"))
    assert values == [0.5, 21.5]  # replaced in place, still two points
    # One nanosecond apart is another point: the seq part of the time keeps records apart.
    apart = Point(first.measurement, first.tags, first.fields, first.time_ns + 1)
    assert influx.write(to_line(apart))[0] == 204
    assert len(influx.rows("fg_value")) == 3


def test_influx_sink_reports_a_server_without_v2_write_as_permanent(influx: Influx1) -> None:
    # 1.6 predates /api/v2/write (1.8 added it): the sink must say so clearly and for good,
    # not retry forever.
    sink = InfluxSink(SinkConfig(influx_url=influx.url, bucket="exact/autogen"))
    try:
        with pytest.raises(SinkError) as err:
            sink.write(golden_points("gap-single"))
        assert err.value.status == 404 and err.value.permanent
        assert err.value.retry_after_s is None
    finally:
        sink.close()


def test_golden_files_were_posted_verbatim() -> None:
    # The files posted above are the golden files themselves; make sure they are what
    # to_line makes today, so this test proves the live mapping, not stale text.
    for case in CASES:
        text = (GOLDEN / case / "expected.lp").read_text(encoding="utf-8")
        assert text == "".join(to_line(p) + "\n" for p in golden_points(case))

