# The check of a device's contact rows in config.json (fg/config.py calls it, for a bus with
# contacts only, then drops this module from memory with its own).


def check(b, dev, p, _get, ConfigError):
    """fg/config.py's check of a device's contact rows (``_get`` and ``ConfigError`` are
    its own)."""
    rows = _get(dev, "contacts", p, list)
    fields = _get(b, "contact_fields", "modbus.", list)
    ix = {}
    for i, name in enumerate(fields):
        ix[name] = i
    for key in ("debounce_ms", "report_ms"):
        if _get(dev, key, p, int) < 0:
            raise ConfigError(p + key, "must not be negative")
    blocks = len(dev["blocks"])
    for j, row in enumerate(rows):
        q = "%scontacts[%d]" % (p, j)
        if not isinstance(row, list) or len(row) != len(fields):
            raise ConfigError(q, "must be a row of %d values (modbus.contact_fields)"
                              % len(fields))
        for name, kind in (("name", str), ("block", int), ("at", int), ("bit", int),
                           ("invert", bool), ("normal", bool), ("event", int),
                           ("priority", int), ("states", list), ("channel", int),
                           ("desc", str)):
            if name not in ix:
                raise ConfigError("modbus.contact_fields", "lacks %s" % name)
            v = row[ix[name]]
            if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
                raise ConfigError("%s.%s" % (q, name), "must be %s" % kind.__name__)
        if not 0 <= row[ix["block"]] < blocks or row[ix["at"]] < 0 or row[ix["bit"]] > 15:
            raise ConfigError(q, "lies outside its device's reads")
        if len(row[ix["states"]]) != 2:
            raise ConfigError(q + ".states", "must name the two states")
