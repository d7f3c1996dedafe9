# The firmware's composition root and main loop (one thread, no asyncio: small and predictable).
#
# Each turn of the loop: feed the watchdog, keep Wi-Fi and the clock (hw.service), poll the
# device that is due (fg/poller.py), let debounced threshold changes mature (fg/rules.py),
# send what the ring holds (fg/uplink.py), collect garbage. Records go to the flash ring before
# anything else (fg/ring.py); conditions and threshold alarms are kept in state.json so a
# condition raised before a reboot is cleared after it, not forgotten.

import gc
import json
import os
import sys
import time

from fg import records, rules
from fg.poller import Poller, condition_record
from fg.records import ACTIVE, HAS_LIM, HAS_V, RULE, VERSION, E
from fg.ring import Ring
from fg.uplink import Uplink


def log(msg):
    print("fg: " + msg)


def _unload(name):
    # Start-up code is needed once: drop its module so the heap gets its code back.
    import fg

    sys.modules.pop("fg." + name, None)
    if hasattr(fg, name):
        delattr(fg, name)


def _tls(ctx, m):
    from fg.connect import tls_setup

    ctx = tls_setup(ctx, m)
    _unload("connect")
    return ctx


def _open_ring(path, kb, counters):
    from fg.ringopen import open_ring

    ring = open_ring(Ring(path, counters), kb)
    _unload("ringopen")
    return ring


class Settings:
    """The loaded config.json (attributes set by fg/config.py)."""


BATCH_BYTES = 4096  # the largest record payload; provisioning keeps batch_max_bytes below it


class App:
    def __init__(self, cfg, hw, batch, tls):
        self.cfg = cfg
        self.hw = hw
        self.tick = time.ticks_ms()
        self.uptime_ms = 0  # summed per loop turn: ticks_ms wraps (ticks_diff spans ~6 days)
        self.heap_peak = 0
        self.counters = {"modbus": {}, "uplink": {}, "ring": {}, "rules": {}}
        self.links = {}
        d = cfg.data_dir
        self.state_path = d + "/state.json"
        self.ring = _open_ring(d + "/" + cfg.ring_dir, cfg.ring_kb, self.counters["ring"])
        self.poller = Poller(cfg.bus, hw, self.counters["modbus"], self.links)
        reported, active = self._load_state()
        self.reported = set(reported)
        self.unsaved = False  # state.json could not be written (flash failing): try again
        self.sensors = {}  # point source id -> rules.Sensor, for the points a rule applies to
        for dev in self.poller.devices:
            for p in dev.points:
                if p.rule >= 0:
                    kinds = [k for sid, k in active if sid == p.sid]
                    self.sensors[p.sid] = rules.Sensor(cfg.rules[p.rule], p.unit, kinds)
        limit = min(len(batch), cfg.mqtt["batch_max_bytes"])
        self.uplink = Uplink(cfg, hw, self.ring, self.counters["uplink"], self.links, self,
                             memoryview(batch)[:limit], tls)

    def log(self, msg):
        log(msg)

    @staticmethod
    def unload(name):
        _unload(name)

    # -- state that outlives a reboot ---------------------------------------------------------

    def _load_state(self):
        try:
            with open(self.state_path) as f:
                s = json.load(f)
            return s["reported"], s["rules"]
        except (OSError, ValueError, KeyError):
            return [], []

    def _save_state(self):
        try:
            self._write_state()
        except OSError as e:  # flash failing: RAM is right; saved again at the next tick
            self.unsaved = True
            self._count("ring", "state_failed")
            log("state: cannot save: %s" % (e,))

    def _write_state(self):
        active = []
        for sid, sensor in self.sensors.items():
            for kind in sensor.active_kinds():
                active.append([sid, kind])
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"reported": sorted(self.reported), "rules": active}, f)
        os.rename(tmp, self.state_path)
        self.unsaved = False

    # -- records ------------------------------------------------------------------------------

    def conditions(self, conds, measurements, poller, rt=None):
        """Store the conditions that changed, the measurements (through the rules) and the
        threshold events they bring; level-triggered against what was stored before. False
        when they could not be stored: the conditions stay unreported and the rules' changes
        are undone, so both are raised again; the measurements are dropped (counted)."""
        rt = rt or self.hw.now_ms()
        recs = []
        marks = []
        for c in conds:
            k = "%s|%d" % (c[0], c[1])
            if (k in self.reported) != c[2]:
                recs.append(condition_record(c, rt))
                marks.append((k, c[2]))
        flips = []
        for p, m in measurements:
            sensor = self.sensors.get(p.sid)
            if sensor is None:
                recs.append(m)
                continue
            evs = []
            if sensor.sample(m[7], m[6], evs):
                recs.append(m)
            else:
                self._count("rules", "suppressed")
            for ev in evs:
                recs.append(self._rule_record(p, ev))
                flips.append((sensor, ev))
        return self._store(recs, marks, flips)

    def _rule_record(self, p, ev):
        kind, active, value, limit, ms = ev
        prio = self.cfg.rules[p.rule]["priority"]
        return records.record(E, prio, kind, (ACTIVE if active else 0) | HAS_V | HAS_LIM,
                              RULE + "\t" + p.sid, ms, value, limit)

    def _count(self, group, reason, n=1):
        c = self.counters[group]
        c[reason] = c.get(reason, 0) + n

    def _store(self, recs, marks=(), flips=()):
        """Append ``recs`` to the ring; then note the conditions (``marks``) and the rules'
        changes (``flips``: (sensor, event)) as reported. A flash write that fails (OSError:
        flash full or failing) stores none of them (fg/ring.py: all or nothing) and notes
        nothing: conditions are level-triggered against ``reported``, and the rules' changes
        are undone, so the next poll or tick raises them again until they are stored
        (docs/firmware.md "Flash write failures"); measurements are dropped."""
        if not recs:
            return True
        try:
            self.ring.append(recs)
        except OSError as e:
            self._count("ring", "store_failed", len(recs))
            for sensor, ev in reversed(flips):
                sensor.unflip(ev)
            log("ring: cannot store %d records: %s" % (len(recs), e))
            return False
        for k, on in marks:
            if on:
                self.reported.add(k)
            else:
                self.reported.discard(k)
        for _, ev in flips:
            self._count("rules", "raised" if ev[1] else "cleared")
        if marks or flips:
            self._save_state()
        return True

    def tick_rules(self):
        now = self.hw.now_ms()
        recs = []
        flips = []
        for sid, sensor in self.sensors.items():
            evs = []
            sensor.tick(now, evs)
            for ev in evs:
                recs.append(self._rule_record(self.poller.by_sid[sid], ev))
                flips.append((sensor, ev))
        self._store(recs, (), flips)
        if self.unsaved:
            self._save_state()

    def render(self, rec, buf, n, end):
        """A stored record as wire JSON written into ``buf`` at ``n`` (ValueError past
        ``end``), with the source's description and the event's text (fg/texts.py, loaded for
        events only; the uplink drops it after the batch); returns the new end."""
        detail = None
        if rec[0] == E:
            try:
                from fg import texts

                detail = texts.detail(self, rec)
            except MemoryError:  # the event goes without its text rather than not at all
                self.unload("texts")
                self._count("modbus", "detail_no_memory")
        return records.write_json(buf, n, end, rec, self.poller.desc(rec[4].partition("\t")[2]),
                                  detail)

    def heap(self):
        now = time.ticks_ms()
        self.uptime_ms += time.ticks_diff(now, self.tick)
        self.tick = now
        used = gc.mem_alloc()
        if used > self.heap_peak:
            self.heap_peak = used

    # -- the loop -----------------------------------------------------------------------------

    def run(self):
        hw = self.hw
        hw.start(log)
        log("firegate firmware %s, gateway %s, ring %d slots (%d waiting, last seq %d)" % (
            VERSION, self.cfg.gw, self.ring.capacity, self.ring.depth, self.ring.last_seq))
        gc.collect()
        log("heap: %d bytes used, %d free" % (gc.mem_alloc(), gc.mem_free()))
        gc.threshold(8192)  # collect after every 8 KB allocated: garbage never crowds the heap
        try:
            while True:
                hw.feed()
                hw.service()
                self.poller.service(self)
                self.tick_rules()
                more = self.uplink.service()
                self.heap()
                gc.collect()
                if not more:
                    wait = time.ticks_diff(self.poller.next_due(), time.ticks_ms())
                    time.sleep_ms(max(1, min(wait, 100)))
        except KeyboardInterrupt:  # Ctrl-C on the console (mpremote): say goodbye properly
            self.uplink.shutdown()
            raise


def main(path="config.json"):
    """Entry point (main.py). A bad config stops here, before the watchdog is armed, so the
    board stays reachable for `flash.sh`; anything unexpected later resets the board."""
    if sys.platform == "esp32":
        from fg.hw_esp32 import Hw
    else:
        from fg.hw_unix import Hw
    # The large long-lived objects first, while the heap is one free block: parsing the config
    # leaves it in pieces. The TLS context (~3 KB of mbedTLS state) is made once and reused.
    batch = bytearray(BATCH_BYTES)
    import ssl

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    from fg import config

    try:
        cfg = config.load(path, Settings())
    except (OSError, config.ConfigError) as e:
        log("config: %s: %s" % (path, e))
        return 2
    del config
    _unload("config")
    gc.collect()  # the parse's garbage (~6 KB, the loader's code and the JSON's pieces) joined
    hw = Hw(cfg)
    try:
        App(cfg, hw, batch, _tls(tls, cfg.mqtt)).run()
    except KeyboardInterrupt:
        raise
    except Exception as e:  # the last line of defence: log it, then start again
        sys.print_exception(e)
        log("fatal: %r; resetting" % (e,))
        time.sleep_ms(2000)
        hw.reset()
