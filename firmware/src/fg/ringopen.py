# Opening the flash ring (fg/ring.py) at start-up: read or create its files, rebuild its index.
#
# Start-up code lives apart from the ring's run-time code so that fg/app.py can drop it from the
# heap once the ring is open (a few KB on a 100 KB heap).
#
# What is rebuilt: geometry, eviction counters and the epoch from ``meta`` (a ring without one,
# new or from before epochs, gets a new random epoch); the source table from ``src``
# (a last line cut by a power failure is dropped: no slot can refer to it, slots are written
# after their source line); and, slot by slot, which are held (not yet confirmed by the
# collector), their class and seq. Every held slot starts LIVE: whether it was sent before the
# reboot is not on flash, so it is sent again (the collector drops what it already has). The
# highest seq on flash, live or done, is the last one assigned. A slot whose CRC does not match
# (a write cut short) counts as free and is counted (``torn_slots``).

import os
import struct
from array import array

from fg.modbus import crc16
from fg.ring import (DONE, FMT, FREE, LIVE, MAGIC, MAGIC_V1, META, META_SIZE, SEG_SLOTS, SLOT,
                     crc, join)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _read_meta(ring):
    # (segments, evicted, last seq, epoch hi, epoch lo), or None; a v1 ring has epoch 0
    try:
        with open(join(ring.dir, "meta"), "rb") as f:
            data = f.read()
        size = META_SIZE if data[:4] == MAGIC else 32
        m = struct.unpack(META if size == META_SIZE else META[:-2], data[:size])
        if m[0] not in (MAGIC, MAGIC_V1) or m[1] != SLOT or m[2] != SEG_SLOTS or \
                crc16(data, size) != struct.unpack(">H", data[size:size + 2])[0]:
            raise ValueError
        hi, lo = (m[10], m[11]) if size == META_SIZE else (0, 0)
        return m[3], list(m[4:8]), m[8] << 32 | m[9], hi, lo
    except (OSError, ValueError):  # MicroPython's struct raises ValueError for short data
        return None


def _new_epoch(ring):
    # 63 random bits, never 0 (0 means "no epoch" on the wire)
    r = os.urandom(8)
    ring.epoch_hi = (r[0] & 0x7F) << 24 | r[1] << 16 | r[2] << 8 | r[3]
    ring.epoch_lo = r[4] << 24 | r[5] << 16 | r[6] << 8 | r[7]
    if ring.epoch_hi == 0 and ring.epoch_lo == 0:
        ring.epoch_lo = 1


def _load_sources(ring):
    path = join(ring.dir, "src")
    if not _exists(path):
        return
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines[-1]:
        ring.counters["src_torn"] = ring.counters.get("src_torn", 0) + 1
        with open(path + ".tmp", "wb") as f:
            for line in lines[:-1]:
                f.write(line + b"\n")
        os.rename(path + ".tmp", path)
    for line in lines[:-1]:
        key = line.decode()
        ring.index[key] = len(ring.sources)
        ring.sources.append(key)


def _scan(ring):
    buf = bytearray(SLOT)
    torn = 0
    for s in range(ring.segs):
        path = ring.seg(s)
        if not _exists(path):
            with open(path, "wb") as f:
                for _ in range(SEG_SLOTS):
                    f.write(buf)  # zeros, one slot at a time: no 4 KB buffer for it
        with open(path, "rb") as f:
            for j in range(SEG_SLOTS):
                if f.readinto(buf) != SLOT or buf[0] not in (LIVE, DONE):
                    continue
                v = struct.unpack(FMT, buf)
                if crc(buf) != v[12]:
                    torn += 1
                    continue
                seq = v[5] << 32 | v[6]
                if seq > ring.last_seq:
                    ring.last_seq = seq
                    ring.cursor = s * SEG_SLOTS + j + 1
                if buf[0] == LIVE:
                    ring.prio[s * SEG_SLOTS + j] = v[1] & 0x0F
                    ring.seq[s][j] = v[6]
                    ring.depth += 1
                    ring.live += 1
    if torn:
        ring.counters["torn_slots"] = ring.counters.get("torn_slots", 0) + torn
    ring.cursor %= ring.capacity


def _setup(ring, segs):
    ring.segs = segs
    ring.capacity = segs * SEG_SLOTS
    ring.prio = bytearray(ring.capacity)
    for i in range(ring.capacity):
        ring.prio[i] = FREE
    # the low 32 bits of each slot's seq, for ordering only; one small array per segment, so
    # that no large block of the heap is needed
    ring.seq = [array("I", range(SEG_SLOTS)) for _ in range(segs)]
    ring.depth = 0
    ring.live = 0
    ring.cursor = 0
    ring.sources = []
    ring.index = {}
    _load_sources(ring)
    _scan(ring)


def open_ring(ring, capacity_kb):
    """Open ``ring`` (a fg.ring.Ring) with room for ``capacity_kb`` KB of slots. A ring that
    exists keeps its geometry while records wait in it; an empty one takes the new size."""
    if not _exists(ring.dir):
        os.mkdir(ring.dir)
    wanted = max(1, capacity_kb * 1024 // (SEG_SLOTS * SLOT))
    meta = _read_meta(ring)
    segs = wanted
    if meta is not None:
        segs, ring.evicted, ring.last_seq, ring.epoch_hi, ring.epoch_lo = meta
    fresh = meta is None or (ring.epoch_hi == 0 and ring.epoch_lo == 0)
    if fresh:
        _new_epoch(ring)  # a new ring, or one from before epochs: written with the meta below
    _setup(ring, segs)
    if meta is not None and segs != wanted:
        if ring.depth:
            ring.counters["resize_deferred"] = 1
            return ring
        for s in range(ring.segs):  # nothing waits: the seq carries over through meta
            os.remove(ring.seg(s))
        _setup(ring, wanted)
    if fresh or segs != wanted:
        ring.write_meta()
    return ring
