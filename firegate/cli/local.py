"""Technician's read commands: ``status``, ``events``, ``sensors``, ``outbox``.

They read the gateway's local files (``state.db`` written by the agent, ``outbox.db``), never
the agent itself, so they work the same while it runs and after it stopped (or crashed):
a maintenance visit to a gateway whose uplink is dead still shows what it saw. ``--json``
prints one JSON document (``status``, ``outbox``) or JSON lines (``events``, ``sensors``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from common.proc import pid_alive
from edge.state import StateReader
from firegate.textsafe import escaped

__all__ = ["register"]

DEFAULT_CONFIG = Path("/etc/firegate/gateway.toml")
STALE_S = 30.0  # a snapshot older than this (6 missed refreshes) means the agent is not running

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The agent's config file.")]
DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", help="Read this data directory instead of the one in the config.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _data_dir(config: Path, data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir
    from edge.config import ConfigError
    from edge.config.load import load_config

    try:
        return load_config(config).gateway.data_dir
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _reader(config: Path, data_dir: Path | None) -> StateReader:
    path = _data_dir(config, data_dir) / "state.db"
    try:
        return StateReader(path)
    except (FileNotFoundError, sqlite3.Error) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _age(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "-"
    s = max(0.0, (now_ms - ms) / 1000)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _since(text: str | None) -> int | None:
    """``15m``, ``2h``, ``1d``, ``30s`` ago, or an ISO date/time."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text)
    if match:
        seconds = float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
        return int((time.time() - seconds) * 1000)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use 30s, 15m, 2h, 1d or an ISO time") from None


def _agent_running(agent: dict[str, Any] | None, updated_ms: int | None) -> bool:
    if not agent or updated_ms is None:
        return False
    if not pid_alive(agent.get("pid")):  # an agent run as its service user is alive too
        return False
    return time.time() * 1000 - updated_ms < STALE_S * 1000


def status(config: ConfigOpt = DEFAULT_CONFIG, data_dir: DataDirOpt = None,
           as_json: JsonOpt = False) -> None:
    """Links, drivers, outbox and the last contact with the cloud."""
    with _reader(config, data_dir) as state:
        snaps = state.snapshots()
        alarms = state.active_alarms()
    now = int(time.time() * 1000)
    agent, agent_ms = snaps.get("agent", (None, None))
    running = _agent_running(agent, agent_ms)
    doc = {
        "running": running,
        "agent": agent,
        "updated_ms": agent_ms,
        "links": snaps.get("links", ({}, 0))[0],
        "counters": snaps.get("counters", ({}, 0))[0],
        "outbox": snaps.get("outbox", ({}, 0))[0],
        "uplink": snaps.get("uplink", ({}, 0))[0],
        "active_threshold_alarms": [{"source": s, "type": t} for s, t in alarms],
    }
    if as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    console = Console()
    who = agent or {}
    console.print(f"[bold]gateway[/] {escaped(who.get('gateway_id', '?'))}  site "
                  f"{escaped(who.get('site') or '-')}  version {escaped(who.get('version', '?'))}")
    console.print("agent: " + ("[green]running[/]" if running else "[red]not running[/]")
                  + f" (state written {_age(agent_ms, now)} ago)")
    uplink = doc["uplink"] or {}
    last = uplink.get("last_ack_ms")
    console.print(f"cloud: {escaped(uplink.get('state', 'not configured'))}, last contact "
                  f"{_age(last, now)} ago ({_when(last)})")
    links = Table("link", "state", "since", "detail", title="Links")
    for name, info in sorted(doc["links"].items()):
        colour = "green" if info["state"] == "up" else "red"
        links.add_row(escaped(name), f"[{colour}]{escaped(info['state'])}[/]",
                      _when(info.get("since_ms")), escaped(info.get("detail") or ""))
    console.print(links)
    counters = Table("driver", "counter", "count", title="Counters")
    for name, per in sorted(doc["counters"].items()):
        for reason, n in sorted(per.items()):
            counters.add_row(escaped(name), escaped(reason), str(n))
    console.print(counters)
    _print_outbox(console, doc["outbox"])
    if alarms:
        console.print("[red]active threshold alarms:[/] "
                      + ", ".join(f"{escaped(s)} ({escaped(t)})" for s, t in alarms))


def _print_outbox(console: Console, ob: dict[str, Any]) -> None:
    if not ob:
        console.print("outbox: no data")
        return
    table = Table("class", "waiting", "evicted", title="Outbox")
    depth, evicted = ob.get("depth", {}), ob.get("evicted", {})
    for label in ("fire", "alarm", "event", "measurement"):
        table.add_row(label, str(depth.get(label, 0)), str(evicted.get(label, 0)))
    console.print(table)
    oldest = ob.get("oldest_age_s")
    console.print(f"oldest unsent: {'-' if oldest is None else f'{oldest:.0f} s'}; "
                  f"in flight {ob.get('in_flight', 0)}; last seq {ob.get('last_seq', 0)}; "
                  f"file {ob.get('file_bytes', 0) / 1e6:.1f} MB")
    _print_unconfirmed(console, ob)


def _print_unconfirmed(console: Console, ob: dict[str, Any]) -> None:
    """Records the broker acknowledged that stay stored until a collector confirms them."""
    if "sent_unconfirmed" not in ob:
        return
    wait = ob.get("oldest_unconfirmed_s")
    console.print(f"sent, awaiting the collector's confirmation: {ob['sent_unconfirmed']}"
                  + ("" if wait is None else f" (oldest {wait:.0f} s)"))


def events(config: ConfigOpt = DEFAULT_CONFIG, data_dir: DataDirOpt = None,
           kind: Annotated[list[str] | None, typer.Option(
               "--kind", "-k", help="Event type, e.g. fire_alarm, fault (repeatable).")] = None,
           since: Annotated[str | None, typer.Option(help="30s, 15m, 2h, 1d or ISO time.")] = None,
           source: Annotated[str | None, typer.Option(help="Source id, * as wildcard.")] = None,
           active: Annotated[bool, typer.Option("--active", help="Raised only.")] = False,
           limit: Annotated[int, typer.Option(min=1)] = 50,
           as_json: JsonOpt = False) -> None:
    """Recent events, newest first."""
    since_ms = _since(since)
    with _reader(config, data_dir) as state:
        rows = state.events(since_ms=since_ms, types=kind or [], source=source,
                            active_only=active, limit=limit)
    if as_json:
        for r in rows:
            typer.echo(json.dumps({f: getattr(r, f) for f in r.__slots__}, ensure_ascii=False))
        return
    table = Table("time", "seq", "event", "on", "source", "description", "detail",
                  title=f"Events ({len(rows)})")
    for r in rows:
        colour = "red" if r.priority == 0 else "yellow" if r.priority == 1 else "white"
        table.add_row(_when(r.receive_ms), str(r.seq or "-"), f"[{colour}]{escaped(r.type)}[/]",
                      "raised" if r.active else "cleared", escaped(r.source_id),
                      escaped(r.description or ""), escaped(r.detail or ""))
    Console().print(table)


def sensors(config: ConfigOpt = DEFAULT_CONFIG, data_dir: DataDirOpt = None,
            as_json: JsonOpt = False) -> None:
    """Latest value of every sensor, with its unit, thresholds and age."""
    path_config = None if data_dir is not None else config
    rules = _rules(path_config)
    with _reader(config, data_dir) as state:
        rows = state.sensors()
        alarms = set(state.active_alarms())
    now = int(time.time() * 1000)
    if as_json:
        for r in rows:
            doc = {f: getattr(r, f) for f in r.__slots__}
            doc["rule"] = rules(r.source_id)
            doc["alarms"] = sorted(t for s, t in alarms if s == r.source_id)
            typer.echo(json.dumps(doc, ensure_ascii=False))
        return
    table = Table("sensor", "description", "value", "unit", "low", "high", "alarm", "age",
                  title=f"Sensors ({len(rows)})")
    for r in rows:
        rule = rules(r.source_id) or {}
        flags = ", ".join(sorted(t for s, t in alarms if s == r.source_id))
        table.add_row(escaped(r.source_id), escaped(r.description or ""), f"{r.value:g}",
                      escaped(r.unit), _num(rule.get("low")), _num(rule.get("high")),
                      f"[red]{escaped(flags)}[/]" if flags else "", _age(r.receive_ms, now))
    Console().print(table)


def _num(value: object) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float | int) else str(value)


def _rules(config: Path | None) -> Callable[[str], dict[str, Any] | None]:
    """Thresholds per sensor from the config's rules (none without a readable config)."""
    if config is None or not config.exists():
        return lambda _sid: None
    from edge.config import ConfigError
    from edge.config.load import load_config
    from edge.rules import RuleEngine

    try:
        engine = RuleEngine(load_config(config).rules)
    except ConfigError:
        return lambda _sid: None

    def lookup(source_id: str) -> dict[str, Any] | None:
        rule = engine.rule_for(source_id)
        if rule is None:
            return None
        return {"name": rule.name, "low": rule.low, "high": rule.high,
                "hysteresis": rule.hysteresis, "debounce_s": rule.debounce_s}

    return lookup


def outbox(config: ConfigOpt = DEFAULT_CONFIG, data_dir: DataDirOpt = None,
           as_json: JsonOpt = False) -> None:
    """What waits to be sent, per class, read from the outbox file itself."""
    path = _data_dir(config, data_dir) / "outbox.db"
    if not path.exists():
        typer.echo(f"error: no outbox at {path}", err=True)
        raise typer.Exit(1)
    labels = {0: "fire", 1: "alarm", 2: "event", 3: "measurement"}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = db.execute("SELECT priority, count(*), sum(length(payload)), min(stored_ms), "
                          "min(seq), max(seq) FROM outbox GROUP BY priority").fetchall()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()
    now = int(time.time() * 1000)
    per = {labels[p]: {"records": n, "bytes": b or 0, "oldest_ms": o, "first_seq": lo,
                       "last_seq": hi} for p, n, b, o, lo, hi in rows}
    evicted = {k.split(".", 1)[1]: v for k, v in meta.items()
               if k.startswith("evicted.") and v}
    running = _running_outbox_view(path.parent)
    doc = {"path": str(path), "classes": per, "meta": meta, "evicted": evicted,
           "file_bytes": sum(p.stat().st_size for p in path.parent.glob(path.name + "*")
                             if p.is_file()),
           # Which records are sent and await confirmation is the running agent's memory
           # (None when it is not running: then all of them go out at its next start).
           "sent_unconfirmed": None if running is None else running.get("sent_unconfirmed"),
           "oldest_unconfirmed_s": None if running is None else
           running.get("oldest_unconfirmed_s")}
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table("class", "records", "bytes", "oldest", "seqs", title=f"Outbox {escaped(path)}")
    for label in labels.values():
        c = per.get(label)
        if c is None:
            table.add_row(label, "0", "0", "-", "-")
        else:
            table.add_row(label, str(c["records"]), str(c["bytes"]),
                          _age(c["oldest_ms"], now) + " old",
                          f"{c['first_seq']}..{c['last_seq']}")
    console = Console()
    console.print(table)
    console.print("evicted: " + (", ".join(f"{k} {v}" for k, v in sorted(evicted.items()))
                                 or "none"))
    if running is None:
        console.print("agent not running: every record above goes out at its next start")
    else:
        _print_unconfirmed(console, running)


def _running_outbox_view(data_dir: Path) -> dict[str, Any] | None:
    """The running agent's snapshot of its outbox (``state.db``); None when it is not
    running (a stale snapshot says nothing about what is sent now)."""
    try:
        with StateReader(data_dir / "state.db") as state:
            snaps = state.snapshots()
    except (FileNotFoundError, sqlite3.Error):
        return None
    agent, agent_ms = snaps.get("agent", (None, None))
    if not _agent_running(agent, agent_ms):
        return None
    view = snaps.get("outbox", ({}, 0))[0]
    return view if isinstance(view, dict) else None


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("events")(events)
    app.command("sensors")(sensors)
    app.command("outbox")(outbox)
