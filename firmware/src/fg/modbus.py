# Modbus master of the firmware: function 1/2/3/4 reads over RTU (CRC-16) or TCP (MBAP framing).
#
# There is no pymodbus on MicroPython; this is the small part of the protocol the firmware needs.
# The port is the hardware seam (fg/hw_esp32.py: a UART with an RS-485 driver; fg/hw_unix.py: a
# pty or a TCP socket), with four methods: write(data), read() -> bytes or None without
# blocking, wait(ms) -> True when something may be read, close(). One request at a time,
# strictly: RS-485 is half duplex with one master.
#
# References: Modbus Application Protocol V1.1b3 (MAP) and Modbus over Serial Line V1.02 (MSL).

import struct
import time

from micropython import const

# What Master.read() returns first
OK = const(0)
NO_ANSWER = const(1)
EXCEPTION = const(2)
BAD_REPLY = const(3)
LINK_LOST = const(4)

def _table():
    # MSL §6.2.2: CRC-16, reflected polynomial 0xA001, initial value 0xFFFF; a 512-byte table
    # makes a reply check ~8x faster than the bit loop on an ESP32.
    from array import array

    t = array("H", bytes(512))
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        t[i] = c
    return t


_CRC = _table()


def crc16(data, end=-1):
    """CRC-16 of ``data[:end]`` (all of it by default); sent low byte first (MSL §2.5.1.2)."""
    t = _CRC
    crc = 0xFFFF
    n = len(data) if end < 0 else end
    for i in range(n):
        crc = (crc >> 8) ^ t[(crc ^ data[i]) & 0xFF]
    return crc


def _data(buf, at, fn, count):
    # Functions 1/2 (MAP §6.1/§6.2) pack bits eight to a byte, the last one padded with zeros;
    # they stay packed (bytes; fg/contacts.py bit() reads one): a tuple of 0/1 ints would cost
    # a word of heap a bit. Functions 3/4 carry two bytes a register.
    if fn < 3:
        return bytes(buf[at:at + (count + 7) // 8])
    return struct.unpack(">%dH" % count, bytes(buf[at:at + 2 * count]))


def rtu_request(unit, fn, start, count):
    """An RTU read request: unit, function, start address, quantity, CRC (MAP §6.1-§6.4)."""
    frame = bytearray(struct.pack(">BBHH", unit, fn, start, count))
    crc = crc16(frame)
    frame.append(crc & 0xFF)
    frame.append(crc >> 8)
    return frame


def rtu_check(buf, unit, fn, count):
    """Judge a (partial) RTU reply: (None, None) while more bytes are needed, else a result
    tuple as Master.read() returns it."""
    n = len(buf)
    if n < 3:
        return None, None
    if buf[0] != unit or buf[1] & 0x7F != fn:
        return BAD_REPLY, "reply from unit %d function %d to a request to unit %d function %d" % (
            buf[0], buf[1] & 0x7F, unit, fn)
    need = 5 if buf[1] & 0x80 else 5 + buf[2]
    if n < need:
        return None, None
    if crc16(buf, need - 2) != buf[need - 2] | buf[need - 1] << 8:
        return BAD_REPLY, "bad CRC"
    if buf[1] & 0x80:
        return EXCEPTION, buf[2]
    if buf[2] != ((count + 7) // 8 if fn < 3 else 2 * count):
        return BAD_REPLY, "asked for %d %s, got %d bytes" % (
            count, "bits" if fn < 3 else "registers", buf[2])
    return OK, _data(buf, 3, fn, count)


def tcp_request(tid, unit, fn, start, count):
    """A Modbus TCP read request: MBAP header (transaction, protocol 0, length, unit) + PDU."""
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, fn, start, count)


def tcp_check(buf, tid, unit, fn, count):
    """Like rtu_check for an MBAP reply; a reply to an older transaction is skipped (its bytes
    consumed) by returning the number of bytes to drop as ("skip", n)."""
    if len(buf) < 9:
        return None, None
    rtid, proto, length = struct.unpack(">HHH", bytes(buf[:6]))
    need = 6 + length
    if len(buf) < need:
        return None, None
    if rtid != tid:
        return "skip", need
    if proto != 0 or buf[6] != unit or buf[7] & 0x7F != fn:
        return BAD_REPLY, "reply does not match the request"
    if buf[7] & 0x80:
        return EXCEPTION, buf[8]
    n = (count + 7) // 8 if fn < 3 else 2 * count
    if buf[8] != n or length != 3 + n:
        return BAD_REPLY, "asked for %d %s, got %d bytes" % (
            count, "bits" if fn < 3 else "registers", buf[8])
    return OK, _data(buf, 9, fn, count)


class Master:
    """One bus: ``read(unit, fn, start, count)`` -> (kind, value).

    kind OK: value is a tuple of registers (functions 3, 4) or the packed bytes of the bits
    (functions 1, 2; fg/contacts.py reads them); EXCEPTION: the exception code; NO_ANSWER and
    BAD_REPLY: a text for people; LINK_LOST: the port failed (reopen it). Counters by reason go
    to ``counters`` (a dict), the names the edge agent uses: reads, timeout, bad_reply,
    exception_<code>, link_lost, stale_bytes.
    """

    def __init__(self, port, tcp, timeout_ms, gap_ms, counters):
        self.port = port
        self.tcp = tcp
        self.timeout_ms = timeout_ms
        self.gap_ms = gap_ms
        self.counters = counters
        self.tid = 0

    def _count(self, reason, n=1):
        c = self.counters
        c[reason] = c.get(reason, 0) + n

    def read(self, unit, fn, start, count):
        port = self.port
        try:
            stale = port.read()  # a late reply to an earlier, timed-out request
            while stale:
                self._count("stale_bytes", len(stale))
                stale = port.read()
            if self.tcp:
                self.tid = self.tid % 65535 + 1
                port.write(tcp_request(self.tid, unit, fn, start, count))
            else:
                port.write(rtu_request(unit, fn, start, count))
            result = self._reply(unit, fn, count)
        except OSError as e:
            self._count("link_lost")
            return LINK_LOST, "port error %s" % e
        if self.gap_ms:
            time.sleep_ms(self.gap_ms)  # MSL §2.5.1.1: at least 3.5 characters of silence
        kind = result[0]
        if kind == OK:
            self._count("reads")
        elif kind == EXCEPTION:
            self._count("exception_%d" % result[1])
        elif kind == NO_ANSWER:
            self._count("timeout")
        elif kind == BAD_REPLY:
            self._count("bad_reply")
        return result

    def _reply(self, unit, fn, count):
        port = self.port
        buf = bytearray()
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                if buf:
                    return BAD_REPLY, "incomplete reply (%d bytes)" % len(buf)
                return NO_ANSWER, "no answer from unit %d within %g s" % (
                    unit, self.timeout_ms / 1000)
            if not port.wait(left):
                continue
            data = port.read()
            if data is None:
                continue
            if data == b"" and self.tcp:
                return LINK_LOST, "connection closed by the Modbus TCP server"
            buf.extend(data)
            while True:
                if self.tcp:
                    kind, value = tcp_check(buf, self.tid, unit, fn, count)
                    if kind == "skip":
                        buf = buf[value:]
                        continue
                else:
                    kind, value = rtu_check(buf, unit, fn, count)
                break
            if kind is not None:
                return kind, value
