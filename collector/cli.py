"""``firegate collector ...``: ``run``, ``status`` and (from ``collector.query``) ``query``.

``register(app)`` adds the ``collector`` group to the ``firegate`` command; this module also
runs on its own (``python -m collector.cli run --config FILE``). ``status`` reads the state
directory only (the registry database, the ledger), never the broker, so it answers whether
the collector runs or not; with several ``--config`` files (collectors sharing a
subscription) it merges them, and a seq is missing only if no collector stored it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["build", "collect_status", "merge_gaps", "register", "render_status", "run_command",
           "status_command"]

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The collector's TOML file.",
                                            exists=True, dir_okay=False)]


def register(app: typer.Typer) -> None:
    """Add the ``collector`` group (run, status, query) to ``app``."""
    app.add_typer(build(), name="collector")


def build() -> typer.Typer:
    from collector import query

    group = typer.Typer(help="Cloud collector: MQTT in, database out, alarms to webhooks.",
                        no_args_is_help=True)
    group.command("run")(run_command)
    group.command("status")(status_command)
    query.register(group)
    return group


def _load(path: Path | None) -> Any:
    from collector.config import ConfigError, load_config, parse_config

    try:
        return load_config(path) if path is not None else parse_config({})
    except ConfigError as e:
        typer.echo(f"error: {path}: {e}" if path else f"error: {e}", err=True)
        raise typer.Exit(2) from None


def run_command(
    config: ConfigOption,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error"
                                           )] = "info",
) -> None:
    """Run the collector until SIGTERM or Ctrl-C."""
    import asyncio
    import gc
    import logging

    from collector.app import Collector, CollectorError, run
    from collector.sinks.base import SinkError

    cfg = _load(config)
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = "off" if cfg.metrics_listen is None else \
        f"http://{cfg.metrics_listen[0]}:{cfg.metrics_listen[1]}/metrics"
    print(f"collector {cfg.collector_id}: broker {cfg.mqtt.url} as {cfg.mqtt.client_id}, "
          f"sink {cfg.sink.describe()}, metrics {metrics}", flush=True)

    def ready(c: Collector) -> None:
        share = cfg.mqtt.share_group or "none"
        print(f"ready: subscribed (share group {share}), state {cfg.state_dir}", flush=True)

    # The pipeline makes millions of short-lived objects (records, points): a higher
    # generation-0 threshold and frozen start-up objects cut the collector's GC work
    # (docs/wire-protocol.md, "Implementation notes").
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        asyncio.run(run(cfg, on_ready=ready))
    except (CollectorError, SinkError) as e:  # state directory in use, store cannot open
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    print("stopped", flush=True)


def status_command(
    config: Annotated[list[Path] | None, typer.Option(
        "--config", "-c", help="The collector's TOML file; repeat it for collectors sharing "
        "one subscription (their views are merged).", exists=True, dir_okay=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Sites and their colour, active alarms, gateways, gaps, dead letters, throughput."""
    configs = [_load(p) for p in config] if config else [_load(None)]
    data = collect_status(configs)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    render_status(data)


# -- gathering ---------------------------------------------------------------------------------


def merge_gaps(views: Sequence[tuple[list[tuple[str, int, int, int]], dict[str, int]]]
               ) -> list[dict[str, Any]]:
    """Gaps over several ledgers. Each view: (its gaps as (gateway, first, last, since_ms),
    highest stored-or-announced seq per gateway). A seq is missing when every ledger misses it
    (a ledger misses what is in its gaps or above its highest), up to the highest of all."""
    top: dict[str, int] = {}
    for _, highest in views:
        for gw, h in highest.items():
            top[gw] = max(top.get(gw, 0), h)
    out = []
    for gw in sorted(top):
        missing: list[tuple[int, int, int]] | None = None
        for gaps, highest in views:
            mine = [(a, b, s) for g, a, b, s in gaps if g == gw]
            mine.append((highest.get(gw, 0) + 1, top[gw], 0))
            missing = mine if missing is None else _intersect(missing, mine)
        for a, b, since in missing or []:
            if a <= b:
                out.append({"gateway": gw, "first": a, "last": b, "missing": b - a + 1,
                            "since_ms": since})
    return out


def _intersect(xs: list[tuple[int, int, int]], ys: list[tuple[int, int, int]]
               ) -> list[tuple[int, int, int]]:
    out = []
    for a1, b1, s1 in xs:
        for a2, b2, s2 in ys:
            a, b = max(a1, a2), min(b1, b2)
            if a <= b:
                out.append((a, b, max(s1, s2)))
    return sorted(out)


def collect_status(configs: Sequence[Any]) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the ``--json`` document)."""
    from collector.ledger import SeqLedger
    from collector.registry import read_status

    now_ms = time.time_ns() // 1_000_000
    gateways: dict[str, dict[str, Any]] = {}
    sites: dict[str, dict[str, Any]] = {}
    alarms: list[dict[str, Any]] = []
    collectors: list[dict[str, Any]] = []
    dead: dict[str, int] = {}
    views = []
    for cfg in configs:
        try:
            view = read_status(cfg.registry_path)
        except FileNotFoundError:
            collectors.append({"collector": cfg.collector_id, "state": "never run",
                               "state_dir": str(cfg.state_dir)})
            continue
        for g in view.gateways:
            current = gateways.get(g.id)
            if current is None or (g.last_seen_ms or 0) > (current["last_seen_ms"] or 0):
                gateways[g.id] = {**_asdict(g), "collector": cfg.collector_id}
        for s in view.sites:
            if s.id not in sites or s.updated_ms > sites[s.id]["updated_ms"]:
                sites[s.id] = {"site": s.id, "colour": s.colour, "reasons": s.reasons,
                               "since_ms": s.since_ms, "updated_ms": s.updated_ms}
        alarms += [{"site": c.site, "gateway": c.gateway_id, "source": c.source_id,
                    "kind": c.kind, "colour": c.colour.value, "since_ms": c.since_ms,
                    "text": c.text} for c in view.conditions]
        if not view.snapshots:
            collectors.append({"collector": cfg.collector_id, "state": "no snapshot yet",
                               "state_dir": str(cfg.state_dir)})
        for cid, (updated, body) in view.snapshots.items():
            alive = bool(body.get("running")) and _alive(body.get("pid")) and \
                now_ms - updated < 60_000
            collectors.append({**body, "collector": cid, "updated_ms": updated,
                               "state": "running" if alive else "stopped"})
            for reason, n in (body.get("dead_letters") or {}).items():
                dead[reason] = dead.get(reason, 0) + n
        if cfg.ledger_path.exists():
            ledger = SeqLedger(cfg.ledger_path)
            try:
                stats = ledger.stats().gateways
                views.append(([(g.gateway_id, g.first, g.last, g.since_ms)
                               for g in ledger.gaps()],
                              {gw: max(s.highest, s.announced) for gw, s in stats.items()}))
            finally:
                ledger.close()
    grace_ms = max(cfg.pipeline.gap_grace_s for cfg in configs) * 1000
    all_gaps = merge_gaps(views)
    gaps = [g for g in all_gaps if now_ms - g["since_ms"] >= grace_ms]
    online = sum(1 for g in gateways.values() if g["state"] == "online")
    return {
        "time_ms": now_ms, "collectors": collectors,
        "sites": sorted(sites.values(), key=lambda s: (-_RANK.get(s["colour"], 0), s["site"])),
        "alarms": sorted(alarms, key=lambda a: (-_RANK.get(a["colour"], 0), a["since_ms"])),
        "gateways": {"online": online,
                     "offline": sum(1 for g in gateways.values() if g["state"] == "offline"),
                     "unknown": len(gateways) - online - sum(
                         1 for g in gateways.values() if g["state"] == "offline"),
                     "list": sorted(gateways.values(), key=lambda g: g["id"])},
        "gaps": {"ranges": len(gaps), "records": sum(g["missing"] for g in gaps),
                 "late_records": sum(g["missing"] for g in all_gaps) - sum(
                     g["missing"] for g in gaps), "list": gaps},
        "dead_letters": dict(sorted(dead.items())),
        "records_per_s": sum(c.get("records_per_s", 0) for c in collectors
                             if c.get("state") == "running"),
    }


_RANK = {"green": 0, "yellow": 1, "red": 2}


def _asdict(g: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(g)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- rendering ---------------------------------------------------------------------------------

_STYLE = {"green": "bold green", "yellow": "bold yellow", "red": "bold red",
          "online": "green", "offline": "red", "unknown": "dim", "running": "green",
          "stopped": "red", "never run": "dim"}


def _when(ms: int | None, now_ms: int) -> str:
    if not ms:
        return "-"
    age = max(0, now_ms - ms) / 1000
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
    if age < 120:
        return f"{text} ({age:.0f} s ago)"
    if age < 7200:
        return f"{text} ({age / 60:.0f} min ago)"
    return f"{text} ({age / 3600:.1f} h ago)"


def render_status(data: dict[str, Any]) -> None:
    """Rich tables: collectors, sites, alarms, gateways, gaps, dead letters."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    now = data["time_ms"]

    def styled(text: str) -> str:
        style = _STYLE.get(text)
        return f"[{style}]{text}[/]" if style else text

    t = Table(title="collectors", title_justify="left")
    for col in ("collector", "state", "broker", "sink", "records/s", "stored", "duplicates",
                "queue", "updated"):
        t.add_column(col, overflow="fold")
    for c in data["collectors"]:
        sink = c.get("sink", "-") + (f"\n[red]{c['sink_error']}[/]" if c.get("sink_error")
                                     else "")
        broker = c.get("broker", "-") + ("" if c.get("connected") or c["state"] != "running"
                                         else " [red](disconnected)[/]")
        t.add_row(c["collector"], styled(c["state"]), broker, sink,
                  str(c.get("records_per_s", "-")), str(c.get("records_stored", "-")),
                  str(c.get("duplicates", "-")), str(c.get("queue_depth", "-")),
                  _when(c.get("updated_ms"), now))
    console.print(t)

    t = Table(title=f"sites ({len(data['sites'])})", title_justify="left")
    for col in ("site", "colour", "since", "reasons"):
        t.add_column(col, overflow="fold")
    for s in data["sites"]:
        reasons = "; ".join(s["reasons"][:3]) + (" ..." if len(s["reasons"]) > 3 else "")
        t.add_row(s["site"], styled(s["colour"]), _when(s["since_ms"], now), reasons or "-")
    console.print(t)

    if data["alarms"]:
        t = Table(title=f"active conditions ({len(data['alarms'])})", title_justify="left")
        for col in ("site", "gateway", "source", "condition", "since", ""):
            t.add_column(col, overflow="fold")
        for a in data["alarms"]:
            t.add_row(a["site"], a["gateway"], a["source"], styled(a["colour"]) + " " +
                      a["kind"], _when(a["since_ms"], now), a["text"])
        console.print(t)

    gw = data["gateways"]
    t = Table(title=f"gateways: {gw['online']} online, {gw['offline']} offline, "
              f"{gw['unknown']} unknown", title_justify="left")
    for col in ("gateway", "site", "state", "last seen", "version", "outbox", "links down"):
        t.add_column(col, overflow="fold")
    shown = [g for g in gw["list"] if g["state"] != "online"] + \
        [g for g in gw["list"] if g["state"] == "online"]
    for g in shown[:50]:
        state = styled(g["state"]) + (f" ({g['reason']})" if g["reason"] else "")
        t.add_row(g["id"], g["site"] or "-", state, _when(g["last_seen_ms"], now),
                  g["version"] or "-", "-" if g["outbox_depth"] is None else
                  str(g["outbox_depth"]), ", ".join(g["links_down"]) or "-")
    if len(shown) > 50:
        t.caption = f"{len(shown) - 50} more (--json lists all)"
    console.print(t)

    gaps = data["gaps"]
    if gaps["list"]:
        t = Table(title=f"gaps: {gaps['records']} records missing in {gaps['ranges']} ranges",
                  title_justify="left")
        for col in ("gateway", "seqs", "missing", "since"):
            t.add_column(col)
        for g in gaps["list"][:50]:
            t.add_row(g["gateway"], f"{g['first']}..{g['last']}", str(g["missing"]),
                      _when(g["since_ms"], now))
        console.print(t)
    else:
        console.print(f"gaps: none ({gaps['late_records']} records still arriving)")
    dead = data["dead_letters"]
    console.print("dead letters: " + (", ".join(f"{k} {v}" for k, v in dead.items()) or "none"))


def main() -> None:
    """``python -m collector.cli`` (until ``firegate collector`` is mounted)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app(["collector", *sys.argv[1:]])


if __name__ == "__main__":
    main()
