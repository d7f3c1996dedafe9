"""The demo's summary: a machine-readable account of one run (``--json``, ``--summary-json``).

Taken after every process has stopped, from three places: the live view's record of what
crossed the broker (events by type, colours and gateway states seen while running), the
collector's own final account (``firegate collector status --json``: records stored,
duplicates, dead letters, gaps), and with the embedded store the store itself (points per
measurement, the site's stored colour history). It lists every PID the demo started, so a
test can check that none is left.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from firegate.demo.plan import Layout, Story
from firegate.demo.stack import Running, Stack
from firegate.demo.watch import Observer, View, store_counts

__all__ = ["summarize"]


def summarize(observer: Observer | None, stack: Stack, layout: Layout, story: Story,
              scenario: Path, running: Running | None, *, outcome: str, problems: list[str],
              exit_code: int) -> dict[str, Any]:
    """The machine-readable account of a run (``--json``, ``--summary-json``), taken after
    every process stopped: what crossed the broker, what the collector stored, the colours
    and gateway states seen, and every PID the demo started."""
    view = observer.view if observer is not None else View()
    final = _final_collector(layout, story.gateway)
    events: dict[str, dict[str, int]] = {}
    for (kind, active), n in sorted(view.events.items()):
        events.setdefault(kind, {"raised": 0, "cleared": 0})["raised" if active else
                                                              "cleared"] += n
    store: dict[str, Any] = {"kind": "none"}
    colours = set(view.colours_seen)
    if running is not None and running.influx is not None:
        store = {"kind": "influx", "url": running.influx.url, "bucket": running.influx.bucket}
    elif running is not None and running.store is not None:
        store = {"kind": "sqlite", "path": str(running.store),
                 "points": store_counts(running.store) if running.store.exists() else {}}
        colours |= _stored_colours(running.store, story.site)
    snapshot = final.get("snapshot") or view.collector
    return {
        "exit_code": exit_code, "outcome": outcome, "problems": problems,
        "duration_s": round(time.monotonic() - running.t0, 1) if running else 0.0,
        "workdir": str(layout.root),
        "configs": {"gateway": str(layout.gateway_toml),
                    "collector": str(layout.collector_toml),
                    "scenario": str(layout.scenario), "story": str(scenario)},
        "broker": {"url": running.broker.url, "embedded": running.broker.embedded}
        if running else None,
        "store": store,
        "ble": {"ran": running is not None and running.ble_note is None,
                "note": running.ble_note if running else "not started"},
        "site": {"id": story.site, "colour_at_end": view.colour,
                 "colours_seen": sorted(colours)},
        "gateways": {story.gateway: {"states_seen": sorted(view.gateway_states_seen),
                                     "state_at_end": view.gateway_state,
                                     "state_after_stop": final.get("gateway_state")}},
        "published": {"records": view.records, "events": events,
                      "undecodable": view.tap_undecodable},
        "stored": {"records": snapshot.get("records_stored", 0),
                   "duplicates": snapshot.get("duplicates", 0),
                   "dead_letters": snapshot.get("dead_letters") or {},
                   "gap_records": final.get("gap_records")},
        "values": [{"source": r.source_id, "quantity": r.quantity, "value": r.value,
                    "unit": r.unit, "description": r.description}
                   for _key, r in sorted(view.readings.items())],
        "processes": stack.pids(),
    }


def _final_collector(layout: Layout, gateway: str) -> dict[str, Any]:
    """The collector's own account after it stopped: ``firegate collector status --json``."""
    from collector.config import ConfigError, load_config
    from collector.status import collect_status

    try:
        doc = collect_status([load_config(layout.collector_toml)])
    except (OSError, ConfigError, sqlite3.Error):
        return {}
    gateways: dict[str, dict[str, Any]] = {g["id"]: g for g in doc["gateways"]["list"]}
    snapshots = [c for c in doc["collectors"] if "records_stored" in c]
    return {"snapshot": snapshots[0] if snapshots else None,
            "gateway_state": gateways.get(gateway, {}).get("state"),
            "gap_records": doc["gaps"]["records"] + doc["gaps"]["late_records"]}


def _stored_colours(store: Path, site: str) -> set[str]:
    """Every colour the collector stored for ``site`` (its ``fg_risk`` history)."""
    from collector.sinks.sqlite import connect, read_points

    try:
        conn = connect(store, read_only=True)
        try:
            points = read_points(conn, measurement="fg_risk", site=site, limit=None)
        finally:
            conn.close()
    except sqlite3.Error:
        return set()
    return {str(p.fields.get("colour")) for p in points if p.fields.get("colour")}
