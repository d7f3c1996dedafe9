"""``firegate agent run`` and ``firegate check-config``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]

ConfigArg = Annotated[Path, typer.Argument(help="The agent's TOML config file.")]


def check_config(config: ConfigArg,
                 quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False) -> None:
    """Validate a config file without opening any port; exit 2 with the key on an error."""
    from edge.config import ConfigError
    from edge.config.load import load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"{config}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not quiet:
        parts = [f"{len(cfg.panels)} panel link(s)", f"{len(cfg.modbus)} Modbus bus(es) with "
                 f"{sum(len(b.devices) for b in cfg.modbus)} device(s)",
                 f"BLE {'with ' + str(len(cfg.ble.devices)) + ' device(s)' if cfg.ble else 'off'}",
                 f"{len(cfg.rules)} rule(s)",
                 f"uplink {'to ' + cfg.uplink.url if cfg.uplink else 'not configured'}"]
        typer.echo(f"{config}: OK: gateway {cfg.gateway.id}; " + ", ".join(parts))


def run(config: Annotated[Path, typer.Option("--config", "-c", help="The agent's config.")],
        log_level: Annotated[str | None, typer.Option(help="Overrides [gateway] log_level.")]
        = None) -> None:
    """Run the edge agent until SIGTERM or Ctrl-C."""
    # `firegate agent run` normally never gets here: firegate.entry hands it to edge.launch
    # before typer is imported. This path serves `--help` and in-process callers.
    from edge.launch import run as launch

    raise typer.Exit(launch(config, log_level))


def register(app: typer.Typer) -> None:
    app.command("check-config")(check_config)
    agent = typer.Typer(help="The edge agent.", no_args_is_help=True)
    agent.command("run")(run)
    app.add_typer(agent, name="agent")
