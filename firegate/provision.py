"""Gateway provisioning: from a site file to a gateway's config, credentials and broker entries.

An installer describes a gateway once in a **site file** (TOML, commented sample
``firmware/site.example.toml``): the site, the broker (the agent's own ``[uplink]`` keys), Wi-Fi
for an ESP32, and the sensors with the agent's own ``[[modbus]]``, ``[modbus_profiles.*]`` and
``[[rule]]`` tables, validated by the agent's validators (every error names its key).
:func:`provision` turns it into one gateway:

* a gateway id (given, or ``<prefix>-<6 hex digits>``) and per-gateway MQTT credentials (user
  name = gateway id, a random password), optionally a client certificate from a site CA;
* for an ESP32 (``kind="firmware"``) the device's ``config.json``: register maps resolved from
  :mod:`protocols.registers` into the table the firmware reads (so the two cannot drift), rules
  resolved per point with the agent's first-match glob, the broker CA inline;
* for a Raspberry Pi (``kind="agent"``) the agent's TOML config;
* the broker side: a ``mosquitto_passwd`` line (PBKDF2-SHA512, the ``$7$`` format of Mosquitto
  2.0) and ACL lines that let the gateway publish only under ``firegate/v1/<id>/`` and read only
  its ``cmd`` topic, so a provisioned gateway can publish only as itself.

Pure: nothing here writes a file; :mod:`firegate.cli.provision` does, and installs the systemd unit.
"""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import hashlib
import math
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from common.config import ConfigError, Table
from edge.config.gateway import ID_HINT, ID_PATTERN
from edge.config.modbus import ModbusBusConfig, parse_modbus, parse_modbus_profiles
from edge.config.rules import RuleConfig, parse_rule
from edge.config.uplink import UplinkConfig, parse_uplink
from protocols.registers import (
    DataType,
    DeviceProfile,
    PointSpec,
    Quantity,
    RegisterType,
    convert,
)

__all__ = [
    "FIRMWARE_CONFIG_FORMAT",
    "FIRMWARE_POINT_FIELDS",
    "FIRMWARE_QUANTITIES",
    "Credentials",
    "Provisioned",
    "SiteConfig",
    "acl_lines",
    "agent_config",
    "decimals_of",
    "firmware_config",
    "firmware_device",
    "issue_client_certificate",
    "load_site",
    "mosquitto_password_line",
    "new_credentials",
    "parse_site",
    "provision",
    "toml_dumps",
]

Kind = Literal["agent", "firmware"]
FIRMWARE_CONFIG_FORMAT = 1  # "v" of config.json, checked by firmware/src/fg/config.py
#: Index = the quantity code the firmware stores on flash (firmware/src/fg/records.py).
FIRMWARE_QUANTITIES = (Quantity.PRESSURE, Quantity.LEVEL, Quantity.TEMPERATURE,
                       Quantity.RESIDUAL_CURRENT)
#: Columns of a point row in config.json (``modbus.point_fields`` repeats them for readers): the
#: PointSpec fields of protocols/registers.py, then what the firmware derives from them.
FIRMWARE_POINT_FIELDS = (
    "name", "quantity", "unit", "register_type", "address", "data_type", "word_order", "scale",
    "offset", "minimum", "maximum", "canonical_unit", "factor", "decimals", "quantity_code",
    "block", "at", "rule")
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes; the broker reads the count per line
_UART_PORT = "uart"
# Sections handed unchanged to the agent's config (the agent validates them again at start).
_AGENT_PASSTHROUGH = ("outbox", "state", "panel", "modbus", "modbus_profiles", "ble", "rule")


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
    for key in ("username", "password", "password_file", "password_env", "client_id",
                "cert_file", "key_file"):
        if u.has(key):
            u.fail(key, "is generated per gateway by `firegate provision`; leave it out")
    uplink = parse_uplink(u)
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


# -- credentials and the broker's entries --------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Credentials:
    gateway_id: str
    username: str
    password: str = field(repr=False)


def new_credentials(site: SiteConfig, gateway_id: str | None = None) -> Credentials:
    """A gateway id (``gateway_id``, the site file's, or ``<prefix>-<6 hex>``) and a random
    password (32 URL-safe characters, 192 bits)."""
    gid = gateway_id or site.gateway_id or f"{site.prefix}-{secrets.token_hex(3)}"
    if re.fullmatch(ID_PATTERN, gid) is None:
        raise ConfigError("gateway.id", f"must be {ID_HINT}, got {gid!r}")
    return Credentials(gid, gid, secrets.token_urlsafe(24))


def mosquitto_password_line(username: str, password: str, *, salt: bytes | None = None,
                            iterations: int = PBKDF2_ITERATIONS) -> str:
    """A ``password_file`` line as ``mosquitto_passwd`` 2.0 writes it:
    ``user:$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512 (64 bytes)>``."""
    if ":" in username or "\n" in username:
        raise ValueError("a Mosquitto user name cannot contain ':' or a newline")
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (f"{username}:$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def acl_lines(username: str, gateway_id: str) -> list[str]:
    """ACL entries binding a gateway's credentials to its own topic subtree (docs/wire-protocol.md
    "Topics"): it writes records, status (and its will), health and cmd/ack, reads its cmd."""
    root = f"firegate/v1/{gateway_id}"
    return [f"user {username}", f"topic write {root}/#", f"topic read {root}/cmd"]


def issue_client_certificate(ca_cert_pem: bytes, ca_key_pem: bytes, gateway_id: str,
                             days: int = 3650) -> tuple[bytes, bytes]:
    """A client certificate (CN = gateway id, clientAuth) and its new EC P-256 key, signed by
    the site CA; PEM. Mosquitto with ``use_identity_as_username`` maps the CN to the user."""
    import datetime as dt

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - the sim extra carries it
        raise RuntimeError("client certificates need the cryptography package: "
                           "pip install 'firegate[sim]'") from exc
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the site CA key must be an EC or RSA private key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway_id)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# -- the firmware's config.json -------------------------------------------------------------------

def decimals_of(point: PointSpec) -> int | None:
    """Decimal places that carry information for an integer point in its canonical unit (the
    firmware rounds to them, as the edge driver does); None for f32 (7 significant digits)."""
    if point.data_type is DataType.F32:
        return None
    factor = convert(1.0, point.unit, point.canonical_unit)
    return max(_places(point.scale * factor), _places(point.offset * factor))


def _places(x: float) -> int:
    for d in range(13):
        if abs(round(x, d) - x) <= 1e-9 * abs(x):
            return d
    return 12


def _covered(bit: str, points: tuple[PointSpec, ...]) -> list[int]:
    """Indexes of the points a fault bit makes untrustworthy: ``<x>_fault`` covers ``<x>`` and
    ``<x>_*``; any other fault bit covers every point (as the edge driver decides)."""
    names = [p.name for p in points]
    if bit.endswith("_fault"):
        prefix = bit.removesuffix("_fault")
        hit = [i for i, n in enumerate(names) if n == prefix or n.startswith(prefix + "_")]
        if hit:
            return hit
    return list(range(len(names)))


def _rule_for(rules: tuple[RuleConfig, ...], source_id: str) -> int:
    """The first rule matching a source id, as the agent's ``RuleEngine.rule_for``; -1: none."""
    for i, rule in enumerate(rules):
        if rule.match == source_id or fnmatch.fnmatchcase(source_id, rule.match):
            return i
    return -1


def firmware_device(profile: DeviceProfile, rules: tuple[RuleConfig, ...] = (),
                    base: str = "modbus/bus/1") -> dict[str, Any]:
    """The register map of one device as the firmware reads it: ``blocks`` from
    :meth:`DeviceProfile.read_blocks`, every point's :class:`PointSpec` fields plus where it
    sits in its block, its canonical unit, conversion factor, rounding and rule, as a row of
    :data:`FIRMWARE_POINT_FIELDS` (an array parses into a tenth of an object's memory in
    MicroPython), and the status words."""
    blocks = profile.read_blocks()

    def place(register: RegisterType, address: int, count: int) -> tuple[int, int]:
        for i, b in enumerate(blocks):
            if b.register_type is register and b.start <= address <= b.start + b.count - count:
                return i, address - b.start
        raise AssertionError(f"{profile.key}: no block holds {register} {address}")

    points = []
    for p in profile.points:
        block, at = place(p.register_type, p.address, p.register_count)
        rule = _rule_for(rules, f"{base}/{p.name}")
        if rule >= 0 and rules[rule].unit not in (None, p.canonical_unit.value):
            raise ConfigError(f"rule[{rule}].unit", f"is {rules[rule].unit!r} but "
                              f"{base}/{p.name} reports {p.canonical_unit.value!r}")
        row = {
            "name": p.name, "quantity": p.quantity.value, "unit": p.unit.value,
            "register_type": p.register_type.value, "address": p.address,
            "data_type": p.data_type.value, "word_order": p.word_order.value,
            "scale": p.scale, "offset": p.offset, "minimum": p.minimum, "maximum": p.maximum,
            "canonical_unit": p.canonical_unit.value,
            "factor": convert(1.0, p.unit, p.canonical_unit), "decimals": decimals_of(p),
            "quantity_code": FIRMWARE_QUANTITIES.index(p.quantity), "block": block, "at": at,
            "rule": rule,
        }
        points.append([row[f] for f in FIRMWARE_POINT_FIELDS])
    status = []
    for w in profile.status_words:
        block, at = place(w.register_type, w.address, 1)
        bits = [[n, name, name.endswith("_alarm"), _covered(name, profile.points)]
                for n, name in sorted(w.bits.items())]
        status.append({"name": w.name, "register_type": w.register_type.value,
                       "address": w.address, "block": block, "at": at, "bits": bits})
    return {"profile": profile.key,
            "blocks": [[b.register_type.read_function, b.start, b.count] for b in blocks],
            "points": points, "status": status}


def _firmware_bus(site: SiteConfig) -> dict[str, Any]:
    if len(site.buses) != 1:
        raise ConfigError("modbus", f"the firmware serves exactly one [[modbus]] bus (its RS-485 "
                                    f"line), got {len(site.buses)}")
    bus = site.buses[0]
    if bus.retries:
        raise ConfigError("modbus[0].retries", "must be 0 for the firmware: the next poll is "
                                               "the retry")
    out: dict[str, Any] = {
        "name": bus.name, "point_fields": list(FIRMWARE_POINT_FIELDS),
        "timeout_ms": round(bus.timeout_s * 1000),
        "gap_ms": math.ceil(bus.gap_ms), "reopen_max_s": bus.reopen_max_s}
    if bus.host is not None:
        out.update(transport="tcp", host=bus.host, port=bus.tcp_port)
    elif bus.port == _UART_PORT:
        fw = site.firmware
        out.update(transport="uart", uart={
            "id": fw.uart, "tx": fw.tx, "rx": fw.rx, "de": fw.de, "baud": bus.baud,
            "parity": bus.parity, "stopbits": bus.stopbits})
    elif bus.port is not None and bus.port.startswith("/"):
        out.update(transport="pty", path=bus.port)  # the unix port, against the simulator
    else:
        raise ConfigError("modbus[0].port", f"must be \"uart\" (the ESP32's RS-485 UART, pins "
                                            f"in [firmware.rs485]), got {bus.port!r}")
    base = f"modbus/{bus.name}"
    devices = []
    for d in bus.devices:
        dev = firmware_device(d.profile, site.rules, f"{base}/{d.unit}")
        dev.update(unit=d.unit, name=d.name, interval_ms=round(d.interval_s * 1000),
                   offline_after=d.offline_after, backoff_max_ms=round(d.backoff_max_s * 1000))
        devices.append(dev)
    out["devices"] = devices
    return out


def firmware_config(site: SiteConfig, creds: Credentials, *, client_cert: bytes | None = None,
                    client_key: bytes | None = None, data_dir: str | None = None
                    ) -> dict[str, Any]:
    """The ESP32's ``config.json`` (keys: docs/firmware.md "config.json")."""
    u, fw = site.uplink, site.firmware
    if not u.tls and (client_cert is not None):
        raise ConfigError("uplink.url", "client certificates need an mqtts:// url")
    if u.tls and site.ca_pem is None:
        raise ConfigError("uplink.ca_file", "is required for the firmware: an ESP32 has no "
                                            "trust store of its own")
    mqtt: dict[str, Any] = {
        "host": u.host, "port": u.port, "tls": u.tls, "username": creds.username,
        "password": creds.password, "keepalive_s": u.keepalive_s,
        "timeout_s": u.connect_timeout_s, "reconnect_min_s": u.reconnect_min_s,
        "reconnect_max_s": u.reconnect_max_s,
        "batch_max_records": min(fw.batch_max_records, u.batch_max_records),
        "batch_max_bytes": fw.batch_max_bytes, "health_interval_s": u.health_interval_s}
    if u.tls:
        mqtt["ca"] = site.ca_pem
    if client_cert is not None and client_key is not None:
        mqtt["cert"] = client_cert.decode()
        mqtt["key"] = client_key.decode()
    cfg: dict[str, Any] = {
        "v": FIRMWARE_CONFIG_FORMAT,
        "gateway": {"id": creds.gateway_id, "site": site.site},
        "mqtt": mqtt,
        "ntp": {"host": fw.ntp_host, "interval_s": fw.ntp_interval_s},
        "ring": {"capacity_kb": fw.ring_kb, "dir": "ring"},
        "watchdog_s": fw.watchdog_s,
        "modbus": _firmware_bus(site),
        "rules": [{"name": r.name, "low": r.low, "high": r.high, "hysteresis": r.hysteresis,
                   "debounce_s": r.debounce_s, "deadband": r.deadband,
                   "report_interval_s": r.report_interval_s, "priority": int(r.priority),
                   "unit": r.unit} for r in site.rules],
    }
    if site.wifi is not None:
        cfg["wifi"] = {"ssid": site.wifi[0], "password": site.wifi[1]}
    if data_dir is not None:
        cfg["data_dir"] = data_dir
    return cfg


# -- the agent's config -------------------------------------------------------------------------

def agent_config(site: SiteConfig, creds: Credentials, config_dir: Path, *,
                 client_cert: bool = False) -> dict[str, Any]:
    """The agent's TOML config as data: ``[gateway]`` (id, site, data_dir), ``[uplink]`` (the
    site's keys plus ``username``, ``password_file``, ``ca_file``, ``cert_file``,
    ``key_file`` in ``config_dir``) and the site's driver and rule sections unchanged."""
    uplink = dict(site.uplink_raw)
    uplink["username"] = creds.username
    uplink["password_file"] = str(config_dir / "mqtt-password")
    if site.ca_pem is not None:
        uplink["ca_file"] = str(config_dir / "ca.crt")
    if client_cert:
        uplink["cert_file"] = str(config_dir / "client.crt")
        uplink["key_file"] = str(config_dir / "client.key")
    out: dict[str, Any] = {
        "gateway": {"id": creds.gateway_id, "site": site.site, "data_dir": site.agent_data_dir},
        "uplink": uplink}
    for key in _AGENT_PASSTHROUGH:
        if key in site.raw:
            out[key] = site.raw[key]
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_str(key)


def _toml_str(s: str) -> str:
    out = []
    for ch in s:  # TOML basic string: escape quote, backslash and control characters
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: object) -> str:
    import datetime as dt

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: object) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _toml_table(path: list[str], data: Mapping[str, Any], out: list[str]) -> None:
    scalars = [(k, v) for k, v in data.items()
               if not isinstance(v, Mapping) and not _is_table_array(v)]
    for k, v in scalars:
        out.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in data.items():
        sub = [*path, _toml_key(k)]
        if isinstance(v, Mapping):
            out += ["", f"[{'.'.join(sub)}]"]
            _toml_table(sub, v, out)
        elif _is_table_array(v):
            for item in v:
                out += ["", f"[[{'.'.join(sub)}]]"]
                _toml_table(sub, item, out)


def toml_dumps(data: Mapping[str, Any], header: str = "") -> str:
    """TOML text of plain data (tables, arrays of tables, scalars, arrays, dates); what
    ``tomllib.loads`` reads back equal. The standard library reads TOML but does not write it."""
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    _toml_table([], data, out)
    return "\n".join(out).lstrip("\n") + "\n"


# -- one gateway ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Provisioned:
    """Everything one provisioning run produced. ``files`` maps a file name to its content and
    mode (secrets are 0600); ``passwd_line`` and ``acl`` go to the broker."""

    kind: Kind
    credentials: Credentials
    files: dict[str, tuple[bytes, int]]
    passwd_line: str = field(repr=False)
    acl: list[str] = field(default_factory=list)


def provision(site: SiteConfig, kind: Kind, *, gateway_id: str | None = None,
              credentials: Credentials | None = None, client_cert: bool = False,
              config_dir: Path | None = None, firmware_data_dir: str | None = None
              ) -> Provisioned:
    """Provision one gateway of ``site`` (with ``credentials``, or new ones for ``gateway_id``).
    ``config_dir``: where the agent's files will live on the gateway (its config refers to them
    there; default ``/etc/firegate``)."""
    import json

    creds = credentials or new_credentials(site, gateway_id)
    cert = key = None
    if client_cert:
        if site.client_ca is None:
            raise ConfigError("site.client_ca_cert", "is required to issue client certificates")
        if not site.uplink.tls:
            raise ConfigError("uplink.url", "client certificates need an mqtts:// url")
        cert, key = issue_client_certificate(site.client_ca[0].read_bytes(),
                                             site.client_ca[1].read_bytes(), creds.gateway_id)
    passwd = mosquitto_password_line(creds.username, creds.password)
    acl = acl_lines(creds.username, creds.gateway_id)
    files: dict[str, tuple[bytes, int]] = {
        "mosquitto.passwd": ((passwd + "\n").encode(), 0o600),
        "mosquitto.acl": (("\n".join(acl) + "\n").encode(), 0o644)}
    if kind == "firmware":
        cfg = firmware_config(site, creds, client_cert=cert, client_key=key,
                              data_dir=firmware_data_dir)
        text = json.dumps(cfg, ensure_ascii=False, separators=(",", ":"))
        files["config.json"] = (text.encode(), 0o600)
    else:
        where = config_dir or Path("/etc/firegate")
        data = agent_config(site, creds, where, client_cert=cert is not None)
        header = (f"firegate agent config for gateway {creds.gateway_id} (site {site.site}),\n"
                  f"written by `firegate provision --kind agent`. Reference: "
                  f"edge/gateway.example.toml")
        files["gateway.toml"] = (toml_dumps(data, header).encode(), 0o644)
        files["mqtt-password"] = ((creds.password + "\n").encode(), 0o600)
        if site.ca_pem is not None:
            files["ca.crt"] = (site.ca_pem.encode(), 0o644)
    if cert is not None and key is not None:
        files["client.crt"] = (cert, 0o644)
        files["client.key"] = (key, 0o600)
    return Provisioned(kind, creds, files, passwd, acl)
