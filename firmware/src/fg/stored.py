# The collector's confirmation (spec "Stored"): checked, then the ring slots it names freed.
#
#   {"v":1,"gw":"pump-3fa2c9","ep":"5f0c2a91d3b7e468","seqs":[[1041,1044],[1050,1050]],
#    "ts":1718000001500,"by":"collector-1"}
#
# Loaded when confirmations have arrived and dropped again (fg/uplink.py): they come about once
# a batch, but this code, ring code included (``confirm``), is needed only for that moment.
#
# Bounded memory. fg/mqtt.py reads the payload into the batch buffer (at most batch_max_bytes;
# a bigger one is drained unread and counted by the uplink), and json.loads reads it from there.
# What json.loads builds is bounded before it runs: one list or dict per bracket, so a payload
# with more opening brackets than the object, its seqs array and MAX_RANGES ranges need is
# refused as too large, unparsed (brackets in an extension key or in a string count too: that
# can only refuse more). A range costs ~76 bytes of heap parsed on the 64-bit
# unix port (~38 on an ESP32): at most ~5 KB for 64 ranges, a few hundred bytes for the usual
# confirmation of a batch or two. A confirmation refused for its size deletes nothing: its
# records are sent again after the confirm timeout, and the collector confirms that resend (one
# batch: at most batch_max_records ranges) in a message that fits. A parser of our own that
# keeps ranges in an array (8 bytes each) was tried: its code took 3.5 KB of heap at each
# confirmation against this module's 1.5 KB, a worse price for the usual case.
#
# Seqs are compared as the ring keeps them, 32 bits (docs/firmware.md "Limits").

import json

from micropython import const

from fg.ring import FREE, SEG_SLOTS, SENT, SLOT

MAX_RANGES = const(64)  # ranges in one confirmation; the collector may send up to 2,000
_MAX_BRACKETS = const(66)  # the object, the seqs array, MAX_RANGES ranges

OK = const(0)
BAD = const(1)  # not a confirmation: syntax, a missing or wrong field, unsorted ranges
OTHER_EPOCH = const(2)  # another epoch of this gateway (or none): nothing of this ring
OTHER_GATEWAY = const(3)  # names another gateway (cannot happen under the provisioned ACL)
TOO_LARGE = const(4)  # more brackets than MAX_RANGES ranges need: not parsed


def _ranges(seqs):
    # sorted, disjoint, not adjacent [first, last] pairs, 1 <= first <= last (as
    # protocols/wire/stored.py checks them)
    if type(seqs) is not list or not seqs:
        return False
    below = 0
    for r in seqs:
        if type(r) is not list or len(r) != 2:
            return False
        first, last = r
        if type(first) is not int or type(last) is not int or first < 1 or last < first or \
                (below and first <= below + 1):
            return False
        below = last
    return True


def check(msg, gw, ep):
    """``(code, seqs)`` of the confirmation ``msg`` (a buffer) for gateway ``gw`` and epoch
    ``ep`` (16 hex digits): ``seqs`` is its list of ``[first, last]`` when ``code`` is OK."""
    brackets = 0
    for c in msg:
        if c == 91 or c == 123:  # [ {
            brackets += 1
    if brackets > _MAX_BRACKETS:
        return TOO_LARGE, None
    try:
        o = json.loads(msg)
        seqs, v = o["seqs"], o["v"]
        if type(v) is not int or v != 1 or not _ranges(seqs) or type(o["gw"]) is not str:
            return BAD, None
    except (ValueError, KeyError, TypeError, IndexError):
        return BAD, None
    if o["gw"] != gw:
        return OTHER_GATEWAY, None
    if o.get("ep") != ep:  # absent: epoch 0, never a ring's
        return OTHER_EPOCH, None
    return OK, seqs


def confirm(ring, seqs):
    """Free the slots of ``ring`` (a fg.ring.Ring) holding a seq of ``seqs`` (sorted, disjoint
    ``[first, last]`` pairs), sent or not yet sent: 'D' on flash, free in RAM. Returns how
    many."""
    prio = ring.prio
    count = len(seqs)
    by_seg = {}
    for s in range(ring.segs):
        sq = ring.seq[s]
        base = s * SEG_SLOTS
        for j in range(SEG_SLOTS):
            if prio[base + j] == FREE:
                continue
            q = sq[j]
            lo, hi = 0, count  # binary search: the last range starting at or below q
            while lo < hi:
                mid = (lo + hi) >> 1
                if seqs[mid][0] <= q:
                    lo = mid + 1
                else:
                    hi = mid
            if lo and q <= seqs[lo - 1][1]:
                by_seg.setdefault(s, []).append(base + j)
    n = 0
    for s, items in by_seg.items():
        with open(ring.seg(s), "r+b") as f:
            for i in items:
                f.seek((i % SEG_SLOTS) * SLOT)
                f.write(b"D")
                if prio[i] < SENT:
                    ring.live -= 1
                prio[i] = FREE
                ring.depth -= 1
                n += 1
    return n


_COUNTER = ("stored", "stored_bad", "stored_other_epoch", "stored_bad", "stored_too_large")


def apply(up, msg):
    """The confirmation ``msg`` for the Uplink ``up``: free what it names of the ring's epoch;
    count it (uplink counters ``stored``, ``confirmed``, ``stored_bad``, ``stored_other_epoch``,
    ``stored_too_large``)."""
    code, seqs = check(msg, up.cfg.gw, up.ring.epoch_hex())
    c = up.counters
    key = _COUNTER[code]
    c[key] = c.get(key, 0) + 1
    if code == OK:
        n = confirm(up.ring, seqs)
        if n:
            c["confirmed"] = c.get("confirmed", 0) + n
