"""``firegate collector alarms ...``: the alarm book of a collector's state directory
(docs/alarms.md).

* ``list`` and ``show ID`` read ``<state_dir>/alarms.sqlite`` read-only, so they answer whether
  the collector runs or not;
* ``ack ID`` and ``resolve ID --verdict real|false|test`` write it, and only while the collector
  is stopped (they take its state-directory lock): a running collector keeps its open alarms in
  memory and would not see a change made beside it - use the API or the console then.

Text from the field is shown with control characters made visible; ``--json`` keeps it exact.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer

__all__ = ["build", "register"]

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The collector's TOML file.",
                                            exists=True, dir_okay=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document, exact text.")]
IdArg = Annotated[str, typer.Argument(help="The alarm's id (a + 16 hex digits).")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who (default: your user name).")]
NoteOption = Annotated[str | None, typer.Option("--note", help="A note kept with it.")]


def register(group: typer.Typer) -> None:
    """Add ``alarms`` to the ``collector`` group."""
    group.add_typer(build(), name="alarms")


def build() -> typer.Typer:
    app = typer.Typer(help="The collector's alarms: list, show, acknowledge, resolve.",
                      no_args_is_help=True)
    app.command("list")(list_command)
    app.command("show")(show_command)
    app.command("ack")(ack_command)
    app.command("resolve")(resolve_command)
    return app


def _config(path: Path) -> Any:
    from collector.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as e:
        typer.echo(f"error: {path}: {e}", err=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[Any]:
    from collector.alarms.store import AlarmStore

    config = _config(path)
    try:
        store = AlarmStore(config.alarms_path, read_only=True)
        store.select("0", ())  # fails here when there is no book yet
    except sqlite3.OperationalError:
        typer.echo(f"no alarms yet: {config.alarms_path} does not exist", err=True)
        raise typer.Exit(1) from None
    try:
        yield store
    finally:
        store.close()


def _shown(text: object) -> str:
    """Field text for the terminal: the project's one rule (firegate/textsafe.py): C0 as
    control pictures, C1, line separators and bidi controls as escapes."""
    from firegate.textsafe import visible  # rich, imported only when something is shown

    return visible(text)


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def list_command(
    config: ConfigOption,
    state: Annotated[str, typer.Option(help="open, active, cleared, closed or all")] = "open",
    site: Annotated[str | None, typer.Option(help="One site only.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    as_json: JsonOption = False,
) -> None:
    """Alarms, newest first (default: the open ones)."""
    from collector.alarms.book import select_alarms

    with _reading(config) as store:
        try:
            alarms = select_alarms(store, state=state, site=site, limit=limit)
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps([a.to_json() for a in alarms], ensure_ascii=False, indent=2))
        return
    if not alarms:
        typer.echo(f"no {state} alarms")
        return
    for a in alarms:
        ack = f"ack {_shown(a.acknowledged_by)}" if a.acknowledged else "NOT ACKNOWLEDGED"
        verdict = f", {_shown(a.resolution)}" if a.resolution else ""
        typer.echo(f"{a.id}  {_when(a.raised_ms)}  {_shown(a.type):<18} {a.state:<7} "
                   f"{ack}{verdict}  "
                   f"site {_shown(a.site)}  {_shown(a.gateway)} {_shown(a.source)}  "
                   f"{_shown(a.description)}  step {a.escalation_step}")


def show_command(config: ConfigOption, alarm_id: IdArg, as_json: JsonOption = False) -> None:
    """One alarm with its timeline."""
    with _reading(config) as store:
        found = store.get(alarm_id)
        timeline = store.timeline(alarm_id) if found is not None else []
    if found is None:
        typer.echo(f"error: no alarm {_shown(alarm_id)}", err=True)
        raise typer.Exit(1)
    a = found.alarm
    if as_json:
        typer.echo(json.dumps({"alarm": a.to_json(), "timeline": [e.to_json() for e in timeline]},
                              ensure_ascii=False, indent=2))
        return
    for name, value in a.to_json().items():
        typer.echo(f"{name:>18}: {_shown(value)}")
    typer.echo("timeline:")
    for e in timeline:
        who = f" by {_shown(e.by)}" if e.by else ""
        typer.echo(f"  {_when(e.at_ms)}  {_shown(e.what)}{who}" +
                   (f": {_shown(e.detail)}" if e.detail else ""))


@contextlib.contextmanager
def _stopped(config: Any) -> Iterator[None]:
    """The collector's state-directory lock, held while the book is written: refused while
    the collector runs (it would not see the change), and it cannot start meanwhile."""
    path: Path = config.state_dir / "collector.lock"
    if not path.exists():
        yield
        return
    f: IO[str] = open(path)  # noqa: SIM115 - held for the block; never written
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = f.read().strip()
            typer.echo(f"error: the collector is running ({owner or 'pid unknown'}); it keeps "
                       "its open alarms in memory: acknowledge or resolve through the API or "
                       "the console", err=True)
            raise typer.Exit(1) from None
        yield
    finally:
        f.close()


def _act(path: Path, alarm_id: str, action: str, **kw: Any) -> None:
    from collector.alarms.book import AlarmBook
    from collector.alarms.model import AlarmConflict, AlarmNotFound

    config = _config(path)
    with _stopped(config):
        if not config.alarms_path.exists():
            typer.echo(f"error: no alarm {_shown(alarm_id)} (no alarm book yet)", err=True)
            raise typer.Exit(1)
        book = AlarmBook(config.alarms_path, config.escalation, config=config.alarms,
                         reset_clears=config.risk.reset_clears)
        try:
            alarm = getattr(book, action)(alarm_id, origin="cli", **kw)
        except (AlarmNotFound, AlarmConflict, ValueError) as e:
            typer.echo(f"error: {_shown(e)}", err=True)
            raise typer.Exit(1) from None
        finally:
            book.close()
    done = "resolved as " + kw["verdict"] if action == "resolve" else "acknowledged"
    typer.echo(f"{alarm.id}: {done} by {_shown(kw['by'])}")


def ack_command(config: ConfigOption, alarm_id: IdArg, by: ByOption = None,
                note: NoteOption = None) -> None:
    """Acknowledge an alarm (its escalation stops); the collector must be stopped."""
    _act(config, alarm_id, "acknowledge", by=by or getpass.getuser(), note=note)


def resolve_command(
    config: ConfigOption, alarm_id: IdArg,
    verdict: Annotated[str, typer.Option(help="real, false or test")],
    by: ByOption = None, note: NoteOption = None,
) -> None:
    """Record what an alarm was (acknowledges it too); the collector must be stopped."""
    _act(config, alarm_id, "resolve", verdict=verdict, by=by or getpass.getuser(), note=note)
