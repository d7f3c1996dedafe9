"""Field-bus drivers and their explicit registry.

One file per bus: ``panel.py`` (GB/T 26875.3 over serial or TCP), ``modbus.py`` (Modbus RTU and
TCP, pymodbus behind ``modbus_adapter.py``), ``ble.py`` (BTHome over bleak). The registry maps a
config section to the driver built from it; the import happens only when a config uses the
driver, so a gateway without the ``ble`` extra never imports bleak.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import Driver, DriverContext

if TYPE_CHECKING:
    from edge.config.load import GatewayConfig

__all__ = ["REGISTRY", "build_drivers"]

MakeContext = Callable[[str], DriverContext]


def _panels(cfg: GatewayConfig, make_ctx: MakeContext) -> list[Driver]:
    from .panel import PanelDriver

    return [PanelDriver(p, make_ctx(f"panel/{p.name}")) for p in cfg.panels]


def _modbus(cfg: GatewayConfig, make_ctx: MakeContext) -> list[Driver]:
    from .modbus import ModbusDriver

    return [ModbusDriver(b, make_ctx(f"modbus/{b.name}")) for b in cfg.modbus]


def _ble(cfg: GatewayConfig, make_ctx: MakeContext) -> list[Driver]:
    if cfg.ble is None:
        return []
    from .ble import BleDriver, BleUnavailable

    try:
        return [BleDriver(cfg.ble, make_ctx("ble"))]
    except BleUnavailable as exc:  # bleak / bthome-ble are the optional extra "ble"
        raise RuntimeError(f"the [ble] section needs BLE support: {exc}") from exc


REGISTRY: dict[str, Callable[[GatewayConfig, MakeContext], list[Driver]]] = {
    "panel": _panels,
    "modbus": _modbus,
    "ble": _ble,
}
"""Config section -> the drivers it configures. Add a bus here and in ``edge/config/load.py``."""


def build_drivers(cfg: GatewayConfig, make_ctx: MakeContext) -> list[Driver]:
    drivers: list[Driver] = []
    for build in REGISTRY.values():
        drivers.extend(build(cfg, make_ctx))
    return drivers
