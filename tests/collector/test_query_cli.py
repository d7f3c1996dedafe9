"""``firegate collector query`` on a real store, through a fresh typer app with ``register``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from collector.points import Point
from collector.sinks.sqlite import SqliteSink
from firegate.cli.collector_query import DEFAULT_STORE, format_time, parse_since, register
from tests.collector.test_lineproto_golden import CASES, golden_points


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def group() -> None:  # makes `query` a subcommand, as in `firegate collector query`
        """The collector group."""

    register(app)
    return app


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_app(), ["query", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite3"
    sink = SqliteSink(path)
    sink.write([p for case in CASES for p in golden_points(case)])
    sink.close()
    return path


def _json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_json_lines_newest_n_oldest_first(store: Path) -> None:
    code, out, _ = _run("--store", str(store), "--json", "--limit", "5")
    assert code == 0
    rows = _json_lines(out)
    assert len(rows) == 5
    times = [r["time_ns"] for r in rows]
    every = sorted(p.time_ns for case in CASES for p in golden_points(case))
    assert times == every[-5:]
    assert rows[-1]["time"] == format_time(every[-1])


def test_filters(store: Path) -> None:
    code, out, _ = _run("--store", str(store), "--json", "-m", "fg_event", "-g", "gw-0002",
                        "-n", "100")
    assert code == 0
    rows = _json_lines(out)
    assert len(rows) == len(golden_points("batch-every-event-type"))  # one per event type
    assert {r["tags"]["type"] for r in rows} == {  # type: ignore[index]
        p.tag("type") for p in golden_points("batch-every-event-type")}
    code, out, _ = _run("--store", str(store), "--json", "--site", "gz-th-101",
                        "--source", "modbus/bus1/3/pressure")
    (row,) = _json_lines(out)
    assert row["fields"] == {"value": 0.32, "unit": "MPa", "priority": 3, "seq": 3001,
                             "source_ms": 1718000299950}
    code, out, _ = _run("--store", str(store), "--json", "-g", "nobody")
    assert code == 0 and out == ""


def test_table_shows_values_units_and_chinese(store: Path) -> None:
    code, out, _ = _run("--store", str(store), "-g", "gw-0001", "-m", "fg_event", "-n", "10")
    assert code == 0
    assert "三层东走廊感烟探测器" in out and "fire_alarm" in out and "sh-pd-017" in out
    code, out, _ = _run("--store", str(store), "--source", "modbus/bus1/3/pressure",
                        "-g", "gw-0001")
    assert "0.32 MPa" in out and "1 point(s)" in out
    assert "2024-06-10 06:13:20.200" in out  # 1718000000200 ms, in UTC


def test_since_relative_and_iso(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    now_ms = int(time.time() * 1000)
    sink = SqliteSink(path)
    sink.write([Point("fg_value", (("gateway", "g"), ("source", f"s{age}")),
                      (("value", float(age)), ("unit", "m")), (now_ms - age * 60_000) * 10**6)
                for age in (5, 30, 90, 300)])  # minutes ago
    sink.close()
    _, out, _ = _run("--store", str(path), "--json", "--since", "1h")
    assert [r["tags"]["source"] for r in _json_lines(out)] == ["s30", "s5"]  # type: ignore[index]
    _, out, _ = _run("--store", str(path), "--json", "--since", "2h")
    assert len(_json_lines(out)) == 3
    iso = datetime.fromtimestamp((now_ms - 100 * 60_000) / 1000, UTC).isoformat()
    _, out, _ = _run("--store", str(path), "--json", "--since", iso)
    assert len(_json_lines(out)) == 3
    code, _, err = _run("--store", str(path), "--since", "yesterday")
    assert code == 2 and "duration" in err


def test_parse_since() -> None:
    now = datetime(2024, 6, 10, 6, 0, 0, tzinfo=UTC)
    assert parse_since("1h", now) == parse_since("2024-06-10T05:00:00Z", now)
    assert parse_since("90s", now) == parse_since("2024-06-10 05:58:30", now)  # naive = UTC
    assert parse_since("1.5d", now) == parse_since("2024-06-08T18:00:00+00:00", now)
    assert parse_since("2024-06-10T14:00:00+08:00", now) == 1717999200 * 10**9
    with pytest.raises(ValueError):
        parse_since("3 fortnights", now)


def test_store_from_config(store: Path, tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(f'[store]\nsqlite = "{store.name}"\n')  # relative to the config file
    code, out, err = _run("--config", str(config), "--json", "-m", "fg_risk")
    assert code == 0, err
    assert len(_json_lines(out)) == 3
    influx = tmp_path / "influx.toml"
    influx.write_text('[influx]\nurl = "http://127.0.0.1:8086"\n')
    code, _, err = _run("--config", str(influx))
    assert code == 2 and "InfluxDB" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nsqlit = 1\n")
    code, _, err = _run("--config", str(bad))
    assert code == 2 and "sqlit" in err


def test_missing_store(tmp_path: Path) -> None:
    code, _, err = _run("--store", str(tmp_path / "nope.sqlite3"))
    assert code == 1 and "no store at" in err
    assert not (tmp_path / "nope.sqlite3").exists()  # a query never creates a store


def test_default_store_is_the_collectors_default() -> None:
    from collector.config import parse_config

    assert parse_config({}).sink.sqlite_path.resolve() == DEFAULT_STORE.resolve()
