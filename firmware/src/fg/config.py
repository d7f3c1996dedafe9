# The device config: one JSON file written by `firegate provision --kind firmware` (config.json).
#
# The provisioning command validates everything with the edge agent's own validators and
# resolves register maps and rules from protocols/registers.py; this loader only checks that
# the file is whole and of the expected shape, so a hand-edited or truncated file stops the
# firmware with an error naming the key instead of failing later in the field. It is needed
# once, at start: fg/app.py drops this module from memory after loading (so nothing that
# outlives the load, not even the config object's class, is defined here).

import json

FORMAT = 2  # "v" of config.json; the provisioning command writes the same number


class ConfigError(Exception):
    def __init__(self, key, message):
        super().__init__("%s: %s" % (key, message))
        self.key = key


def _get(d, key, path, kind, default=None, required=True):
    if key not in d or d[key] is None:
        if required and default is None:
            raise ConfigError(path + key, "is required")
        return default
    v = d[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise ConfigError(path + key, "must be %s" % kind.__name__)
    return v


def _check(into, d):
    if not isinstance(d, dict):
        raise ConfigError("", "the top level must be an object")
    if d.get("v") != FORMAT:
        raise ConfigError("v", "must be %d (config written by another firegate version?)"
                          % FORMAT)
    g = _get(d, "gateway", "", dict)
    into.gw = _get(g, "id", "gateway.", str)
    into.site = _get(g, "site", "gateway.", str, required=False)
    into.wifi = _get(d, "wifi", "", dict, required=False)
    if into.wifi is not None:
        _get(into.wifi, "ssid", "wifi.", str)
        _get(into.wifi, "password", "wifi.", str, "")
    m = _get(d, "mqtt", "", dict)
    into.mqtt = m
    _get(m, "host", "mqtt.", str)
    _get(m, "port", "mqtt.", int)
    _get(m, "tls", "mqtt.", bool, False)
    for key in ("username", "password", "ca", "cert", "key"):
        _get(m, key, "mqtt.", str, required=False)
    for key, default in (("keepalive_s", 30), ("timeout_s", 10.0), ("reconnect_min_s", 1.0),
                         ("reconnect_max_s", 60.0), ("batch_max_records", 25),
                         ("batch_max_bytes", 4000), ("health_interval_s", 60.0),
                         ("confirm_timeout_s", 60.0)):
        m[key] = _get(m, key, "mqtt.", type(default), default)
    if m["confirm_timeout_s"] <= 0:
        raise ConfigError("mqtt.confirm_timeout_s", "must be greater than 0")
    m["delete_on"] = _get(m, "delete_on", "mqtt.", str, "stored")
    if m["delete_on"] not in ("stored", "puback"):
        raise ConfigError("mqtt.delete_on", "must be stored or puback, got %r" % m["delete_on"])
    into.ntp = _get(d, "ntp", "", dict, {})
    r = _get(d, "ring", "", dict, {})
    into.ring_kb = _get(r, "capacity_kb", "ring.", int, 32)
    into.ring_dir = _get(r, "dir", "ring.", str, "ring")
    into.data_dir = _get(d, "data_dir", "", str, ".")
    into.watchdog_s = _get(d, "watchdog_s", "", int, 60)
    into.bus = _get(d, "modbus", "", dict)
    _check_bus(into.bus)
    into.rules = _get(d, "rules", "", list, [])
    for i, rule in enumerate(into.rules):
        p = "rules[%d]." % i
        _get(rule, "name", p, str)
        for key in ("low", "high", "deadband", "report_interval_s"):
            rule[key] = _get(rule, key, p, float, required=False)
        rule["hysteresis"] = _get(rule, "hysteresis", p, float, 0.0)
        rule["debounce_s"] = _get(rule, "debounce_s", p, float, 0.0)
        _get(rule, "priority", p, int, 1)


def _check_bus(b):
    _get(b, "name", "modbus.", str)
    t = _get(b, "transport", "modbus.", str)
    if t not in ("uart", "pty", "tcp"):
        raise ConfigError("modbus.transport", "must be uart, pty or tcp, got %r" % t)
    for key in ("timeout_ms", "gap_ms"):
        _get(b, key, "modbus.", int)
    b["reopen_max_s"] = _get(b, "reopen_max_s", "modbus.", float, 30.0)
    fields = _get(b, "point_fields", "modbus.", list)
    ix = {}
    for i, name in enumerate(fields):
        ix[name] = i
    for name in ("name", "data_type", "word_order", "scale", "offset", "minimum", "maximum",
                 "factor", "decimals", "quantity_code", "canonical_unit", "block", "at", "rule"):
        if name not in ix:
            raise ConfigError("modbus.point_fields", "lacks %s" % name)
    devices = _get(b, "devices", "modbus.", list)
    if not devices:
        raise ConfigError("modbus.devices", "needs at least one device")
    for i, dev in enumerate(devices):
        p = "modbus.devices[%d]." % i
        for key in ("unit", "interval_ms", "offline_after", "backoff_max_ms"):
            _get(dev, key, p, int)
        _get(dev, "name", p, str)
        _get(dev, "blocks", p, list)
        for j, row in enumerate(_get(dev, "points", p, list)):
            q = "%spoints[%d]" % (p, j)
            if not isinstance(row, list) or len(row) != len(fields):
                raise ConfigError(q, "must be a row of %d values (modbus.point_fields)"
                                  % len(fields))
            for name, kind in (("name", str), ("data_type", str), ("word_order", str),
                               ("canonical_unit", str), ("block", int), ("at", int),
                               ("quantity_code", int), ("rule", int), ("scale", float),
                               ("offset", float), ("minimum", float), ("maximum", float),
                               ("factor", float)):
                v = row[ix[name]]
                if kind is float and isinstance(v, int) and not isinstance(v, bool):
                    row[ix[name]] = v = float(v)
                if not isinstance(v, kind) or isinstance(v, bool):
                    raise ConfigError("%s.%s" % (q, name), "must be %s" % kind.__name__)
        for j, sw in enumerate(_get(dev, "status", p, list, [])):
            q = "%sstatus[%d]." % (p, j)
            _get(sw, "name", q, str)
            _get(sw, "block", q, int)
            _get(sw, "at", q, int)
            _get(sw, "bits", q, list)
        if dev.get("contacts"):  # fg/contactcheck.py: its code only on such a node, once
            from fg.contactcheck import check

            check(b, dev, p, _get, ConfigError)
            # fg/contacts.py now, before the ring, TLS and the poller take the heap's room
            # (loaded later it found no block large enough); the check's code goes
            import sys

            from fg import contacts  # noqa: F401 (fg/poller.py uses it)

            sys.modules.pop("fg.contactcheck", None)
            import fg

            if hasattr(fg, "contactcheck"):
                delattr(fg, "contactcheck")


def load(path, into):
    """Read and check ``path`` into the object ``into``; raises ConfigError (OSError when the
    file is missing)."""
    with open(path) as f:
        try:
            d = json.load(f)  # parsed from the stream: the text is never in memory whole
        except ValueError:
            raise ConfigError("", "%s is not valid JSON (cut short while copying?)" % path) \
                from None
    _check(into, d)
    return into
