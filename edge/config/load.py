"""The agent's whole configuration: one TOML file, validated here and nowhere else.

``load_config(path)`` reads the file and hands each table to its section's parser
(``gateway.py``, ``uplink.py``, ``panel.py``, ``modbus.py``, ``ble.py``, ``rules.py``); every
error is a :class:`ConfigError` naming the key. Nothing opens a port or a device, so
``firegate check-config FILE`` is exactly this function. The commented sample of every key
is ``edge/gateway.example.toml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.config import ConfigError, Table, read_toml
from edge.outbox import OutboxConfig

from .ble import BleConfig, parse_ble
from .gateway import GatewaySection, StateSection, parse_gateway, parse_outbox, parse_state
from .modbus import ModbusBusConfig, parse_modbus_buses, parse_modbus_profiles
from .panel import PanelConfig, parse_panels
from .rules import RuleConfig, parse_rule
from .uplink import UplinkConfig, parse_uplink

__all__ = ["GatewayConfig", "load_config", "parse_config"]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    gateway: GatewaySection
    outbox: OutboxConfig
    state: StateSection
    uplink: UplinkConfig | None
    """None: no cloud configured; records stay in the outbox (a site without a link yet)."""
    panels: tuple[PanelConfig, ...]
    modbus: tuple[ModbusBusConfig, ...]
    ble: BleConfig | None
    rules: tuple[RuleConfig, ...]
    source: Path | None = None

    @property
    def state_path(self) -> Path:
        return self.gateway.data_dir / "state.db"


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate ``path``; raises :class:`ConfigError` (also for unreadable files)."""
    data = read_toml(path)
    cfg = parse_config(data, base_dir=path.resolve().parent, env=env)
    return GatewayConfig(cfg.gateway, cfg.outbox, cfg.state, cfg.uplink, cfg.panels, cfg.modbus,
                         cfg.ble, cfg.rules, path)


def parse_config(data: Mapping[str, object], *, base_dir: Path | None = None,
                 env: Mapping[str, str] | None = None) -> GatewayConfig:
    top = Table(data, base_dir=base_dir, env=env)
    gateway_t = top.table("gateway", required=True)
    assert gateway_t is not None
    gateway = parse_gateway(gateway_t)
    outbox = parse_outbox(top.table("outbox"), gateway.data_dir)
    state = parse_state(top.table("state"))
    uplink_t = top.table("uplink")
    uplink = None if uplink_t is None else parse_uplink(uplink_t)
    panels = tuple(parse_panels(top))
    profiles = parse_modbus_profiles(top)
    buses = parse_modbus_buses(top.tables("modbus"), profiles)
    ble_t = top.table("ble")
    ble = None if ble_t is None else parse_ble(ble_t)
    rules = tuple(parse_rule(t) for t in top.tables("rule"))
    top.finish()
    _unique(top, "rule", [r.name for r in rules])
    if not (panels or buses or ble):
        raise ConfigError("", "no drivers configured: add a [[panel]], [[modbus]] or [ble] table")
    return GatewayConfig(gateway, outbox, state, uplink, panels, buses, ble, rules)


def _unique(top: Table, key: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{key}[{i}].name", f"{name!r} is used twice")
        seen.add(name)
