"""Prometheus metrics: the text exposition format, and a running collector scraped over HTTP."""

from __future__ import annotations

import math
import re
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.metrics import Counter, Gauge, Histogram, Metrics, MetricsServer, render
from simulators.fleet import FleetConfig, run_fleet
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

from .conftest import async_wait_until, config_data, running, write_config

# One sample line of the text format 0.0.4: name, optional labels, a number.
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:\\.|[^"\\])*"'
SAMPLE = re.compile(rf"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{{{LABEL}(?:,{LABEL})*\}})?"
                    r" (?P<value>\S+)$")


def parse(text: str) -> dict[str, float]:
    """Every sample as ``name{labels}`` -> value, checking each line's syntax and that every
    sample's family was declared by a TYPE line first."""
    out: dict[str, float] = {}
    declared: set[str] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge", "histogram")
            declared.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        m = SAMPLE.match(line)
        assert m, line
        name = m.group("name")
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in declared or family in declared, line
        out[name + (m.group("labels") or "")] = float(m.group("value").replace("+Inf", "inf"))
    return out


def test_exposition_format() -> None:
    c = Counter("x_total", "things", ("reason",))
    c.inc("a")
    c.inc("b", n=2)
    c.inc('we"ird\\\n')
    g = Gauge("y", "level")
    g.set(1.5)
    h = Histogram("lat_seconds", "latency", (0.01, 0.1))
    for v in (0.005, 0.05, 0.05, 3.0):
        h.observe(v)
    text = render([c, g, h])
    assert text == (
        "# HELP x_total things\n# TYPE x_total counter\n"
        'x_total{reason="a"} 1\nx_total{reason="b"} 2\n'
        'x_total{reason="we\\"ird\\\\\\n"} 1\n'
        "# HELP y level\n# TYPE y gauge\ny 1.5\n"
        "# HELP lat_seconds latency\n# TYPE lat_seconds histogram\n"
        'lat_seconds_bucket{le="0.01"} 1\nlat_seconds_bucket{le="0.1"} 3\n'
        'lat_seconds_bucket{le="+Inf"} 4\nlat_seconds_sum 3.105\nlat_seconds_count 4\n')
    parsed = parse(text)
    assert parsed['lat_seconds_bucket{le="+Inf"}'] == 4
    assert h.quantile(0.5) == 0.1 and h.quantile(1.0) == math.inf
    assert math.isnan(Histogram("e", "empty", (1.0,)).quantile(0.5))


def test_the_endpoint_serves_every_metric() -> None:
    metrics = Metrics()
    metrics.dead_letters.inc("not_json")
    server = MetricsServer(metrics, "127.0.0.1", free_port()).start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            samples = parse(resp.read().decode())
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=10)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        server.close()
    assert samples['firegate_collector_dead_letters_total{reason="not_json"}'] == 1
    assert samples["firegate_collector_records_stored_total"] == 0
    assert samples["firegate_collector_write_seconds_count"] == 0


async def test_a_running_collector_reports_its_work(mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto, metrics={"listen": f"127.0.0.1:{port}"}))
    with running(cfg) as c:
        report = await run_fleet(FleetConfig(
            broker=f"mqtt://127.0.0.1:{mosquitto.port}", gateways=3, records=900, rate=300,
            batch_interval=0.1, alarm_rate=0.02, seed=6))
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bad", protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        pub.publish("firegate/v1/gw-x/records", b"{not json", qos=1).wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
        await async_wait_until(lambda: c.metrics.records_stored.value() >= 900 and
                               c.metrics.dead_letters.value("not_json") == 1, "stored")
        await async_wait_until(lambda: c.metrics.gateways.value("offline") == 3, "gauges")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            samples = parse(resp.read().decode())
    assert report.ok
    p = "firegate_collector_"
    assert samples[p + "records_received_total"] == 900
    assert samples[p + "records_stored_total"] == 900
    assert samples[p + 'messages_total{channel="records"}'] == report.totals()["messages"]
    assert samples[p + 'dead_letters_total{reason="not_json"}'] == 1
    assert samples[p + 'gateways{state="offline"}'] == 3  # the fleet shut down
    assert samples[p + "write_seconds_count"] >= 1
    assert samples[p + "mqtt_connected"] == 1
    assert samples[p + "acks_total"] >= report.totals()["messages"] + 1
    assert samples[p + "fire_alarm_latency_seconds_count"] >= 1  # alarm_rate gives some
    assert samples[p + "gap_records"] == 0
