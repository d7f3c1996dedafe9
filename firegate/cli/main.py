"""Root of the ``firegate`` command.

Each concern registers its subcommands here; heavy optional dependencies (bleak, influxdb-client,
pymodbus) are imported inside the command that needs them, so ``firegate decode`` starts fast and
works on a gateway without the optional extras.
"""

from __future__ import annotations

import typer

from firegate.cli import agent as agent_cmd
from firegate.cli import collector as collector_cli
from firegate.cli import decode as decode_cmd
from firegate.cli import demo as demo_cmd
from firegate.cli import diag_ble, diag_modbus, diag_serial, local, provision
from firegate.cli import sim as sim_cli

app = typer.Typer(
    name="firegate",
    help="firegate: fire-protection monitoring gateway, collector and tools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("decode")(decode_cmd.decode)
app.command("demo")(demo_cmd.demo)
agent_cmd.register(app)
local.register(app)
provision.register(app)
diag = typer.Typer(help="Diagnose field buses: live panel traffic, Modbus reads, BLE scans.",
                   no_args_is_help=True)
diag_serial.register(diag)
diag_modbus.register(diag)
diag_ble.register(diag)
app.add_typer(diag, name="diag")
collector_cli.register(app)
app.add_typer(sim_cli.build(), name="sim")


def main() -> None:
    """Console entry point."""
    app()
