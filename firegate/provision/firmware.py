"""An ESP32's ``config.json`` (keys: docs/firmware.md "config.json").

The register maps are resolved from :mod:`protocols.registers` into the table the firmware
reads, with the values the edge driver derives from them (canonical unit, factor, rounding,
what a fault bit covers), and each point's rule is resolved with the agent's own first match
(:func:`edge.config.rules.first_match`), so the firmware and the agent cannot drift apart.
Contacts (coils, discrete inputs, bits of a register: docs/modbus-contacts.md) are resolved
the same way, from the profile the agent's config loader made (channels applied): where each
bit lies in which read, ``invert``, the normal state, the event type and its default priority
(``protocols.wire.DEFAULT_PRIORITY``), the state names and the source description.
"""

from __future__ import annotations

import math
from typing import Any

from common.config import ConfigError
from edge.config.rules import RuleConfig, first_match
from protocols.registers import BitTable, DeviceProfile, RegisterType, StatusWord
from protocols.wire import DEFAULT_PRIORITY, EventType, Quantity

from .credentials import Credentials
from .site import SiteConfig

__all__ = ["FIRMWARE_CONFIG_FORMAT", "FIRMWARE_CONTACT_FIELDS", "FIRMWARE_EVENT_TYPES",
           "FIRMWARE_POINT_FIELDS", "FIRMWARE_QUANTITIES", "firmware_config", "firmware_device"]

# "v" of config.json, checked by firmware/src/fg/config.py. 2: contacts; a firmware that
# knows only 1 refuses the file instead of silently reading none of its contacts.
FIRMWARE_CONFIG_FORMAT = 2
#: Index = the quantity code the firmware stores on flash (firmware/src/fg/records.py).
FIRMWARE_QUANTITIES = (Quantity.PRESSURE, Quantity.LEVEL, Quantity.TEMPERATURE,
                       Quantity.RESIDUAL_CURRENT, Quantity.STATE)
#: Index = the event code the firmware stores on flash (firmware/src/fg/records.py).
FIRMWARE_EVENT_TYPES = (
    EventType.THRESHOLD_LOW, EventType.THRESHOLD_HIGH, EventType.SENSOR_OFFLINE,
    EventType.OUT_OF_RANGE, EventType.DEVICE_ERROR, EventType.FAULT, EventType.LINK_FAULT,
    EventType.VALVE_OFF_NORMAL, EventType.RUNNING, EventType.MANUAL_MODE, EventType.DOOR_OPEN,
    EventType.SUPERVISORY)
#: Columns of a contact row in config.json (``modbus.contact_fields`` repeats them): where its
#: bit lies (``block``: index into the device's ``blocks``; ``at``: the bit's or register's
#: index in that read; ``bit``: -1 for a coil or discrete input, else the bit of the register),
#: how it reads (``invert``, ``normal``: the logical state in which nothing is reported), what
#: it raises (``event`` code, ``priority``), its texts (``states``: the names of logical 0 and
#: 1, ``channel``: the terminal number or -1) and ``desc``, its records' source description.
FIRMWARE_CONTACT_FIELDS = ("name", "block", "at", "bit", "invert", "normal", "event",
                           "priority", "states", "channel", "desc")
#: Columns of a point row in config.json (``modbus.point_fields`` repeats them for readers): the
#: PointSpec fields of protocols/registers.py, then what the firmware derives from them.
FIRMWARE_POINT_FIELDS = (
    "name", "quantity", "unit", "register_type", "address", "data_type", "word_order", "scale",
    "offset", "minimum", "maximum", "canonical_unit", "factor", "decimals", "quantity_code",
    "block", "at", "rule")
_UART_PORT = "uart"


def firmware_device(profile: DeviceProfile, rules: tuple[RuleConfig, ...] = (),
                    base: str = "modbus/bus/1", name: str = "") -> dict[str, Any]:
    """The register map of one device as the firmware reads it: ``blocks`` from
    :meth:`DeviceProfile.read_blocks` then :meth:`DeviceProfile.bit_blocks` (the edge driver's
    order), every point's :class:`PointSpec` fields plus where it sits in its block, its
    canonical unit, conversion factor, rounding and rule (-1: none), as a row of
    :data:`FIRMWARE_POINT_FIELDS` (an array parses into a tenth of an object's memory in
    MicroPython), the status words, and every contact as a row of
    :data:`FIRMWARE_CONTACT_FIELDS` (``name``: the device's name, the description of a
    contact that has none, as the edge driver uses it)."""
    blocks = profile.read_blocks()
    bit_blocks = profile.bit_blocks()

    def place(register: RegisterType, address: int, count: int) -> tuple[int, int]:
        for i, b in enumerate(blocks):
            if b.register_type is register and b.start <= address <= b.start + b.count - count:
                return i, address - b.start
        raise AssertionError(f"{profile.key}: no block holds {register} {address}")

    points = []
    for p in profile.points:
        block, at = place(p.register_type, p.address, p.register_count)
        found = first_match(rules, f"{base}/{p.name}")
        rule = -1 if found is None else found
        if found is not None and rules[found].unit not in (None, p.canonical_unit.value):
            raise ConfigError(f"rule[{found}].unit", f"is {rules[found].unit!r} but "
                              f"{base}/{p.name} reports {p.canonical_unit.value!r}")
        row = {
            "name": p.name, "quantity": p.quantity.value, "unit": p.unit.value,
            "register_type": p.register_type.value, "address": p.address,
            "data_type": p.data_type.value, "word_order": p.word_order.value,
            "scale": p.scale, "offset": p.offset, "minimum": p.minimum, "maximum": p.maximum,
            "canonical_unit": p.canonical_unit.value, "factor": p.factor,
            "decimals": p.decimals, "quantity_code": FIRMWARE_QUANTITIES.index(p.quantity),
            "block": block, "at": at, "rule": rule,
        }
        points.append([row[f] for f in FIRMWARE_POINT_FIELDS])
    status = []
    for w in profile.status_words:
        block, at = place(w.register_type, w.address, 1)
        bits = [[n, name, StatusWord.is_alarm(name), _point_indexes(profile, name)]
                for n, name in sorted(w.bits.items())]
        status.append({"name": w.name, "register_type": w.register_type.value,
                       "address": w.address, "block": block, "at": at, "bits": bits})
    contacts = []
    for b in profile.bit_points:
        if isinstance(b.table, BitTable):
            index, at = next((len(blocks) + i, b.address - k.start)
                             for i, k in enumerate(bit_blocks)
                             if k.table is b.table and k.start <= b.address < k.start + k.count)
        else:
            index, at = place(b.table, b.address, 1)
        crow: dict[str, Any] = {
            "name": b.name, "block": index, "at": at, "bit": -1 if b.bit is None else b.bit,
            "invert": b.invert, "normal": b.normal_state,
            "event": FIRMWARE_EVENT_TYPES.index(b.event_type),
            "priority": int(DEFAULT_PRIORITY[b.event_type]), "states": list(b.spec.states),
            "channel": -1 if b.channel is None else b.channel, "desc": b.description or name}
        contacts.append([crow[f] for f in FIRMWARE_CONTACT_FIELDS])
    return {"profile": profile.key,
            "blocks": [[b.register_type.read_function, b.start, b.count] for b in blocks]
                      + [[b.table.read_function, b.start, b.count] for b in bit_blocks],
            "points": points, "status": status, "contacts": contacts}


def _point_indexes(profile: DeviceProfile, bit: str) -> list[int]:
    """Indexes of the points a fault bit covers (:meth:`DeviceProfile.covered_by`)."""
    covered = profile.covered_by(bit)
    return [i for i, p in enumerate(profile.points) if p.name in covered]


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
        dev = firmware_device(d.profile, site.rules, f"{base}/{d.unit}", d.name)
        dev.update(unit=d.unit, name=d.name, interval_ms=round(d.interval_s * 1000),
                   offline_after=d.offline_after, backoff_max_ms=round(d.backoff_max_s * 1000))
        if dev["contacts"]:
            dev.update(debounce_ms=math.ceil(d.debounce_ms),
                       report_ms=round(d.report_interval_s * 1000))
        else:
            del dev["contacts"]  # a node keeps nothing of contacts it does not have
        devices.append(dev)
    out["devices"] = devices
    if any("contacts" in d for d in devices):  # only then: the node keeps this list in heap
        out["contact_fields"] = list(FIRMWARE_CONTACT_FIELDS)
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
        "batch_max_bytes": fw.batch_max_bytes, "health_interval_s": u.health_interval_s,
        "delete_on": u.delete_on.value, "confirm_timeout_s": u.confirm_timeout_s}
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
