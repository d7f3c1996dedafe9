# The wire contract, firmware side: records, batch, status and health as compact JSON text.
#
# docs/wire-protocol.md is the specification and protocols/wire (CPython) the reference; a
# CPython test decodes everything this module writes with the strict decoders there, so a schema
# drift breaks a test, not a device in the field. JSON is written by hand (key order of the
# tables in the spec, no whitespace) rather than through json.dumps(dict): MicroPython orders
# dict keys by its own hashing, and building a dict per record costs heap.
#
# A record travels as a tuple, the same fields the flash ring keeps (fg/ring.py):
#   (kind, prio, code, flags, src, seq, rt, value, limit, aux)
# kind M or E; prio 0-3 (spec "Priorities"); code an index into QUANTITIES or EVENT_TYPES;
# flags ACTIVE / HAS_V / HAS_LIM; src the source key "bus\tid"; seq 0 until the ring assigns
# it; rt receive time in ms since 1970; aux data for the event's detail text (see detail()).

import json

from micropython import const

# The firmware's version, reported in status and health ("ver"); the same as the project's
# (tests/firmware/test_build.py checks it against pyproject.toml).
VERSION = "0.1.0"

M = const(0)
E = const(1)
ACTIVE = const(1)
HAS_V = const(2)
HAS_LIM = const(4)

# These indexes are stored on flash: append only, never reorder. The codes after them are a
# contact's (fg/contacts.py QUANTITIES, EVENT_TYPES: loaded only on a node with contacts, so
# their names cost the others no heap); provisioning writes the whole list.
QUANTITIES = ("pressure", "level", "temperature", "residual_current")
UNITS = ("MPa", "m", "\u00b0C", "mA")  # the canonical unit of each quantity above
EVENT_TYPES = (
    "threshold_low", "threshold_high", "sensor_offline", "out_of_range", "device_error",
    "fault", "link_fault",
)
# spec "Event types": default class of each (all are alarms, class 1)
EV_LOW = const(0)
EV_HIGH = const(1)
EV_OFFLINE = const(2)
EV_RANGE = const(3)
EV_DEVICE = const(4)
EV_FAULT = const(5)
EV_LINK = const(6)

FIRMWARE = "firmware"  # spec "Source": bus of records an ESP32 node makes itself
RULE = "rule"  # bus of threshold events derived by a rule (as the edge agent's rule engine)
PRIO_LABELS = ("fire", "alarm", "event", "measurement")
EPOCH_OK_MS = 1000000000000  # 2001-09-09: a clock below this was never set (no NTP yet)


def record(kind, prio, code, flags, src, rt, value=0.0, limit=0.0, aux=0):
    """A new record tuple (seq 0: the ring assigns it when it stores the record)."""
    return (kind, prio, code, flags, src, 0, rt, value, limit, aux)


def _num(x):
    # json.dumps writes a float the shortest way that reads back ("0.35", "1e+20")
    return json.dumps(x)


def put(buf, n, text, end):
    """Write ``text`` (str or bytes) into ``buf`` at ``n``; the new end, or ValueError past
    ``end`` (no exception class of its own: a class costs the resident heap ~0.3 KB).
    Records and the health report are written piece by piece so: no joined copy, no encoded
    copy of the whole, so a fragmented heap needs no free block larger than one piece."""
    data = text.encode() if isinstance(text, str) else text
    m = n + len(data)
    if m > end:
        raise ValueError("full")
    buf[n:m] = data
    return m


def _source(buf, n, end, src, desc):
    bus, _, sid = src.partition("\t")
    n = put(buf, n, '{"id":%s,"bus":"%s"' % (json.dumps(sid), bus), end)
    if desc:
        n = put(buf, n, ',"desc":' + json.dumps(desc), end)
    return put(buf, n, "}", end)


def _contacts(quantities):
    # the codes past the tables above: fg/contacts.py's (loaded on a node with contacts)
    from fg import contacts

    return contacts.QUANTITIES if quantities else contacts.EVENT_TYPES


def write_json(buf, n, end, rec, desc, detail):
    """One record in the compact form of spec "Records", written into ``buf`` at ``n``
    (``put``); returns the new end."""
    kind, prio, code, flags, src, seq, rt, value, limit, _ = rec
    if kind == M:
        if code < len(QUANTITIES):
            q, u = QUANTITIES[code], UNITS[code]
        else:
            q, u = _contacts(True)[code - len(QUANTITIES)]
        n = put(buf, n, '{"seq":%d,"k":"m","rt":%d,"src":' % (seq, rt), end)
        n = _source(buf, n, end, src, desc)
        return put(buf, n, ',"q":"%s","v":%s,"u":"%s"}' % (q, _num(value), u), end)
    k = len(EVENT_TYPES)
    ev = EVENT_TYPES[code] if code < k else _contacts(False)[code - k]
    n = put(buf, n, '{"seq":%d,"k":"e","rt":%d,"pr":%d,"src":' % (seq, rt, prio), end)
    n = _source(buf, n, end, src, desc)
    n = put(buf, n, ',"ev":"%s","on":%s' % (ev, "true" if flags & ACTIVE else "false"), end)
    if flags & HAS_V:
        n = put(buf, n, ',"v":' + _num(value), end)
    if flags & HAS_LIM:
        n = put(buf, n, ',"lim":' + _num(limit), end)
    if detail:
        n = put(buf, n, ',"det":', end)
        n = put(buf, n, json.dumps(detail[:256]), end)
    return put(buf, n, "}", end)
