"""What the demo runs: the scenario file, checked and repeated, and the configs it generates.

The scenario is one TOML file (``firegate/demo/scenario.toml``): ``[demo]`` (cycle length, site,
gateway id, the gateway's ``[[demo.rule]]`` threshold rules) and one table per simulator
(``[panel]``, ``[modbus]``, ``[ble]``), each checked here by that simulator's own parser, so a
mistake is reported before any process starts. The simulators play a timeline once; the demo
repeats it by writing every event once per cycle into the work directory's copy.

The agent's and the collector's configs are generated from the same file (the Modbus devices
and BLE sensors the agent must poll and accept are the ones the simulators simulate) and
written as ordinary TOML files, so ``firegate status --config DIR/gateway.toml`` and
``firegate collector query --config DIR/collector.toml`` work on them after the demo.
"""

from __future__ import annotations

import copy
import re
import secrets
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firegate.toml_text import dumps_toml  # re-exported: the demo writes its files with it

__all__ = ["DEFAULT_SCENARIO", "Broker", "ConsoleAccess", "DemoError", "Influx", "Layout",
           "Story", "agent_config", "collector_config", "console_access", "dumps_toml",
           "load_story", "repeated"]

DEFAULT_SCENARIO = Path(__file__).with_name("scenario.toml")
SIMULATORS = ("panel", "modbus", "ble")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
HEALTH_INTERVAL_S = 10.0  # the gateway's health period; the collector judges "stale" from it


class DemoError(Exception):
    """The demo cannot run: a bad scenario, a missing program, a part that did not start."""


@dataclass(frozen=True, slots=True)
class Story:
    """A checked scenario file."""

    document: Mapping[str, Any]
    period: float
    site: str
    gateway: str
    rules: tuple[Mapping[str, Any], ...]
    modbus_devices: tuple[tuple[int, str, str], ...]
    """(unit id, profile key, name) of each simulated Modbus device."""
    ble_sensors: tuple[tuple[str, str, float, str | None], ...]
    """(address, name, advertising interval, bind key) of each simulated BLE sensor."""

    def has(self, simulator: str) -> bool:
        """Whether the file has a table for ``simulator`` (panel, modbus, ble)."""
        return simulator in self.document


def load_story(path: Path) -> Story:
    """Read ``path`` and check every table; :class:`DemoError` names the key at fault."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DemoError(f"{path}: {exc}") from None
    demo = doc.get("demo", {})
    if not isinstance(demo, dict):
        raise DemoError(f"{path}: demo: expected a table")
    unknown = set(demo) - {"period", "site", "gateway", "rule"}
    if unknown:
        raise DemoError(f"{path}: demo.{sorted(unknown)[0]}: unknown key; allowed: period, "
                        "site, gateway, rule")
    period = demo.get("period", 60)
    if isinstance(period, bool) or not isinstance(period, int | float) or not period >= 10:
        raise DemoError(f"{path}: demo.period: expected seconds >= 10, got {period!r}")
    ids = {}
    for key, default in (("site", "demo-site"), ("gateway", "demo-gw")):
        value = demo.get(key, default)
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise DemoError(f"{path}: demo.{key}: expected 1-64 of A-Z a-z 0-9 _ . -, "
                            f"got {value!r}")
        ids[key] = value
    rules = demo.get("rule", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise DemoError(f"{path}: demo.rule: expected [[demo.rule]] tables")
    if not any(name in doc for name in SIMULATORS):
        raise DemoError(f"{path}: no simulator table: give [panel], [modbus] and/or [ble]")
    for name in SIMULATORS:
        for i, event in enumerate(doc.get(name, {}).get("events", [])):
            at = event.get("at") if isinstance(event, dict) else None
            if isinstance(at, int | float) and not isinstance(at, bool) and at >= period:
                raise DemoError(f"{path}: {name}.events[{i}].at: {at:g} is not below "
                                f"demo.period ({period:g}); the timeline repeats every period")
    devices, sensors = _check_simulators(path, doc)
    return Story(doc, float(period), ids["site"], ids["gateway"], tuple(rules), devices, sensors)


def _check_simulators(path: Path, doc: Mapping[str, Any]
                      ) -> tuple[tuple[tuple[int, str, str], ...],
                                 tuple[tuple[str, str, float, str | None], ...]]:
    """Each simulator's own scenario parser: the same errors its command would print."""
    from common.config import ConfigError
    from simulators.ble import scenario as ble
    from simulators.modbus import scenario as modbus
    from simulators.panel import scenario as panel

    devices: tuple[tuple[int, str, str], ...] = ()
    sensors: tuple[tuple[str, str, float, str | None], ...] = ()
    try:
        if "panel" in doc:
            panel.parse_scenario(doc["panel"])
        if "modbus" in doc:
            bus = modbus.parse_scenario(doc)
            devices = tuple((d.id, d.profile.key, d.name or f"{d.profile.key}-{d.id}")
                            for d in bus.devices)
        if "ble" in doc:
            plan = ble.parse_scenario(doc)
            sensors = tuple((s.address, s.name, s.interval, s.key.hex() if s.key else None)
                            for s in plan.sensors)
    except ConfigError as exc:
        raise DemoError(f"{path}: {exc}") from None
    return devices, sensors


def repeated(story: Story, cycles: int) -> dict[str, Any]:
    """The scenario with every simulator event played ``cycles`` times, one period apart."""
    doc = copy.deepcopy(dict(story.document))
    for name in SIMULATORS:
        table = doc.get(name)
        if not isinstance(table, dict) or not table.get("events"):
            continue
        once = table["events"]
        table["events"] = [{**event, "at": event["at"] + k * story.period}
                           for k in range(cycles) for event in once]
    return doc


# -- the generated configs ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broker:
    """The MQTT broker every part uses."""

    url: str
    username: str | None = None
    password: str | None = None
    embedded: bool = False


@dataclass(frozen=True, slots=True)
class Influx:
    """A real InfluxDB (or anything serving its v2 write API) instead of the SQLite store."""

    url: str
    token: str | None
    org: str
    bucket: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Where everything lives in the work directory."""

    root: Path

    @property
    def gateway_toml(self) -> Path:
        return self.root / "gateway.toml"

    @property
    def collector_toml(self) -> Path:
        return self.root / "collector.toml"

    @property
    def scenario(self) -> Path:
        return self.root / "scenario.toml"

    @property
    def edge_dir(self) -> Path:
        return self.root / "edge"

    @property
    def collector_dir(self) -> Path:
        return self.root / "collector"

    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def secret(self, name: str, value: str) -> Path:
        """Write a secret to a file only its owner can read; returns the path."""
        path = self.root / "secrets" / name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(value, encoding="utf-8")
        return path


def agent_config(story: Story, layout: Layout, broker: Broker, *, panel_port: str | None,
                 modbus_port: str | None, ble: bool) -> dict[str, Any]:
    """The edge agent's config (``firegate agent run --config``) for the simulators."""
    uplink: dict[str, Any] = {"url": broker.url, "health_interval_s": HEALTH_INTERVAL_S,
                              "reconnect_min_s": 0.5, "reconnect_max_s": 5.0}
    if broker.username is not None:
        uplink["username"] = broker.username
    if broker.password is not None:
        uplink["password_file"] = str(layout.secret("mqtt-password", broker.password))
    doc: dict[str, Any] = {
        "gateway": {"id": story.gateway, "site": story.site, "data_dir": "edge",
                    "log_level": "info"},
        "state": {"flush_interval_s": 0.5, "snapshot_interval_s": 1.0},
        "uplink": uplink,
    }
    if panel_port is not None:
        doc["panel"] = [{"name": "com1", "port": panel_port, "baud": 9600}]
    if modbus_port is not None:
        doc["modbus"] = [{"name": "bus1", "port": modbus_port, "baud": 9600, "timeout_s": 0.5,
                          "device": [{"unit": unit, "name": name, "profile": profile,
                                      "interval_s": 2.0}
                                     for unit, profile, name in story.modbus_devices]}]
    if ble and story.ble_sensors:
        devices = []
        for address, name, interval, key in story.ble_sensors:
            device: dict[str, Any] = {"address": address, "name": name,
                                      "expected_interval_s": interval}
            if key is not None:
                device["key"] = key
            devices.append(device)
        doc["ble"] = {"adapter": story.document["ble"].get("adapter", "hci0"),
                      "device": devices}
    if story.rules:
        doc["rule"] = [dict(r) for r in story.rules]
    return doc


@dataclass(frozen=True, slots=True)
class ConsoleAccess:
    """The collector's web console in the demo: where, and the operator who signs in."""

    url: str
    user: str
    token: str
    token_file: Path

    @property
    def listen(self) -> str:
        return self.url.removeprefix("http://")


def console_access(layout: Layout, user: str = "duty-officer") -> ConsoleAccess:
    """A free loopback port and a new operator token (written 0600 to the work directory's
    ``secrets/console-token``; the demo prints it so a person can sign in)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    token = secrets.token_urlsafe(32)  # 43 characters; the collector asks for >= 32
    return ConsoleAccess(f"http://127.0.0.1:{port}", user, token,
                         layout.secret("console-token", token))


def collector_config(layout: Layout, broker: Broker, influx: Influx | None,
                     console: ConsoleAccess | None = None) -> dict[str, Any]:
    """The collector's config (``firegate collector run --config``); with ``console``, the
    API and web console on loopback with one operator."""
    mqtt: dict[str, Any] = {"url": broker.url, "client_id": "firegate-demo-collector",
                            # not shared: on a real broker the demo must not take a share of
                            # the records meant for the real collectors
                            "share_group": "", "session_expiry_s": 600}
    if broker.username is not None:
        mqtt["username"] = broker.username
    if broker.password is not None:
        mqtt["password_file"] = str(layout.secret("mqtt-password", broker.password))
    doc: dict[str, Any] = {
        "collector": {"id": "demo-collector", "state_dir": "collector",
                      "health_interval_s": HEALTH_INTERVAL_S, "snapshot_interval_s": 1.0},
        "mqtt": mqtt,
        "metrics": {"listen": ""},
    }
    if influx is not None:
        section: dict[str, Any] = {"url": influx.url, "org": influx.org,
                                   "bucket": influx.bucket}
        if influx.token is not None:
            section["token_file"] = str(layout.secret("influx-token", influx.token))
        doc["influx"] = section
    if console is not None:
        doc["http"] = {"listen": console.listen, "public_url": console.url}
        doc["user"] = [{"name": console.user, "token_file": str(console.token_file),
                        "role": "operator"}]
    return doc
