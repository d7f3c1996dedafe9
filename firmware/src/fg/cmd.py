# Commands from the cloud (spec "Command"), answered on cmd/ack (spec "Ack").
#
# Loaded only while a command is handled, then dropped from memory (fg/uplink.py). The firmware
# carries out ping, report_health, sync_clock and resend; any other command, a stale one (older
# than its ttl) or one it cannot decode is answered ok=false with the reason, so the sender
# always learns what happened.

import json
import time

from micropython import const

from fg.records import VERSION
from fg.ring import FREE, SEG_SLOTS, SENT

MAX_MISSING = const(32)  # ranges in a resend answer; the rest is answered by a later request


def _ack(cid, ok, ts, error=None, result=None):
    out = '{"v":1,"id":%s,"ok":%s,"ts":%d' % (json.dumps(cid), "true" if ok else "false", ts)
    if result:
        out += ',"result":' + result
    if error:
        out += ',"error":' + json.dumps(error[:256])
    return out + "}"


def _peek_id(msg):
    # the id of a command that does not decode, when it has a usable one
    try:
        cid = json.loads(msg).get("id")
    except (ValueError, AttributeError):
        return None
    if isinstance(cid, str) and 0 < len(cid) <= 64 and " " not in cid:
        return cid
    return None


def _seq(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 53


def requeue(ring, first, last):
    """The seqs ``ring`` holds in ``first..last``, the sent ones made pending again. Ring code,
    kept here because only this rare command needs it (fg/ring.py stays resident)."""
    prio = ring.prio
    held = []
    for s in range(ring.segs):
        sq = ring.seq[s]
        base = s * SEG_SLOTS
        for j in range(SEG_SLOTS):
            v = prio[base + j]
            if v != FREE and first <= sq[j] <= last:
                held.append(sq[j])
                if v >= SENT:
                    prio[base + j] = v & 3
                    ring.live += 1
    return held


def _resend(up, args):
    """Spec "Command", ``resend``: queue again what the ring holds of ep/first..last and name
    the ranges it no longer has (evicted, confirmed, or of another epoch). Seqs above the last
    one assigned are neither: they do not exist yet. At most MAX_MISSING ranges (the lowest)
    are named, with "truncated": true; the collector asks again for the rest."""
    if not isinstance(args, dict):
        return False, "resend needs the arguments first and last", None
    for key in args:
        if key not in ("ep", "first", "last"):
            return False, "unknown argument %s" % json.dumps(key), None
    first, last, ep = args.get("first"), args.get("last"), args.get("ep")
    if not (_seq(first) and _seq(last) and first <= last):
        return False, "first and last must be seqs with first <= last", None
    if ep is not None and not isinstance(ep, str):
        return False, "ep must be 16 hex digits", None
    ring = up.ring
    if ep != ring.epoch_hex():  # another epoch (absent: 0): none of it is here
        return True, None, '{"resent":0,"missing":[[%d,%d]]}' % (first, last)
    top = min(last, ring.last_seq)
    held = requeue(ring, first, top) if first <= top else []
    held.sort()
    missing = []
    cursor = first
    for q in held + [top + 1]:
        if q > cursor:
            if len(missing) == MAX_MISSING:
                break
            missing.append("[%d,%d]" % (cursor, q - 1))
        cursor = q + 1
    up.counters["resend_requeued"] = up.counters.get("resend_requeued", 0) + len(held)
    return True, None, '{"resent":%d,"missing":[%s]%s}' % (
        len(held), ",".join(missing), ',"truncated":true' if len(missing) == MAX_MISSING
        and cursor <= top else "")


def run(up, msg):
    """Carry out one command for the Uplink ``up`` and publish its ack."""
    now = up.hw.now_ms()
    try:
        c = json.loads(msg)
        cid, name, ts = c["id"], c["cmd"], c["ts"]
        if c.get("v") != 1 or not isinstance(cid, str) or not isinstance(name, str) or \
                not isinstance(ts, int) or isinstance(ts, bool):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        up.counters["bad_command"] = up.counters.get("bad_command", 0) + 1
        cid = _peek_id(msg)
        if cid is not None:
            up.client.publish(up.topic("cmd/ack"), _ack(cid, False, now, "bad command").encode(),
                              False, 1)
        return
    ttl = c.get("ttl")
    ok, error, result = True, None, None
    if isinstance(ttl, int) and now > ts + ttl * 1000:
        ok, error = False, "stale: older than its ttl of %d s" % ttl
    elif name == "ping":
        result = '{"version":%s}' % json.dumps(VERSION)
    elif name == "report_health":
        # due now: the uplink publishes it once this module is dropped again (built here, the
        # report and this code and the parsed command shared the heap's last few KB)
        up.health_at = time.ticks_ms()
    elif name == "resend":
        ok, error, result = _resend(up, c.get("args"))
    elif name == "sync_clock":
        ok = up.hw.set_clock(ts)
        if not ok:
            error = "this port cannot set its clock"
    else:
        ok, error = False, "command %s is not supported by the firmware" % json.dumps(name)
    up.counters["commands"] = up.counters.get("commands", 0) + 1
    up.client.publish(up.topic("cmd/ack"), _ack(cid, ok, now, error, result).encode(), False, 1)
