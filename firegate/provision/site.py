"""The site file: what an installer writes once per site, read and validated.

A site file (TOML, commented sample ``firmware/site.example.toml``) holds the site, the broker
(the agent's own ``[uplink]`` keys), Wi-Fi for an ESP32, ``[firmware]`` settings, and the
sensors with the agent's own ``[[modbus]]``, ``[modbus_profiles.*]`` and ``[[rule]]`` tables,
validated by the agent's validators, so every error names its key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import ConfigError, Table
from edge.config.gateway import ID_HINT, ID_PATTERN
from edge.config.modbus import ModbusBusConfig, parse_modbus, parse_modbus_profiles
from edge.config.rules import RuleConfig, parse_rule
from edge.config.uplink import UplinkConfig, parse_uplink

__all__ = ["FirmwareSettings", "SiteConfig", "load_site", "parse_site"]

# Keys of [uplink] that provisioning generates per gateway.
_GENERATED_UPLINK_KEYS = ("username", "password", "password_file", "password_env", "client_id",
                          "cert_file", "key_file")


@dataclass(frozen=True, slots=True)
class FirmwareSettings:
    """``[firmware]`` of the site file: ESP32 specifics."""

    ring_kb: int = 32
    watchdog_s: int = 60
    ntp_host: str = "pool.ntp.org"
    ntp_interval_s: int = 3600
    batch_max_records: int = 25
    batch_max_bytes: int = 4000
    uart: int = 2
    tx: int = 17
    rx: int = 16
    de: int | None = None


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """A validated site file."""

    site: str
    prefix: str
    gateway_id: str | None
    uplink: UplinkConfig
    uplink_raw: Mapping[str, Any]
    ca_pem: str | None
    client_ca: tuple[Path, Path] | None
    wifi: tuple[str, str] | None
    firmware: FirmwareSettings
    agent_data_dir: str
    buses: tuple[ModbusBusConfig, ...]
    rules: tuple[RuleConfig, ...]
    raw: Mapping[str, Any] = field(repr=False)
    path: Path | None = None


def load_site(path: Path) -> SiteConfig:
    """Read and validate a site file; raises :class:`ConfigError` naming the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"{path} is not UTF-8: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: not valid TOML: {exc}") from None
    return dataclasses.replace(parse_site(data, base_dir=path.resolve().parent), path=path)


def parse_site(data: Mapping[str, Any], *, base_dir: Path | None = None) -> SiteConfig:
    """Validate site-file data (see :func:`load_site`)."""
    top = Table(data, base_dir=base_dir)
    s = top.table("site", required=True)
    assert s is not None
    site = s.text("id", pattern=ID_PATTERN, hint=ID_HINT)
    prefix = s.text("gateway_prefix", "fg", pattern=r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,56}",
                    hint="1-57 chars of A-Z a-z 0-9 _ . -, starting with a letter or digit")
    ca_cert = s.path_value("client_ca_cert", None, must_exist=True)
    ca_key = s.path_value("client_ca_key", None, must_exist=True)
    if (ca_cert is None) != (ca_key is None):
        s.fail("client_ca_key" if ca_key is None else "client_ca_cert",
               "client_ca_cert and client_ca_key go together")
    s.finish()
    g = top.table("gateway")
    gateway_id = None
    if g is not None:
        gateway_id = g.opt_text("id", pattern=ID_PATTERN, hint=ID_HINT)
        g.finish()
    u = top.table("uplink", required=True)
    assert u is not None
    for key in _GENERATED_UPLINK_KEYS:
        if u.has(key):
            u.fail(key, "is generated per gateway by `firegate provision`; leave it out")
    uplink = parse_uplink(u)
    # Every gateway gets a password here, so the agent's rule applies now: a config the agent
    # would refuse to load is refused before anything is written or flashed.
    u.refuse_plaintext("url", uplink.url, "password", "generated per gateway")
    ca_pem = None
    if uplink.ca_file is not None:
        ca_pem = uplink.ca_file.read_text(encoding="ascii")
        if "-----BEGIN CERTIFICATE-----" not in ca_pem:
            u.fail("ca_file", f"{uplink.ca_file} is not a PEM certificate")
    wifi = None
    w = top.table("wifi")
    if w is not None:
        ssid = w.text("ssid", max_len=32)
        password = w.secret("password") or ""
        if password and not 8 <= len(password) <= 63:
            w.fail("password", "a WPA2 passphrase is 8-63 characters")
        w.finish()
        wifi = (ssid, password)
    firmware = _firmware_settings(top.table("firmware"))
    a = top.table("agent")
    data_dir = "/var/lib/firegate"
    if a is not None:
        data_dir = a.text("data_dir", data_dir)
        a.finish()
    profiles = parse_modbus_profiles(top)
    buses = tuple(parse_modbus(t, profiles) for t in top.tables("modbus"))
    rules = tuple(parse_rule(t) for t in top.tables("rule"))
    # the agent's own sections pass through to its config, where its loader checks them
    for key in ("outbox", "state", "ble"):
        top.table(key)
    top.tables("panel")
    top.finish()
    client_ca = (ca_cert, ca_key) if ca_cert is not None and ca_key is not None else None
    return SiteConfig(site, prefix, gateway_id, uplink, dict(data["uplink"]), ca_pem, client_ca,
                      wifi, firmware, data_dir, buses, rules, data)


def _firmware_settings(t: Table | None) -> FirmwareSettings:
    if t is None:
        return FirmwareSettings()
    ring_kb = t.integer("ring_kb", 32, min=4, max=1024)
    watchdog_s = t.integer("watchdog_s", 60, min=20, max=3600)
    ntp_host = t.text("ntp_host", "pool.ntp.org", max_len=253)
    ntp_interval_s = t.integer("ntp_interval_s", 3600, min=60, max=86_400)
    batch_max_records = t.integer("batch_max_records", 25, min=1, max=200)
    # the firmware allocates a 4096-byte batch buffer at start (fg/app.py BATCH_BYTES)
    batch_max_bytes = t.integer("batch_max_bytes", 4000, min=1000, max=4096)
    r = t.table("rs485")
    uart, tx, rx, de = 2, 17, 16, None
    if r is not None:
        uart = r.integer("uart", 2, min=1, max=2)  # UART0 is the REPL/flashing port
        tx = r.integer("tx", 17, min=0, max=48)
        rx = r.integer("rx", 16, min=0, max=48)
        de = r.opt_integer("de", min=0, max=48)
        r.finish()
    t.finish()
    return FirmwareSettings(ring_kb, watchdog_s, ntp_host, ntp_interval_s, batch_max_records,
                            batch_max_bytes, uart, tx, rx, de)
