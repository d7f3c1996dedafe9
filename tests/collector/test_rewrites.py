"""A rewrite of the same point on each database the tests start (issue 18, part 3).

The collector writes a group again after a crash between the write and its ledger commit. On
InfluxDB and the embedded store that writes the point onto itself; on VictoriaMetrics it keeps
a second sample unless the server runs with ``-dedup.minScrapeInterval``. Each sink says which
(``rewrite_guarantee``, shown by ``collector status``), and here each claim is checked against
the real server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from collector.lineproto import to_line
from collector.points import Point
from collector.sinks.config import SinkConfig
from collector.sinks.influx import InfluxSink
from collector.sinks.sqlite import SqliteSink
from tests.infra.influx1 import Influx1
from tests.infra.victoria import VictoriaMetrics


def point() -> Point:
    now_ns = time.time_ns() // 1_000_000 * 1_000_000  # recent (VictoriaMetrics' retention)
    return Point("fg_value", (("gateway", "gw-1"), ("source", "modbus/bus1/3/pressure")),
                 (("value", 0.31),), now_ns)


def samples(vm: VictoriaMetrics) -> int:
    return sum(len(s["values"]) for s in vm.export('{__name__="fg_value_value"}'))


def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_victoria_metrics_as_installed_keeps_both_and_says_so(tmp_path: Path) -> None:
    with VictoriaMetrics(tmp_path / "vm", dedup=False) as vm:
        sink = InfluxSink(SinkConfig(influx_url=vm.url, token="", bucket="firegate"))
        try:
            p = point()
            sink.write([p])
            sink.write([p])  # the rewrite after a crash
            until(lambda: samples(vm) >= 2, "both samples")  # never merged: 2, not 1
            assert sink.rewrite_guarantee().kind == "duplicates"
        finally:
            sink.close()


def test_victoria_metrics_with_dedup_merges_and_says_so(tmp_path: Path) -> None:
    with VictoriaMetrics(tmp_path / "vm", dedup=True) as vm:
        sink = InfluxSink(SinkConfig(influx_url=vm.url, token="", bucket="firegate"))
        try:
            p = point()
            sink.write([p])
            sink.write([p])
            # Both rows went in (the server's own counter), and a query sees one: the
            # duplicate was merged (when parts merge, or at select time; counted either way).
            until(lambda: vm.metric('vm_rows_inserted_total{type="influx"}') >= 2, "2 rows")
            until(lambda: samples(vm) == 1 and
                  vm.metric('vm_deduplicated_samples_total{type="merge"}') +
                  vm.metric('vm_deduplicated_samples_total{type="select"}') >= 1,
                  "one sample after the merge")
            assert sink.rewrite_guarantee().kind == "deduplicated"
        finally:
            sink.close()


def test_influxdb_overwrites_and_says_so(tmp_path: Path) -> None:
    with Influx1(tmp_path / "influx") as influx:
        line = to_line(point())
        assert influx.write(line)[0] == 204
        assert influx.write(line)[0] == 204
        assert len(influx.rows("fg_value")) == 1
        # InfluxDB 1.6 has no /api/v2/write, but its /ping names its version, which is what
        # the guarantee is read from.
        sink = InfluxSink(SinkConfig(influx_url=influx.url, token="", bucket="firegate"))
        try:
            guarantee = sink.rewrite_guarantee()
        finally:
            sink.close()
    assert guarantee.kind == "overwrite" and "InfluxDB 1.6" in guarantee.detail


def test_the_embedded_store_overwrites_and_says_so(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "store.sqlite3")
    try:
        p = point()
        sink.write([p])
        sink.write([p])
        assert sink.count() == 1
        assert sink.rewrite_guarantee().kind == "overwrite"
    finally:
        sink.close()


def test_a_server_that_does_not_answer_is_unknown(tmp_path: Path) -> None:
    from tests.infra.ports import free_port

    sink = InfluxSink(SinkConfig(influx_url=f"http://127.0.0.1:{free_port()}", token="",
                                 timeout_s=2.0))
    try:
        assert sink.rewrite_guarantee().kind == "unknown"
    finally:
        sink.close()
