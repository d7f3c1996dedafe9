"""Root of the ``firegate`` command.

Each concern registers its subcommands here; heavy optional dependencies (bleak, influxdb-client,
pymodbus) are imported inside the command that needs them, so ``firegate decode`` starts fast and
works on a gateway without the optional extras.
"""

from __future__ import annotations

import typer

from edge.cli import decode as decode_cmd
from edge.cli import demo as demo_cmd
from simulators import cli as sim_cli

app = typer.Typer(
    name="firegate",
    help="firegate: fire-protection monitoring gateway, collector and tools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("decode")(decode_cmd.decode)
app.command("demo")(demo_cmd.demo)
app.add_typer(sim_cli.build(), name="sim")


def main() -> None:
    """Console entry point."""
    app()
