# The firmware's outbox: a bounded ring of fixed-size record slots on flash that survives reboot.
#
# Rules (docs/firmware.md "Ring buffer", the same as the edge outbox in docs/outbox.md):
# * a record is on flash, with its seq, before anything else happens to it;
# * seqs strictly increase across reboots: each slot keeps its seq after it is confirmed (only
#   its state byte changes), so the highest seq on flash is the last one assigned, and only a
#   newer record ever overwrites a slot;
# * an append is all or nothing: slots are written first, then listed in RAM; a failed write
#   (OSError: flash full or failing) puts RAM back as flash holds it and gives its seqs to the
#   next records, each in the slot it may already hold (``retry``): no gap, no seq with two
#   contents (docs/firmware.md "Flash write failures");
# * when every slot is taken, the oldest record of the least urgent class goes: measurements
#   oldest-first, alarms last; each eviction is counted per class in ``meta``, which survives;
# * delivered means stored (docs/wire-protocol.md "Stored"): the broker's PUBACK only marks a
#   record SENT (``ack()``, in RAM); a slot is freed (fg/stored.py ``confirm()``) when the
#   collector's ``stored`` message of this ring's epoch names its seq. A SENT record not
#   confirmed within the confirm timeout is pending again (``age()``), and so is every SENT
#   record after a reboot: flash knows only LIVE and DONE, and the collector drops what it
#   already has.
#
# States of a slot, in RAM (``prio``, one byte per slot; flash holds only 'L' or 'D'):
#   FREE           0xFF                      nothing held (flash: 'D', zeros, or torn)
#   LIVE           class (0-3)               waiting to be sent (flash: 'L')
#   SENT           0x80 | gen << 4 | class   PUBACKed in generation ``gen`` (flash: 'L')
# ``gen`` is a 3-bit clock the uplink advances every confirm_timeout / AGE_STEPS (``age()``);
# a SENT slot AGE_STEPS + 1 generations old is LIVE again, so it is resent between 1 and
# 1.25 timeouts after its PUBACK. The send time costs no RAM beyond the class byte it shares.
#
# Files in ``directory``: ``meta`` (geometry, eviction counters, epoch; replaced by rename, so a power
# cut leaves the old or the new one), ``src`` (the source table: one "bus\tid" line per source,
# append only; slots refer to a line by number) and segments ``s0``, ``s1``... of
# SEG_SLOTS slots each. Segments of one flash block (4 KiB) keep littlefs fast: a write inside a
# file rewrites the block it touches (copy on write), so small files mean one block per write.

import os
import struct

from micropython import const

from fg.modbus import crc16

SLOT = const(40)
# state, kind<<4|prio, code, flags, src, seq hi/lo, rt hi/lo, value, limit, aux, crc
FMT = ">BBBBHHIHIddIH"
FREE = const(0xFF)  # in ``prio``: no record held in this slot
LIVE = const(0x4C)  # 'L' on flash: held (waiting to be sent, or for its confirmation)
DONE = const(0x44)  # 'D' on flash: confirmed or evicted; its seq still counts
SENT = const(0x80)  # in ``prio``: sent, waiting for the collector's confirmation (see above)
AGE_STEPS = const(4)  # generations per confirm timeout: resent after 1 to 1.25 timeouts
SEG_SLOTS = const(102)  # 102 x 40 = 4080 bytes: one 4 KiB flash block
# magic, slot size, slots per segment, segments, evicted x4, seq base, epoch hi/lo
META = ">4sHHH4IHIII"
META_SIZE = const(40)
MAGIC = b"FGR2"
MAGIC_V1 = b"FGR1"  # a ring from before epochs: 32 bytes, no epoch; it gets one when opened


def crc(slot):
    # the state byte is left out: a confirmation changes it in place (fg/stored.py)
    return crc16(memoryview(slot)[1:SLOT - 2])


def join(path, name):
    return path + "/" + name


class Ring:
    """``append(records) -> seqs``, ``pending(n)`` -> slots to send, ``read(slots)``,
    ``ack(slots)`` (PUBACK: sent), ``age()`` (the confirm timeout's clock); ``depth`` (held),
    ``live`` (held and not sent), ``last_seq``, ``evicted`` (per class), ``capacity``. Opened
    (files read or created, the index built) by ``fg.ringopen.open_ring``. Freeing what the
    collector confirmed is ``fg.stored.confirm`` and the resend command's part
    ``fg.cmd.requeue``: code loaded only when it is needed, not resident with the ring."""

    def __init__(self, directory, counters):
        # filled by fg/ringopen.py (start-up code, dropped from memory after use)
        self.dir = directory
        self.counters = counters
        self.evicted = [0, 0, 0, 0]
        self.last_seq = 0
        # The ring's epoch (docs/wire-protocol.md "Epochs"): 63 random bits made with the
        # ring, kept as two 32-bit halves and sent as 16 hex digits in every batch and health.
        self.epoch_hi = 0
        self.epoch_lo = 0
        self.gen = 0  # the generation SENT slots are marked with (see age())
        # slots a failed append's writes reached, for the seqs after last_seq (see _undo)
        self.retry = []

    def epoch_hex(self):
        # four 16-bit parts: each a small int on every port (%x of a long int is not)
        hi, lo = self.epoch_hi, self.epoch_lo
        return "%04x%04x%04x%04x" % (hi >> 16, hi & 0xFFFF, lo >> 16, lo & 0xFFFF)

    def write_meta(self, seq=-1):
        # ``seq``: the seq to carry over (default last_seq); append writes the one before its
        # records, which are not on flash yet (a floor: opening takes the highest on flash)
        if seq < 0:
            seq = self.last_seq
        data = struct.pack(META, MAGIC, SLOT, SEG_SLOTS, self.segs, *self.evicted,
                           seq >> 32, seq & 0xFFFFFFFF,
                           self.epoch_hi, self.epoch_lo)
        tmp = join(self.dir, "meta.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.write(struct.pack(">H", crc16(data)))
        os.rename(tmp, join(self.dir, "meta"))

    def source(self, i):
        """The source key ("bus\tid") of source table line ``i``."""
        return self.sources[i]

    def _source_index(self, key):
        i = self.index.get(key)
        if i is None:
            i = len(self.sources)
            with open(join(self.dir, "src"), "ab") as f:
                f.write(key.encode() + b"\n")
            self.index[key] = i
            self.sources.append(key)
        return i

    def seg(self, n):
        return join(self.dir, "s%d" % n)

    # -- write --------------------------------------------------------------------------------

    def oldest(self, want):
        # the held slot (live or sent) with the lowest seq among those whose class is in
        # ``want``, or -1
        prio = self.prio
        best = -1
        low = 0
        for s in range(self.segs):
            sq = self.seq[s]
            base = s * SEG_SLOTS
            for j in range(SEG_SLOTS):
                v = prio[base + j]
                if v != FREE and v & 3 in want and (best < 0 or sq[j] < low):
                    best = base + j
                    low = sq[j]
        return best

    def _victim(self):
        # the oldest record of the least urgent class present (spec "Priorities")
        for p in (3, 2, 1, 0):
            best = self.oldest((p,))
            if best >= 0:
                return best
        raise OSError(28)  # unreachable: the ring is full of live records

    def _free_slot(self):
        prio, n = self.prio, self.capacity
        i = self.cursor
        for _ in range(n):
            if prio[i] == FREE:
                self.cursor = (i + 1) % n
                return i, -1
            i = (i + 1) % n
        v = self._victim()
        return v, prio[v]  # a victim may be sent and unconfirmed: still only stored here

    def append(self, records):
        """Store records (tuples of fg/records.py); returns their seqs. Evicts when full.
        All or nothing: if a flash write fails (OSError: flash full or failing), the RAM index
        is put back as flash holds it, the seqs are given again to the next records, and the
        error is raised (docs/firmware.md "Flash write failures")."""
        if not records:
            return []
        retry = self.retry
        saved = (self.last_seq, self.cursor, self.depth, self.live, self.evicted[:])
        undo = []  # (slot, prio, seq) as they were before this call
        out = []  # (slot, slot bytes) in seq order
        seqs = []
        evicted = False
        tried = 0  # records whose slot a write reached (in seq order)
        try:
            for rec in records:
                n = len(seqs)
                if n < len(retry) and self.prio[retry[n]] == FREE:
                    # a failed write may have left this seq in that slot: it goes there again
                    i, victim = retry[n], -1
                else:
                    i, victim = self._free_slot()
                if victim >= 0:
                    self.evicted[victim & 3] += 1
                    self.depth -= 1
                    if victim < SENT:
                        self.live -= 1
                    evicted = True
                sq = self.seq[i // SEG_SLOTS]
                undo.append((i, self.prio[i], sq[i % SEG_SLOTS]))
                self.last_seq += 1
                seq = self.last_seq
                seqs.append(seq)
                kind, prio, code, flags, src, _, rt, value, limit, aux = rec
                data = bytearray(struct.pack(
                    FMT, LIVE, kind << 4 | prio, code, flags, self._source_index(src),
                    seq >> 32, seq & 0xFFFFFFFF, rt >> 32, rt & 0xFFFFFFFF,
                    value, limit, aux, 0))
                c = crc(data)
                data[SLOT - 2] = c >> 8
                data[SLOT - 1] = c & 0xFF
                out.append((i, data))
                self.prio[i] = prio  # taken from here on: the next record may evict it (oldest)
                sq[i % SEG_SLOTS] = seq & 0xFFFFFFFF
                self.depth += 1
                self.live += 1
            if evicted:
                # count first: a cut after this over-counts, never hides one
                self.write_meta(saved[0])
            # in seq order, so that whatever a failure leaves on flash is a run of the first seqs
            f = None
            seg = -1
            try:
                for i, data in out:
                    if i // SEG_SLOTS != seg:
                        if f:
                            f.close()
                            f = None
                        seg = i // SEG_SLOTS
                        f = open(self.seg(seg), "r+b")
                    tried += 1
                    f.seek((i % SEG_SLOTS) * SLOT)
                    f.write(data)
            finally:
                if f:
                    f.close()
        except BaseException:
            self._undo(saved, undo, [i for i, _ in out[:tried]])
            raise
        self.retry = retry[len(records):] if retry else retry
        return seqs

    def _undo(self, saved, undo, tried):
        # An append failed: RAM as flash holds it. Its seqs are assigned again; a slot a write
        # reached may hold one of them (seq last_seq + 1 + k for the k-th of ``tried``), so the
        # same seq goes to the same slot next time (``retry``): a seq never names two different
        # records on flash, and whatever is found there after a reboot is a run of the next
        # seqs, no gap. A record such a slot held before (a victim) may be overwritten: it is
        # evicted, as it would have been.
        self.last_seq, self.cursor, self.depth, self.live, self.evicted = saved
        prio = self.prio
        for i, p, q in reversed(undo):
            prio[i] = p
            self.seq[i // SEG_SLOTS][i % SEG_SLOTS] = q
        for i in tried:
            v = prio[i]
            if v != FREE:
                self.evicted[v & 3] += 1
                self.depth -= 1
                if v < SENT:
                    self.live -= 1
                prio[i] = FREE
        if tried:
            self.retry = tried + self.retry[len(tried):]

    # -- read and acknowledge -----------------------------------------------------------------

    def pending(self, limit):
        """Up to ``limit`` live slots, most urgent class first, oldest first within a class."""
        prio = self.prio
        out = []
        for p in range(4):
            want = limit - len(out)
            if want <= 0:
                break
            best = []  # (seq, slot), sorted, at most ``want``
            for seg in range(self.segs):
                sq = self.seq[seg]
                base = seg * SEG_SLOTS
                for j in range(SEG_SLOTS):
                    if prio[base + j] != p:
                        continue
                    q = sq[j]
                    if len(best) == want:
                        if q >= best[-1][0]:
                            continue
                        best.pop()
                    k = len(best)
                    while k and best[k - 1][0] > q:
                        k -= 1
                    best.insert(k, (q, base + j))
            out.extend(i for _, i in best)
        return out

    def read(self, slots):
        """Yield the record tuples in ``slots`` (source as its key), in the order given; one at
        a time, so that a batch never holds all its records in memory."""
        buf = bytearray(SLOT)
        f = None
        seg = -1
        try:
            for i in slots:
                if i // SEG_SLOTS != seg:
                    if f:
                        f.close()
                    seg = i // SEG_SLOTS
                    f = open(self.seg(seg), "rb")
                f.seek((i % SEG_SLOTS) * SLOT)
                f.readinto(buf)
                v = struct.unpack(FMT, buf)
                yield (v[1] >> 4, v[1] & 0x0F, v[2], v[3], self.sources[v[4]],
                       v[5] << 32 | v[6], v[7] << 32 | v[8], v[9], v[10], v[11])
        finally:
            if f:
                f.close()

    def ack(self, slots, done=False):
        """The broker acknowledged these slots' records: they are SENT, still held, until the
        collector confirms them (fg/stored.py) or the confirm timeout makes them pending again
        (``age``). Nothing is written: on flash a sent record is live, and resent after a
        reboot. With ``done`` (``mqtt.delete_on = "puback"``: no collector confirms) they are
        freed at once, 'D' on flash, as before confirmations existed."""
        prio = self.prio
        if not done:
            mark = SENT | self.gen << 4
            for i in slots:
                v = prio[i]
                if v < SENT:
                    prio[i] = mark | v
                    self.live -= 1
            return
        by_seg = {}
        for i in slots:
            by_seg.setdefault(i // SEG_SLOTS, []).append(i)
        for s, items in by_seg.items():
            with open(self.seg(s), "r+b") as f:
                for i in items:
                    f.seek((i % SEG_SLOTS) * SLOT)
                    f.write(b"D")
                    if prio[i] != FREE:
                        prio[i] = FREE
                        self.depth -= 1
                        self.live -= 1

    def age(self):
        """One step of the confirm timeout's clock (the uplink calls it every timeout /
        AGE_STEPS): the SENT slots AGE_STEPS + 1 generations old are pending again. Returns
        how many."""
        self.gen = (self.gen + 1) & 7
        if self.live == self.depth:
            return 0  # nothing sent and unconfirmed
        old = SENT | ((self.gen - AGE_STEPS - 1) & 7) << 4
        prio = self.prio
        n = 0
        for i in range(self.capacity):
            if prio[i] & 0xFC == old:  # FREE (0xFF) never matches: its bits 2-3 are set
                prio[i] &= 3
                n += 1
        self.live += n
        return n
