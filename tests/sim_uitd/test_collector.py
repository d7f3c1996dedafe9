"""The UITD fleet against a real collector acting as GB/T 26875.3 centre (collector/uitd/):
real Mosquitto, the embedded SQLite store, ``[gb26875] listen`` on a free loopback port and
``accept_unknown = true``. Every fire alarm the fleet's ground truth holds must be in the store
exactly once, under the gateway id the collector gives an unlisted UITD, for its detector."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import tomli_w

from collector.app import Collector
from collector.config import load_config
from simulators.uitd import FireAlarm, UitdFleet, parse_spec, uitd_entries
from tests.collector.conftest import config_data, stored_points
from tests.infra.mosquitto import Mosquitto

from .helpers import WAIT


def fire_alarms(store: Path) -> Counter[tuple[str, str, int]]:
    """(gateway, source, time label of the alarm in ms) of every stored fire alarm raise."""
    out: Counter[tuple[str, str, int]] = Counter()
    for p in stored_points(store, "fg_event"):
        row = {**dict(p.tags), **dict(p.fields)}
        # detectors only: the system's word (type 1) and the UITD's (type 21) restate a
        # fire alarm as their own condition, sources gb26875/1-1/system and gb26875/uitd
        if (row["type"] == "fire_alarm" and row["active"] is True
                and "/42-0x" in str(row["source"])):
            out[(str(row["gateway"]), str(row["source"]), int(row["source_ms"]))] += 1
    return out


def start_collector(tmp_path: Path, broker: Mosquitto, **gb: object) -> tuple[Collector, Path]:
    store = tmp_path / "store.sqlite"
    data = config_data(tmp_path / "state", broker,
                       store={"sqlite": str(store), "retention_days": 0},
                       gb26875={"listen": "127.0.0.1:0", **gb})
    path = tmp_path / "collector.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return Collector(load_config(path)).start(), store


def expected_alarms(alarms: list[FireAlarm]) -> Counter[tuple[str, str, int]]:
    """Each alarm of the ground truth as one stored raise: its UITD's gateway id, its
    detector, its time label (local time; the collector's zone is this machine's too)."""
    return Counter((a.uitd.gateway, f"gb26875/1-1/42-0x{a.detector:08x}",
                    round(datetime.fromisoformat(a.time).timestamp() * 1000)) for a in alarms)


async def test_every_fire_alarm_of_the_fleet_is_stored_once(mosquitto: Mosquitto,
                                                           tmp_path: Path) -> None:
    collector, store = start_collector(tmp_path, mosquitto, accept_unknown=True)
    try:
        assert collector.centre is not None and collector.centre.port
        spec = parse_spec({
            "centre": f"127.0.0.1:{collector.centre.port}", "uitds": 20, "detectors": 4,
            "state_interval": 0, "rate": 20, "confirm_timeout": 5.0,
            "reconnect_min": 0.1, "reconnect_max": 0.5,
            "bursts": [{"at": 0.5, "fraction": 0.5, "alarms": 2, "spread": 0.5,
                        "reset_after": 1.0},
                       {"at": 3.0, "fraction": 0.5, "alarms": 1, "spread": 0.5,
                        "reset_after": "never"}],
            "drops": [{"at": 2.0, "fraction": 0.25, "duration": 0.5}]})
        async with UitdFleet(spec) as fleet:
            assert await fleet.wait_connected(WAIT)
            assert await fleet.wait_until(lambda: fleet.ledger.counts["bursts"] == 2, WAIT)
            assert await fleet.drain(WAIT * 2)
            report = fleet.report()
    finally:
        collector.close()
    assert report.ok, report.totals()
    truth = report.ledger.alarms
    assert len(truth) == 10 * 2 + 10
    stored = fire_alarms(store)
    by_gateway = Counter(gw for gw, _, _ in stored.elements())
    assert by_gateway == Counter(a.uitd.gateway for a in truth)
    assert all(n == 1 for n in stored.values()), [k for k, n in stored.items() if n > 1]
    assert stored == expected_alarms(truth)


async def test_the_printed_uitd_list_admits_a_mixed_dialect_fleet(mosquitto: Mosquitto,
                                                                   tmp_path: Path) -> None:
    fleet_table = {"uitds": 6, "detectors": 2, "state_interval": 0,
                   "profiles": ["standard", "hikvision"], "first_address": 0x0379}
    entries = uitd_entries(parse_spec(fleet_table))  # what --print-uitd-list prints
    collector, store = start_collector(tmp_path, mosquitto, uitd=entries)
    try:
        assert collector.centre is not None
        spec = parse_spec({**fleet_table, "centre": f"127.0.0.1:{collector.centre.port}",
                           "bursts": [{"at": 0.2, "alarms": 2, "spread": 0.3,
                                       "reset_after": "never"}]})
        async with UitdFleet(spec) as fleet:
            assert await fleet.wait_connected(WAIT)
            assert await fleet.wait_until(lambda: fleet.ledger.counts["bursts"] == 1, WAIT)
            assert await fleet.drain(WAIT)
            report = fleet.report()
    finally:
        collector.close()
    assert report.ok, report.totals()
    assert len(report.ledger.alarms) == 12
    assert fire_alarms(store) == expected_alarms(report.ledger.alarms)
    assert {a.uitd.profile.name for a in report.ledger.alarms} == {"standard", "hikvision"}
