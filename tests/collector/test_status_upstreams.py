"""``firegate collector status`` shows the GB/T 26875.3 upstreams in its table, not only in
``--json``: a real collector process forwarding to two higher centres, one a real TCP centre
that confirms (tests/collector/uitd/upstream_centre.py), one a port nobody listens on. Gateways
publish fire alarms through a real Mosquitto; the table must say which link is up, what waits
unconfirmed and for how long, and the counters, as the JSON does (docs/gb26875-upstream.md,
"Status and metrics")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w
import typer
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from firegate.cli.collector import register, render_status
from protocols.wire import Bus, Event, EventType, Source, encode_batches
from tests.hostile_text import HOSTILE, HOSTILE_SHOWN, assert_shown, clean_env
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port

from .conftest import CollectorProcess, config_data, wait_until
from .uitd.upstream_centre import MiniCentre

NOW = 1_765_000_000_000
GW = "gw-up-1"
WAIT = 60.0  # a collector process and TCP reconnects on a loaded machine


def _invoke(*args: str) -> Any:
    root = typer.Typer()
    register(root)
    return CliRunner().invoke(root, ["collector", *args], env=clean_env())


def _json(config: Path) -> dict[str, Any]:
    result = _invoke("status", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


def _ups(config: Path) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in _json(config)["upstreams"]}


def _row(table: str, name: str) -> list[str]:
    """The cells of the first table line that has ``name`` in its upstream column."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 3 and cells[2] == name:
            return cells[1:-1]
    raise AssertionError(f"no row for {name!r} in:\n{table}")


@pytest.fixture
def centre() -> Iterator[MiniCentre]:
    c = MiniCentre().start()
    try:
        yield c
    finally:
        c.stop()


def test_the_table_shows_each_upstream_link_queue_and_counters(
        mosquitto: Mosquitto, centre: MiniCentre, tmp_path: Path) -> None:
    nobody = free_port()  # a centre that is down: nothing listens there
    common = {"uitd_address": "0x000000000001", "timeout_s": 1.0, "retries": 1,
              "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}
    config = tmp_path / "c.toml"
    config.write_text(tomli_w.dumps(config_data(tmp_path / "state", mosquitto, gb26875={
        "listen": "", "upstream": [
            {"name": "province", "connect": f"127.0.0.1:{centre.port}", **common},
            {"name": "city", "connect": f"127.0.0.1:{nobody}", **common}]})))
    collector = CollectorProcess(config).start()
    gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=GW, protocol=mqtt.MQTTv5)
    gw.connect("127.0.0.1", mosquitto.port)
    gw.loop_start()
    try:
        for n in (1, 2, 3):
            src = Source(f"panel/1-1/42-0x{n:08x}", Bus.GB26875, system_type=1,
                         system_address=1, component_type=42, component_address=n,
                         description=f"{n}层感烟")
            ev = Event(source=src, type=EventType.FIRE_ALARM, receive_ms=NOW + n, seq=n)
            (payload,) = encode_batches(GW, "site-up", NOW, [ev], epoch=9)
            gw.publish(f"firegate/v1/{GW}/records", payload, qos=1).wait_for_publish(10)

        def settled() -> bool:
            ups = _ups(config)
            p, c = ups.get("province", {}), ups.get("city", {})
            return (p.get("connected") is True and p.get("confirmed") == 3
                    and p.get("queue_depth") == 0 and c.get("connected") is False
                    and c.get("queue_depth") == 3 and bool(c.get("last_error"))
                    and (c.get("oldest_unconfirmed_age_s") or 0) > 0)

        wait_until(settled, "province confirming all three, city holding them", WAIT)
        table = _invoke("status", "--config", str(config))
        assert table.exit_code == 0, table.output
        assert "upstreams (GB/T 26875.3, forwarding up)" in table.output
        # collector, upstream, link, queue, oldest, sent, confirmed, resent, evicted, expired,
        # last error
        province = _row(table.output, "province")
        assert province[:3] == ["collector-1", "province", "connected"], province
        assert province[3:5] == ["0", "-"], province
        assert province[6] == "3" and int(province[5]) >= 3, province
        assert province[8:11] == ["0", "0", "-"], province
        city = _row(table.output, "city")
        assert city[:4] == ["collector-1", "city", "disconnected", "3"], city
        assert city[4].endswith(" s") and float(city[4][:-2]) > 0, city
        assert city[5:10] == ["0", "0", "0", "0", "0"], city
        assert city[10] != "-", city  # why it is down (connection refused)
        assert f"127.0.0.1:{nobody}" in table.output  # where it should connect
        centre_uploads = len(centre.uploads(2))
        assert centre_uploads == 3  # the table's "confirmed" is what the centre confirmed
    finally:
        gw.loop_stop()
        gw.disconnect()
        collector.stop()
    # Stopped: no link is up, and the durable queue still shows what waits.
    def stopped() -> bool:
        ups = _ups(config)
        return not any(u["connected"] for u in ups.values())

    wait_until(stopped, "the status of a stopped collector", WAIT)
    table = _invoke("status", "--config", str(config))
    assert table.exit_code == 0, table.output
    assert _row(table.output, "province")[2] == "disconnected"
    assert _row(table.output, "city")[2:4] == ["disconnected", "3"]


def test_upstream_text_is_shown_as_text_and_missing_keys_as_dashes(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A snapshot is a file: its names and errors are shown, never interpreted; an older
    # collector's snapshot without some counters still renders.
    for name, value in clean_env().items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    doc: dict[str, Any] = {
        "time_ms": NOW, "collectors": [], "sites": [], "alarms": [],
        "gateways": {"online": 0, "offline": 0, "unknown": 0, "list": []},
        "gaps": {"ranges": 0, "records": 0, "late_records": 0, "list": []},
        "dead_letters": {},
        "upstreams": [
            {"collector": "c1", "name": HOSTILE, "connect": HOSTILE, "connected": False,
             "queue_depth": 7, "oldest_unconfirmed_age_s": 12.5, "sent": 9, "confirmed": 2,
             "resent": 4, "evicted": 1, "expired": 0, "last_error": HOSTILE},
            {"collector": "c1", "name": "old", "connected": True, "queue_depth": "x"}]}
    render_status(doc)
    out = capsys.readouterr().out
    assert_shown(out, "upstreams (GB/T 26875.3, forwarding up)", "12.5 s")
    assert out.count(HOSTILE_SHOWN) == 3, out
    old = _row(out, "old")
    assert old[2:] == ["connected", "-", "-", "-", "-", "-", "-", "-", "-"], old
    # No upstreams configured: no table.
    doc["upstreams"] = []
    render_status(doc)
    assert "upstreams" not in capsys.readouterr().out
