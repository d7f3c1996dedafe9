# Event texts ("det"), rebuilt from the config when a stored event is sent.
#
# The ring keeps no text (40 bytes a record): an event's detail is written again, in the edge
# agent's words, from what the slot holds (type, value, limit, aux) and from the config (the
# rule, the device, the point). Loaded while a batch with events is built, then dropped from
# memory (fg/uplink.py): events are rare, the heap is small.

from fg import modbus
from fg.records import (
    ACTIVE, EV_DEVICE, EV_FAULT, EV_HIGH, EV_LINK, EV_LOW, EV_OFFLINE, EV_RANGE, HAS_V, RULE,
)

# Modbus Application Protocol V1.1b3 §7: exception codes (the edge agent's texts)
# (by code; a tuple, not a dict: no hash table to find room for while an alarm is sent)
MEANINGS = (
    None, "illegal function", "illegal data address", "illegal data value",
    "server device failure", "acknowledge", "server device busy", "negative acknowledge",
    "memory parity error", None, "gateway path unavailable",
    "gateway target device failed to respond",
)


# function code -> the table's name in the agent's texts (protocols/registers.py BitTable and
# RegisterType values)
TABLES = (None, "coil", "discrete_input", "holding", "input")


def _meaning(code):
    text = MEANINGS[code] if code < len(MEANINGS) else None
    return text or "non-standard exception code"


def _g(x):
    return "{:g}".format(x)


def rule_detail(rule, kind, active, value, unit):
    """The text of a threshold event, as the edge agent's rule engine writes it."""
    if not active:
        return "rule %s: back to %s %s" % (rule["name"], _g(value), unit)
    bound = rule["low"] if kind == EV_LOW else rule["high"]
    text = "rule %s: %s %s %s %s %s" % (rule["name"], _g(value), unit,
                                        "<" if kind == EV_LOW else ">", _g(bound), unit)
    if rule["debounce_s"]:
        text += " for %s s" % _g(rule["debounce_s"])
    return text


def detail(app, rec):
    """The ``det`` text of a stored event record, or None."""
    _, _, code, flags, src, _, _, value, _, aux = rec
    bus, _, sid = src.partition("\t")
    active = flags & ACTIVE
    poller = app.poller
    what = poller.by_sid.get(sid)
    if bus == RULE:
        if what is None or what.rule < 0:
            return None
        return rule_detail(app.cfg.rules[what.rule], code, active, value, what.unit)
    if code == EV_LINK:
        return "cannot open or lost %s" % poller.hw.port_name(poller.cfg) if active else None
    if getattr(what, "states", None) is not None:  # a contact: raised and cleared say the state
        from fg.contacts import detail as contact_detail

        return contact_detail(what, aux & 1)
    if not active or what is None:
        return None
    if code == EV_OFFLINE:
        text = "no answer to %d polls" % (aux & 0xFFFF)
        if aux >> 16 == modbus.NO_ANSWER:
            text += ": no answer from unit %d within %s s" % (
                what.unit, _g(poller.cfg["timeout_ms"] / 1000))
        elif aux >> 16 == modbus.BAD_REPLY:
            text += ": bad reply"
        return text
    if code == EV_DEVICE:
        fn, start, count = what.blocks[aux >> 8 & 0xFF]
        return "exception %d (%s) reading %s %d..%d" % (
            aux & 0xFF, _meaning(aux & 0xFF),
            TABLES[fn], start, start + count - 1)
    if code == EV_RANGE:
        v = value if flags & HAS_V else float("nan")
        return "%s %s %s outside %s..%s %s" % (what.name, _g(v), what.unit,
                                               _g(what.minimum * what.factor),
                                               _g(what.maximum * what.factor), what.unit)
    if code in (EV_FAULT, EV_HIGH) and type(what) is tuple:  # a status bit
        return "%s bit %d %s" % what[:3]
    return None
