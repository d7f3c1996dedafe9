# The health report (spec "Health"), built when it is due and then dropped from memory.
#
# Counters by part (modbus/<bus>, uplink, ring, rules), link states, the ring's depth (every
# record held: not sent, or sent and not yet confirmed), age and evictions, the free flash, and
# firmware figures as x_ keys (heap free, heap peak, ring capacity, records sent and waiting for
# the collector's confirmation), which v1 decoders accept and ignore.

import gc
import json

from fg.records import PRIO_LABELS, VERSION


def _num(x):
    return json.dumps(x)


def build(app):
    """The health payload of ``app`` (a fg.app.App) as JSON text."""
    app.heap()
    ring = app.ring
    now = app.hw.now_ms()
    best = ring.oldest((0, 1, 2, 3))
    oldest = None if best < 0 else next(ring.read([best]))[6]
    try:
        disk = app.hw.disk_free(app.cfg.data_dir)
    except OSError:
        disk = None
    c = app.counters
    groups = [(app.poller.name, c["modbus"]), ("uplink", c["uplink"]), ("ring", c["ring"]),
              ("rules", c["rules"])]
    parts = ['{"v":1,"gw":"%s","ts":%d,"uptime_s":%s,"ver":%s,"ob_depth":%d' % (
        app.cfg.gw, now, _num(app.uptime_ms / 1000),
        json.dumps(VERSION), ring.depth)]
    if oldest is not None:
        parts.append(',"ob_oldest_s":' + _num(max(0, now - oldest) / 1000))
    parts.append(',"evicted":{%s}' % ",".join(
        '"%s":%d' % (PRIO_LABELS[i], n) for i, n in enumerate(ring.evicted)))
    parts.append(',"counters":{%s}' % ",".join(
        "%s:%s" % (json.dumps(name), json.dumps(counts)) for name, counts in groups if counts))
    parts.append(',"links":{%s}' % ",".join(
        '%s:"%s"' % (json.dumps(k), "up" if up else "down") for k, up in sorted(
            app.links.items())))
    if disk is not None:
        parts.append(',"disk_free_bytes":%d' % disk)
    parts.append(',"last_seq":%d,"ep":"%s","x_heap_free":%d,"x_heap_peak":%d,'
                 '"x_ring_capacity":%d,"x_ring_sent":%d}' % (
                     ring.last_seq, ring.epoch_hex(), gc.mem_free(), app.heap_peak,
                     ring.capacity, ring.depth - ring.live))
    return "".join(parts)
