# Polls the Modbus devices of the one RS-485 bus and turns their registers into records.
#
# The same behaviour as the edge agent's Modbus driver (edge/drivers/modbus.py), so a site gets
# the same records from an ESP32 as from a Raspberry Pi (sources modbus/<bus>/<unit>/<point>):
# * a measurement per point and poll, in the quantity's canonical unit (MPa, m, degC, mA);
# * sensor_offline (device source) after offline_after unanswered polls, then the device's polls
#   back off exponentially up to backoff_max; cleared by its first answer;
# * device_error while it answers with exception replies, cleared by a complete poll;
# * out_of_range (point source) while a reading is outside the point's plausible range; such a
#   reading is not sent as a measurement (a broken 4-20 mA loop must not look like 0 MPa);
# * fault per named status bit, threshold_high for alarm bits (names ending in _alarm); while a
#   fault bit is set the points it covers are not sent (counted fault_suppressed);
# * link_fault (bus source) while the port cannot be opened; reopened with back-off;
# * per contact (coil, discrete input, bit of a register): its meaning's event once a change
#   held for debounce_ms, and a "state" measurement (fg/contacts.py: loaded only for a bus
#   that has contacts, once the rest of the config has been freed).
# Events are level-triggered against what was stored: ``reported`` (kept on flash by the app
# so a condition raised before a reboot is cleared after it).

import time

from fg import modbus
from fg.points import canonical, columns, physical, point
from fg.records import (
    ACTIVE, E, EV_DEVICE, EV_FAULT, EV_HIGH, EV_LINK, EV_OFFLINE, EV_RANGE, FIRMWARE, HAS_LIM,
    HAS_V, M, record,
)


def _key(sid):
    return FIRMWARE + "\t" + sid


class _Device:
    cs = None  # no contacts (a class attribute: no room in each instance)

    def __init__(self, d, base, ix):
        self.unit = d["unit"]
        self.name = d["name"]
        self.blocks = d["blocks"]  # [[function, start, count], ...] from DeviceProfile.read_blocks
        self.sid = base + "/%d" % self.unit
        self.points = [point(p, ix, self.sid, self.name) for p in d["points"]]
        # status words: (block, at, name, [(bit, bit_name, is_alarm, [point indexes], sid)])
        self.words = [(w["block"], w["at"], w["name"],
                       [(b[0], b[1], b[2], b[3], "%s/%s/%s" % (self.sid, w["name"], b[1]))
                        for b in w["bits"]])
                      for w in d.get("status", [])]
        rows = d.get("contacts")
        # contacts: [rows (Contacts once the Poller loaded them), state, debounce_ms,
        # report_ms] (fg/contacts.py), or None; one attribute, so a device without contacts
        # costs no more than before they existed
        if rows:
            self.cs = [rows, None, d["debounce_ms"], d["report_ms"]]
        self.interval = d["interval_ms"]
        self.offline_after = d["offline_after"]
        self.backoff_max = d["backoff_max_ms"]
        self.due = time.ticks_ms()
        self.failures = 0
        self.offline = False
        self.backoff = 0


class Poller:
    """``service(app)`` polls the device that is due; ``next_due()`` says when to come back."""

    def __init__(self, cfg, hw, counters, links):
        self.cfg = cfg
        self.hw = hw
        self.counters = counters
        self.links = links
        self.name = "modbus/" + cfg["name"]
        self.key = _key(self.name)
        raw = cfg["devices"]
        ix = columns(cfg["point_fields"])
        self.devices = []
        for i in range(len(raw)):
            self.devices.append(_Device(raw[i], self.name, ix))
            raw[i] = None  # free each raw map as soon as it is converted
        self.master = None
        self.reopen_at = time.ticks_ms()
        self.reopen_ms = 1000
        # source id -> what it is (a Point, a _Device, or (word, bit, bit_name, device name)),
        # for the descriptions and texts of stored records
        self.by_sid = {self.name: hw.port_name(cfg)[-64:]}
        for dev in self.devices:
            self.by_sid[dev.sid] = dev
            for p in dev.points:
                self.by_sid[p.sid] = p
            for _, _, word, bits in dev.words:
                for b in bits:
                    self.by_sid[b[4]] = (word, b[0], b[1], dev.name)
        self.cmod = None
        if "contact_fields" in cfg:  # fg/contacts.py takes the devices' contacts from here
            from fg import contacts

            self.cmod = contacts
            contacts.attach(self, columns(cfg["contact_fields"]))
        # the column names are needed only to convert the rows: ~1.4 KB of strings and lists
        cfg["devices"] = cfg["point_fields"] = cfg["contact_fields"] = None

    def desc(self, sid):
        """The description of a source: the device's name (the port for the bus)."""
        what = self.by_sid.get(sid)
        if isinstance(what, str):
            return what
        if type(what) is tuple:  # a status bit (a Point is a tuple too, of its own type)
            return what[3]
        if isinstance(what, _Device):
            return what.name
        return None if what is None else what.desc

    def _count(self, reason):
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def next_due(self):
        """When the next poll (or reopen) is due, in ticks_ms (compared with ticks_diff: the
        counter wraps, after ~12 days on an ESP32)."""
        if self.master is None:
            return self.reopen_at
        due = self.devices[0].due
        for d in self.devices:
            if time.ticks_diff(d.due, due) < 0:
                due = d.due
        return due

    def service(self, app):
        now = time.ticks_ms()
        if self.master is None:
            if time.ticks_diff(self.reopen_at, now) > 0:
                return
            self._open(app)
            if self.master is None:
                return
        dev = self.devices[0]
        for d in self.devices:
            if time.ticks_diff(d.due, dev.due) < 0:
                dev = d
        if time.ticks_diff(dev.due, now) > 0:
            return
        self._poll(app, dev)

    def _open(self, app):
        try:
            port = self.hw.open_modbus(self.cfg)
        except (OSError, ValueError) as e:  # ValueError: a UART the board does not have
            self._count("open_failed")
            self.links[self.name] = False
            app.conditions([(self.key, EV_LINK, True, None, None, 0)], [], self)
            self.reopen_at = time.ticks_add(time.ticks_ms(), self.reopen_ms)
            self.reopen_ms = min(self.reopen_ms * 2, int(self.cfg["reopen_max_s"] * 1000))
            app.log("modbus: cannot open %s: %s" % (self.hw.port_name(self.cfg), e))
            return
        if self.counters.get("open_failed") or self.counters.get("link_lost"):
            self._count("reopen")
        self.master = modbus.Master(port, self.cfg["transport"] == "tcp",
                                    self.cfg["timeout_ms"], self.cfg["gap_ms"], self.counters)
        self.reopen_ms = 1000
        self.links[self.name] = True
        app.conditions([(self.key, EV_LINK, False, None, None, 0)], [], self)

    def _lost(self, app):
        try:
            self.master.port.close()
        except OSError:
            pass
        self.master = None
        self.links[self.name] = False
        self.reopen_at = time.ticks_ms()
        app.conditions([(self.key, EV_LINK, True, None, None, 0)], [], self)

    def _poll(self, app, dev):
        regs_of = []
        answered = False
        complete = True
        problem = 0  # what the last failed read was (modbus.NO_ANSWER / BAD_REPLY)
        exc = None  # (code, block index) of the first exception reply
        for bi, (fn, start, count) in enumerate(dev.blocks):
            kind, value = self.master.read(dev.unit, fn, start, count)
            if kind == modbus.OK:
                regs_of.append(value)
                answered = True
                continue
            regs_of.append(None)
            if kind == modbus.EXCEPTION:
                answered = True
                complete = False
                if exc is None:
                    exc = (value, bi)
            elif kind == modbus.LINK_LOST:
                app.log("modbus: link lost: %s" % value)
                self._lost(app)
                return
            else:  # a silent device: one timeout per poll is enough
                complete = False
                problem = kind
                break
        self._conclude(app, dev, regs_of, answered, complete, problem, exc)

    def _conclude(self, app, dev, regs_of, answered, complete, problem, exc):
        now = time.ticks_ms()
        link = dev.sid
        conds = []
        if answered:
            dev.failures = 0
            dev.backoff = 0
            dev.offline = False
            self.links[link] = True
            conds.append((_key(dev.sid), EV_OFFLINE, False, None, None, 0))
            dev.due = self._later(dev.due, dev.interval, now)
        else:
            dev.failures += 1
            if dev.failures >= dev.offline_after:
                if not dev.offline:
                    dev.offline = True
                    self._count("offline")
                self.links[link] = False
                conds.append((_key(dev.sid), EV_OFFLINE, True, None, None,
                              min(dev.failures, 0xFFFF) | problem << 16))
                dev.backoff = min(dev.backoff_max, max(dev.interval, dev.backoff) * 2)
                dev.due = time.ticks_add(now, dev.backoff)
            else:
                dev.due = self._later(dev.due, dev.interval, now)
        if exc is not None:
            conds.append((_key(dev.sid), EV_DEVICE, True, None, None, exc[0] | exc[1] << 8))
        elif complete:
            conds.append((_key(dev.sid), EV_DEVICE, False, None, None, 0))
        rt = self.hw.now_ms()
        values = self._values(dev, regs_of, conds)
        if dev.cs:
            self.cmod.conclude(app, self, dev, regs_of, conds, values, now, rt)
        else:
            app.conditions(conds, values, self, rt)

    @staticmethod
    def _later(due, interval, now):
        nxt = time.ticks_add(due, interval)
        return now if time.ticks_diff(nxt, now) < 0 else nxt

    def _values(self, dev, regs_of, conds):
        faulted = set()
        for block, at, _, bits in dev.words:
            regs = regs_of[block] if block < len(regs_of) else None
            if regs is None:
                continue
            value = regs[at]
            for n, _, alarm, covers, sid in bits:
                on = bool(value >> n & 1)
                conds.append((_key(sid), EV_HIGH if alarm else EV_FAULT, on, None, None, 0))
                if on and not alarm:
                    faulted.update(covers)
        out = []
        rt = self.hw.now_ms()
        for i, p in enumerate(dev.points):
            regs = regs_of[p.block] if p.block < len(regs_of) else None
            if regs is None:
                continue
            phys = physical(p, regs)
            value = canonical(p, phys)
            finite = value == value and value not in (float("inf"), float("-inf"))
            if not finite or not p.minimum <= phys <= p.maximum:
                self._count("out_of_range")
                bound = p.maximum if finite and phys > p.maximum else p.minimum
                conds.append((_key(p.sid), EV_RANGE, True, value if finite else None,
                              bound * p.factor, 0))
                continue
            conds.append((_key(p.sid), EV_RANGE, False, value, None, 0))
            if i in faulted:
                self._count("fault_suppressed")
                continue
            out.append((p, record(M, 3, p.code, 0, _key(p.sid), rt, value)))
        return out


def condition_record(cond, rt):
    """The event record of a condition tuple (key, code, active, value, limit, aux[,
    priority]); without a priority, class 1 (alarm: every Modbus condition's default)."""
    key, code, active, value, limit, aux = cond[0], cond[1], cond[2], cond[3], cond[4], cond[5]
    flags = ACTIVE if active else 0
    if value is not None:
        flags |= HAS_V
    if limit is not None:
        flags |= HAS_LIM
    prio = cond[6] if len(cond) > 6 else 1
    return record(E, prio, code, flags, key, rt, value or 0.0, limit or 0.0, aux)
