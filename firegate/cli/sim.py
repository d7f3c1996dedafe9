"""``firegate sim ...``: the simulators' command group.

Each simulator lives in its own subpackage and exposes a ``register(app)`` function that adds its
command; the registry below is explicit so ``firegate sim --help`` lists exactly what exists.
Heavy dependencies (pymodbus, dbusmock, paho) are imported inside the commands.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Simulated fire panel, Modbus devices, BLE sensors and gateway fleet.",
                  no_args_is_help=True)

# Registry: one line per simulator (module path, attribute ``register``).
_REGISTRY: tuple[str, ...] = (
    "firegate.cli.sim_ble",
    "firegate.cli.sim_fleet",
    "firegate.cli.sim_modbus",
    "firegate.cli.sim_panel",
    "firegate.cli.sim_uitd",
)


def build() -> typer.Typer:
    """Import each registered simulator module and let it add its commands."""
    import importlib

    for name in _REGISTRY:
        importlib.import_module(name).register(app)
    return app
