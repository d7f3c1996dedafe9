"""``firegate collector ...``: ``run`` (:mod:`collector.launch`), ``status`` (gathered by
:mod:`collector.status`, rendered here) and ``query`` (:mod:`firegate.cli.collector_query`).

``register(app)`` adds the ``collector`` group to the ``firegate`` command. ``status`` reads the
state directory only, never the broker, so it answers whether the collector runs or not; with
several ``--config`` files (collectors sharing a subscription) it merges their views.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["build", "register", "render_status", "run_command", "status_command"]

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The collector's TOML file.",
                                            exists=True, dir_okay=False)]


def register(app: typer.Typer) -> None:
    """Add the ``collector`` group (run, status, query) to ``app``."""
    app.add_typer(build(), name="collector")


def build() -> typer.Typer:
    from firegate.cli import collector_query as query

    group = typer.Typer(help="Cloud collector: MQTT in, database out, alarms to webhooks.",
                        no_args_is_help=True)
    group.command("run")(run_command)
    group.command("status")(status_command)
    query.register(group)
    from firegate.cli import collector_alarms as alarms

    alarms.register(group)
    from firegate.cli import collector_uitd as uitd

    uitd.register(group)
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
    from collector.launch import run

    raise typer.Exit(run(config, log_level))


def status_command(
    config: Annotated[list[Path] | None, typer.Option(
        "--config", "-c", help="The collector's TOML file; repeat it for collectors sharing "
        "one subscription (their views are merged).", exists=True, dir_okay=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Sites and their colour, active alarms, gateways, gaps, dead letters, throughput."""
    configs = [_load(p) for p in config] if config else [_load(None)]
    from collector.status import collect_status

    data = collect_status(configs)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    render_status(data)


# -- rendering ---------------------------------------------------------------------------------

_REWRITE_STYLE = {"overwrite": "green", "deduplicated": "green", "duplicates": "bold red",
                  "unknown": "yellow"}
_STYLE = {"green": "bold green", "yellow": "bold yellow", "red": "bold red",
          "online": "green", "offline": "red", "unknown": "dim", "running": "green",
          "stopped": "red", "never run": "dim", "up": "green", "dead": "bold red"}


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


def _count(value: object) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def _upstream_table(console: Any, rows: list[dict[str, Any]], styled: Any, esc: Any) -> None:
    """GB/T 26875.3 forwarding upward (docs/gb26875-upstream.md): per higher centre its link,
    what waits for its confirmation (a row leaves the queue only when confirmed) and the
    counters since the collector started. Something waiting on a link that is down is red."""
    from rich.table import Table

    t = Table(title="upstreams (GB/T 26875.3, forwarding up)", title_justify="left")
    for col in ("collector", "upstream", "link", "queue", "oldest unconfirmed", "sent",
                "confirmed", "resent", "evicted", "expired", "last error"):
        t.add_column(col, overflow="fold")
    for u in rows:
        depth = u.get("queue_depth")
        waiting = isinstance(depth, int) and depth > 0
        if u.get("connected"):
            link = styled("connected")
        else:
            link = "[bold red]disconnected[/]" if waiting else "[red]disconnected[/]"
        if u.get("connect"):
            link += f"\n{esc(str(u['connect']))}"
        age = u.get("oldest_unconfirmed_age_s")
        oldest = f"{age:g} s" if isinstance(age, int | float) and not isinstance(age, bool) \
            else "-"
        # Evicted (queue full) and expired (too old) uploads never reached the centre: red.
        evicted, expired = (_count(u.get(k)) for k in ("evicted", "expired"))
        t.add_row(esc(str(u.get("collector", "-"))), esc(str(u.get("name", "-"))), link,
                  _count(depth), oldest, _count(u.get("sent")), _count(u.get("confirmed")),
                  _count(u.get("resent")),
                  f"[red]{evicted}[/]" if evicted not in ("-", "0") else evicted,
                  f"[red]{expired}[/]" if expired not in ("-", "0") else expired,
                  esc(str(u["last_error"])) if u.get("last_error") else "-")
    console.print(t)


def render_status(data: dict[str, Any]) -> None:
    """Rich tables: collectors, webhooks, upstreams, sites, alarms, gateways, gaps, dead
    letters."""
    from rich.console import Console
    from rich.table import Table

    from firegate.textsafe import escaped as esc  # every text from a file or the field

    console = Console()
    now = data["time_ms"]

    def styled(text: str) -> str:
        style = _STYLE.get(text)
        return f"[{style}]{esc(text)}[/]" if style else esc(text)

    t = Table(title="collectors", title_justify="left")
    for col in ("collector", "state", "broker", "sink", "records/s", "stored", "duplicates",
                "queue", "updated"):
        t.add_column(col, overflow="fold")
    for c in data["collectors"]:
        sink = esc(c.get("sink", "-")) + (f"\n[red]{esc(c['sink_error'])}[/]"
                                          if c.get("sink_error") else "")
        rewrites = c.get("sink_rewrites") or {}
        if rewrites:  # what a rewrite after a crash does there (docs/collector-storage.md)
            style = _REWRITE_STYLE.get(rewrites.get("kind", ""), "yellow")
            sink += f"\n[{style}]rewrites: {esc(str(rewrites.get('kind')))}[/]"
        broker = esc(c.get("broker", "-")) + ("" if c.get("connected") or c["state"] != "running"
                                              else " [red](disconnected)[/]")
        lost = c.get("session_lost") or {}
        if lost.get("count"):  # the broker no longer had its session (collector/session.py)
            broker += (f"\n[bold red]session lost {int(lost['count'])}x, last "
                       f"{_when(lost.get('last_ms'), now)}: messages may have been lost, "
                       "see the gaps[/]")
        t.add_row(esc(c["collector"]), styled(c["state"]), broker, sink,
                  str(c.get("records_per_s", "-")), str(c.get("records_stored", "-")),
                  str(c.get("duplicates", "-")), str(c.get("queue_depth", "-")),
                  _when(c.get("updated_ms"), now))
    console.print(t)

    if data.get("webhooks"):
        # A dead sender means notifications wait while MQTT is still acknowledged: red.
        t = Table(title="webhooks", title_justify="left")
        for col in ("collector", "webhook", "senders", "pending", "failed", "errors",
                    "last error"):
            t.add_column(col, overflow="fold")
        for w in data["webhooks"]:
            senders = ", ".join(f"{esc(lane)} {styled(state)}"
                                for lane, state in w["lanes"].items())
            if w.get("restarts"):
                senders += f" ({w['restarts']} restarts)"
            error = "-" if not w.get("last_error") else \
                f"{esc(w['last_error'])} ({_when(w.get('last_error_ms'), now)})"
            t.add_row(esc(w["collector"]), esc(w["webhook"]), senders, str(w.get("pending", "-")),
                      str(w.get("failed", "-")), str(w.get("errors", "-")), error)
        console.print(t)

    if data.get("upstreams"):
        _upstream_table(console, data["upstreams"], styled, esc)

    t = Table(title=f"sites ({len(data['sites'])})", title_justify="left")
    for col in ("site", "colour", "since", "reasons"):
        t.add_column(col, overflow="fold")
    for s in data["sites"]:
        reasons = "; ".join(map(esc, s["reasons"][:3])) + (" ..." if len(s["reasons"]) > 3 else "")
        t.add_row(esc(s["site"]), styled(s["colour"]), _when(s["since_ms"], now), reasons or "-")
    console.print(t)

    if data["alarms"]:
        t = Table(title=f"active conditions ({len(data['alarms'])})", title_justify="left")
        for col in ("site", "gateway", "source", "condition", "since", ""):
            t.add_column(col, overflow="fold")
        for a in data["alarms"]:
            t.add_row(esc(a["site"]), esc(a["gateway"]), esc(a["source"]),
                      styled(a["colour"]) + " " + esc(a["kind"]), _when(a["since_ms"], now),
                      esc(a["text"]))
        console.print(t)

    gw = data["gateways"]
    t = Table(title=f"gateways: {gw['online']} online, {gw['offline']} offline, "
              f"{gw['unknown']} unknown", title_justify="left")
    for col in ("gateway", "site", "state", "last seen", "version", "outbox", "links down"):
        t.add_column(col, overflow="fold")
    shown = [g for g in gw["list"] if g["state"] != "online"] + \
        [g for g in gw["list"] if g["state"] == "online"]
    for g in shown[:50]:
        state = styled(g["state"]) + (f" ({esc(g['reason'])})" if g["reason"] else "")
        t.add_row(esc(g["id"]), esc(g["site"] or "-"), state, _when(g["last_seen_ms"], now),
                  esc(g["version"] or "-"), "-" if g["outbox_depth"] is None else
                  str(g["outbox_depth"]), ", ".join(map(esc, g["links_down"])) or "-")
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
            t.add_row(esc(g["gateway"]), f"{g['first']}..{g['last']}", str(g["missing"]),
                      _when(g["since_ms"], now))
        console.print(t)
    else:
        console.print(f"gaps: none ({gaps['late_records']} records still arriving)")
    dead = data["dead_letters"]
    console.print("dead letters: " + (", ".join(f"{esc(k)} {v}" for k, v in dead.items())
                                      or "none"))
    resets = data.get("resets") or []
    if resets:
        t = Table(title=f"gateway resets: {len(resets)} (a new store: seqs start again)",
                  title_justify="left")
        for col in ("gateway", "when", "old epoch", "ended at seq", "never stored",
                    "new epoch"):
            t.add_column(col)
        for r in resets[:20]:
            lost = str(r["old_missing"])
            t.add_row(esc(r["gateway"]), _when(r["at_ms"], now), r["old_epoch"],
                      str(r["old_highest"]), f"[red]{lost}[/]" if r["old_missing"] else lost,
                      r["new_epoch"])
        console.print(t)
    for gw, n in (data.get("seq_regressions") or {}).items():
        console.print(f"[red]gateway {esc(gw)}: its seq went backwards {n} time(s) inside one "
                      "epoch (a store restored from an older copy?)[/]")
