# The health report (spec "Health"), built when it is due and then dropped from memory.
#
# Counters by part (modbus/<bus>, uplink, ring, rules), link states, the ring's depth (every
# record held: not sent, or sent and not yet confirmed), age and evictions, the free flash, and
# firmware figures as x_ keys (heap free, heap peak, ring capacity, records sent and waiting for
# the collector's confirmation), which v1 decoders accept and ignore.
#
# The report is written piece by piece into the batch buffer (fg/uplink.py), as a batch is: no
# list of parts, no joined copy, no encoded copy, so building it needs no free block larger
# than one piece (a joined report of ~0.6 KB found none in a fragmented heap and reset the node).

import gc
import json

from fg.records import PRIO_LABELS, VERSION, put


def _put(buf, n, text):
    return put(buf, n, text, len(buf))  # ValueError past the end


def build(app, buf):
    """Write the health payload of ``app`` (a fg.app.App) into ``buf`` (a memoryview);
    returns its length."""
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
    n = _put(buf, 0, '{"v":1,"gw":"%s","ts":%d,"uptime_s":%s,"ver":%s,"ob_depth":%d' % (
        app.cfg.gw, now, json.dumps(app.uptime_ms / 1000), json.dumps(VERSION), ring.depth))
    if oldest is not None:
        n = _put(buf, n, ',"ob_oldest_s":' + json.dumps(max(0, now - oldest) / 1000))
    n = _put(buf, n, ',"evicted":{')
    for i, count in enumerate(ring.evicted):
        n = _put(buf, n, '%s"%s":%d' % ("," if i else "", PRIO_LABELS[i], count))
    n = _put(buf, n, '},"counters":{')
    sep = ""
    for name, counts in ((app.poller.name, c["modbus"]), ("uplink", c["uplink"]),
                         ("ring", c["ring"]), ("rules", c["rules"])):
        if counts:
            n = _put(buf, n, "%s%s:%s" % (sep, json.dumps(name), json.dumps(counts)))
            sep = ","
    n = _put(buf, n, '},"links":{')
    sep = ""
    for k in sorted(app.links):
        n = _put(buf, n, '%s%s:"%s"' % (sep, json.dumps(k), "up" if app.links[k] else "down"))
        sep = ","
    n = _put(buf, n, "}")
    if disk is not None:
        n = _put(buf, n, ',"disk_free_bytes":%d' % disk)
    return _put(buf, n, ',"last_seq":%d,"ep":"%s","x_heap_free":%d,"x_heap_peak":%d,'
                '"x_ring_capacity":%d,"x_ring_sent":%d}' % (
                    ring.last_seq, ring.epoch_hex(), gc.mem_free(), app.heap_peak,
                    ring.capacity, ring.depth - ring.live))
