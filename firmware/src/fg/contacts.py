# Contacts (coils, discrete inputs, bits of a register): debounce and change reporting.
#
# The same rules as the edge agent's Modbus driver (edge/drivers/modbus.py, _contacts;
# docs/modbus-contacts.md "Debounce and polling"), so a valve closed on a site gives the same
# events from an ESP32 as from a Raspberry Pi. Each poll samples every contact once:
# * a logical state (raw bit, inverted if the contact is wired the other way round) that
#   differs from the accepted one is pending from the poll that first saw it; once every poll
#   for debounce_ms saw it, it is accepted (counted contact_change); meanwhile the device is
#   polled again when that time is up (next_due); a poll that sees the accepted state again
#   cancels it (counted bounce); a poll that did not read the contact drops it;
# * the first state read is accepted the same way, and is no change;
# * while a state is accepted, the contact's event (its meaning's type, at its default
#   priority, both written by provisioning) is active when the state is not the normal one;
#   events are level-triggered against what was stored, as every condition (fg/app.py);
# * a "state" measurement (1/0) at each accepted change and at least every report_ms.
# Provisioning writes the rows (firegate/provision/firmware.py, FIRMWARE_CONTACT_FIELDS) from
# the same profile the agent's config loader makes, channels applied.

import time
from collections import namedtuple

from micropython import const

from fg.records import FIRMWARE, M, record

# The quantity and the event types of contacts, codes after records.QUANTITIES and
# records.EVENT_TYPES (stored on flash: append only); a fault contact raises records.EV_FAULT.
QUANTITIES = (("state", ""),)  # (name, unit): a contact's logical state, 1 or 0
EVENT_TYPES = ("valve_off_normal", "running", "manual_mode", "door_open", "supervisory")
Q_STATE = const(4)  # len(records.QUANTITIES): the code of "state"


# One contact of a config.json row (a named tuple: a tenth of an object's memory in
# MicroPython); states: "closed|open", the names of logical 0 and 1 (one string for all the
# contacts of a meaning). Its debounce state lives in the device's contact set, four
# slots a contact (see load).
Contact = namedtuple("Contact", "block at bit invert normal event prio states channel desc sid")
ACCEPTED = const(0)  # logical state last accepted (None: not yet known)
PENDING = const(1)  # a different state seen, not yet held for debounce_ms
SINCE = const(2)  # ticks_ms of the poll that first saw the pending state
REPORTED = const(3)  # receive time (ms) of the last "state" measurement stored


_names = {}  # "closed|open" -> the one string of it


def contact(row, ix, base):
    """A Contact from a config.json contact row of the device whose source id is ``base``."""
    states = "|".join(row[ix["states"]])
    states = _names.setdefault(states, states)
    return Contact(row[ix["block"]], row[ix["at"]], row[ix["bit"]], row[ix["invert"]],
                   row[ix["normal"]], row[ix["event"]], row[ix["priority"]], states,
                   row[ix["channel"]], row[ix["desc"]], base + "/" + row[ix["name"]])


def attach(poller, ix):
    """Turn each device's contact set [rows, None, debounce_ms, report_ms] into [Contacts,
    their debounce state: [accepted, pending, since, reported] each, debounce_ms, report_ms],
    and name their sources in the poller's ``by_sid``."""
    for d in poller.devices:
        cs = d.cs
        if cs:
            cs[0] = [contact(r, ix, d.sid) for r in cs[0]]
            cs[1] = [None, None, 0, None] * len(cs[0])
            for c in cs[0]:
                poller.by_sid[c.sid] = c


def conclude(app, poller, dev, regs_of, conds, values, now, rt):
    """The end of a poll of a device with contacts (fg/poller.py): debounce them, poll again
    when a pending change is due, store everything, then note when each state was sent."""
    states, due = scan(dev.cs, regs_of, now, rt, poller.counters, conds)
    if due is not None and time.ticks_diff(due, dev.due) < 0:
        dev.due = due
    for i, rec in states:
        values.append((dev.cs[0][i], rec))
    if app.conditions(conds, values, poller, rt):
        st = dev.cs[1]
        for i, _ in states:
            st[4 * i + REPORTED] = rt


def bit(data, i):
    """Bit ``i`` (0 = the first requested) of a packed coil / discrete-input reply (fg/modbus.py
    keeps them packed): MAP §6.1/§6.2, the first one is the least significant bit of the first
    byte."""
    return data[i >> 3] >> (i & 7) & 1


def _count(counters, reason):
    counters[reason] = counters.get(reason, 0) + 1


def scan(cs, regs_of, now, rt, counters, conds):
    """Debounce one poll of a device's contacts (``cs``, see load). Appends their conditions
    to ``conds`` as (key, event, active, None, None, state, priority); returns
    ([(contact index, state record)], the ticks_ms by which the device must be polled again,
    or None)."""
    contacts, st, debounce_ms, report_ms = cs
    out = []
    due = None
    for i in range(len(contacts)):
        c = contacts[i]
        j = 4 * i
        data = regs_of[c.block] if c.block < len(regs_of) else None
        changed = False
        if data is None:  # not read this poll (silent device, failed block)
            st[j + PENDING] = None
        else:
            raw = bit(data, c.at) if c.bit < 0 else data[c.at] >> c.bit & 1
            seen = bool(raw) != c.invert
            if seen == st[j + ACCEPTED]:
                if st[j + PENDING] is not None:
                    _count(counters, "bounce")
                st[j + PENDING] = None
            else:
                if st[j + PENDING] != seen:
                    st[j + PENDING] = seen
                    st[j + SINCE] = now
                # 1 ms of slack: the confirming poll was scheduled for exactly this moment
                if time.ticks_diff(now, st[j + SINCE]) >= debounce_ms - 1:
                    if st[j + ACCEPTED] is not None:  # the first state read is no change
                        _count(counters, "contact_change")
                    st[j + ACCEPTED] = seen
                    st[j + PENDING] = None
                    changed = True
                else:
                    t = time.ticks_add(st[j + SINCE], debounce_ms)
                    if due is None or time.ticks_diff(t, due) < 0:
                        due = t
        state = st[j + ACCEPTED]
        if state is None:
            continue
        key = FIRMWARE + "\t" + c.sid
        conds.append((key, c.event, state != c.normal, None, None, int(state), c.prio))
        last = st[j + REPORTED]
        if changed or last is None or rt - last >= report_ms:
            out.append((i, record(M, 3, Q_STATE, 0, key, rt, 1.0 if state else 0.0)))
    return out, due


def detail(c, state):
    """The event text, as the edge agent writes it: ``channel 3: closed (normal: open)``."""
    where = "channel %d: " % c.channel if c.channel >= 0 else ""
    names = c.states.split("|")
    return "%s%s (normal: %s)" % (where, names[state], names[int(c.normal)])
