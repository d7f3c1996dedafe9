"""``firegate collector query``: read the embedded store (the SQLite sink) from a terminal.

Prints the newest points that match the filters as a table, oldest first so it reads like a
log, or as JSON lines (``--json``) for scripts. The store is found from ``--store PATH``, else
from the collector's ``--config FILE`` (``[store] sqlite``), else at the default
``firegate-collector/store.sqlite3``. It is opened read-only, so querying a running
collector's store is safe (WAL lets readers and the writer work at once).
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from collector.sinks.config import DEFAULT_SQLITE_NAME
from collector.sinks.sqlite import StoredPoint, connect, read_points

__all__ = ["DEFAULT_STORE", "format_time", "parse_since", "query", "register"]

DEFAULT_STORE = Path("firegate-collector") / DEFAULT_SQLITE_NAME
"""The store of a collector run without ``[collector] state_dir`` or ``[store] sqlite``."""

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAIN_TAGS = ("site", "gateway", "source")


def parse_since(text: str, now: datetime | None = None) -> int:
    """``30m``, ``1h``, ``2d``, ``1w`` ago, or an ISO 8601 time (UTC unless it says), in ns."""
    now = now or datetime.now(UTC)
    m = _RELATIVE.fullmatch(text.strip())
    if m:
        start = now - timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
    else:
        try:
            start = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is neither a duration like 1h/30m/2d nor an ISO "
                             f"time like 2024-06-10T08:00:00Z") from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    delta = start - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def format_time(time_ns: int) -> str:
    """UTC with milliseconds: ``2024-06-10 06:13:20.123``."""
    seconds, ns = divmod(time_ns, 10**9)
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return f"{when:%Y-%m-%d %H:%M:%S}.{ns // 10**6:03d}"


def _field_text(point: StoredPoint) -> str:
    fields = dict(point.fields)
    parts: list[str] = []
    if "value" in fields and "unit" in fields:  # a measurement reads best as "0.32 MPa"
        parts.append(f"{fields.pop('value')} {fields.pop('unit')}".rstrip())
    parts += [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in fields.items()]
    return " ".join(parts)


def _resolve_store(store: Path | None, config: Path | None) -> Path:
    if store is not None:
        return store
    if config is not None:
        from collector.config import load_config
        from common.config import ConfigError

        try:
            sink = load_config(config).sink
        except ConfigError as e:
            raise typer.BadParameter(str(e), param_hint="--config") from None
        if sink.influx_url is not None:
            typer.echo(f"this collector stores into InfluxDB ({sink.influx_url}); query it "
                       "there (Flux, InfluxQL or SQL), not with 'collector query'", err=True)
            raise typer.Exit(2)
        return sink.sqlite_path
    return DEFAULT_STORE


def _print_table(points: list[StoredPoint], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from firegate.textsafe import escaped

    table = Table(title=f"{len(points)} point(s) from {escaped(path)}", title_justify="left")
    for name in ("time (UTC)", "measurement", *_MAIN_TAGS, "tags", "fields"):
        table.add_column(name, overflow="fold")
    for p in points:
        other = " ".join(f"{k}={v}" for k, v in p.tags.items() if k not in _MAIN_TAGS)
        table.add_row(format_time(p.time_ns), escaped(p.measurement),
                      *(escaped(p.tags.get(k, "")) for k in _MAIN_TAGS), escaped(other),
                      escaped(_field_text(p)))
    Console().print(table)


def query(
    measurement: Annotated[str | None, typer.Option(
        "--measurement", "-m", help="fg_event, fg_value, fg_health, fg_gateway, fg_risk, "
        "fg_gap, fg_counter or fg_link.")] = None,
    gateway: Annotated[str | None, typer.Option("--gateway", "-g", help="Gateway id.")] = None,
    site: Annotated[str | None, typer.Option("--site", help="Site id.")] = None,
    source: Annotated[str | None, typer.Option(
        "--source", help="Source id, e.g. modbus/bus1/3/pressure.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only newer points: 30m, 1h, 2d, 1w or an ISO time.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1,
                                       help="At most this many (the newest).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")
                       ] = False,
    store: Annotated[Path | None, typer.Option("--store", help="The store's SQLite file.")
                     ] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="The collector's TOML config, to find its store.")] = None,
) -> None:
    """Show points from the collector's embedded store (newest N, printed oldest first)."""
    path = _resolve_store(store, config)
    try:
        since_ns = parse_since(since) if since is not None else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--since") from None
    if not path.is_file():
        typer.echo(f"no store at {path} (give --store PATH or --config FILE)", err=True)
        raise typer.Exit(1)
    try:
        conn = connect(path, read_only=True)
        try:
            points = read_points(conn, measurement=measurement, gateway=gateway, site=site,
                                 source=source, since_ns=since_ns, limit=limit)
        finally:
            conn.close()
    except sqlite3.Error as e:
        typer.echo(f"cannot read {path}: {e}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        for p in points:
            typer.echo(json.dumps({**p.to_json(), "time": format_time(p.time_ns)},
                                  ensure_ascii=False))
    else:
        _print_table(points, path)


def register(app: typer.Typer) -> None:
    """Add ``query`` to the ``collector`` command group."""
    app.command("query")(query)
