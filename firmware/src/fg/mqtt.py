# A minimal MQTT 3.1.1 client for MicroPython with the API of micropython-lib's umqtt.simple.
#
# Written for firegate from the MQTT 3.1.1 specification (OASIS, 29 October 2014); no code of
# umqtt.simple was copied (firmware/LICENSES.md says why it is not vendored). It lives in the
# fg package, not at umqtt/simple.py: ESP32 images freeze upstream umqtt.simple, and frozen
# modules come first on sys.path, so a /lib/umqtt/simple.py would never be imported there.
# What it adds to the umqtt.simple API:
#
# * TCP_NODELAY on the socket before TLS (umqtt writes a packet in several small writes; with
#   Nagle + delayed ACK a QoS 1 publish waits ~40-200 ms for each PUBACK);
# * a timeout on every blocking read and write (``timeout`` seconds), so a dead link raises
#   OSError instead of hanging the firmware until the watchdog bites;
# * ``ssl`` is an ``ssl.SSLContext`` (MicroPython >= 1.23), wrapped with the server name so the
#   certificate's host name is checked;
# * a bounded receive: with ``rx`` (a memoryview) set, an incoming payload is read into it and
#   handed to the callback as a slice of it. The slice is overwritten by the next payload,
#   unless the callback returns True: then ``rx`` moves past it, and the owner of the buffer
#   sets ``rx`` back when it has used what it kept. A payload larger than what is left of
#   ``rx`` is read and dropped in pieces, acknowledged all the same, and the callback gets None
#   for it. A message from the broker never costs more heap than its topic.
#
# Only what firegate needs: QoS 0 and 1 (no QoS 2), one message in flight.

import socket
import struct

from time import ticks_diff, ticks_ms

IPPROTO_TCP = 6  # MicroPython's socket module has no constants for these; lwIP uses the same
TCP_NODELAY = 1


class MQTTException(Exception):
    """A protocol error; ``args[0]`` is the CONNACK return code (1-5, §3.2.2.3) or a reason."""


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, timeout=10):
        self.client_id = client_id
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.timeout = timeout
        self.sock = None
        self._raw = None
        self.cb = None
        self.rx = None
        self.pid = 0
        self.lw_topic = None
        self.lw_msg = None
        self.lw_qos = 0
        self.lw_retain = False
        self.last_io = 0
        self.last_pong = 0

    # -- bytes on the socket ------------------------------------------------------------------

    def _read(self, n):
        data = self.sock.read(n)
        if not data:
            raise OSError(-1)  # the broker closed the connection
        while len(data) < n:  # TLS may return short reads
            more = self.sock.read(n - len(data))
            if not more:
                raise OSError(-1)
            data += more
        return data

    def _readinto(self, mv):
        got = 0
        n = len(mv)
        while got < n:
            k = self.sock.readinto(mv[got:])
            if not k:
                raise OSError(-1)
            got += k

    def _write(self, data):
        self.sock.write(data)
        self.last_io = ticks_ms()

    def _send_str(self, s):
        if isinstance(s, str):
            s = s.encode()
        self._write(struct.pack("!H", len(s)))
        self._write(s)

    def _recv_len(self):
        # Remaining length: 1-4 bytes, 7 bits each, least significant first (§2.2.3)
        n = 0
        sh = 0
        while True:
            b = self._read(1)[0]
            n |= (b & 0x7F) << sh
            if not b & 0x80:
                return n
            sh += 7
            if sh > 21:
                raise MQTTException("bad_length")

    @staticmethod
    def _header(first, length):
        out = bytearray((first,))
        while True:
            b = length & 0x7F
            length >>= 7
            out.append(b | 0x80 if length else b)
            if not length:
                return out

    def _blocking(self):
        # setblocking(True) clears the socket's timeout: put it back
        self.sock.setblocking(True)
        self._raw.settimeout(self.timeout)

    def set_timeout(self, seconds):
        """Timeout of later blocking operations (the TLS socket has no settimeout of its own:
        the underlying socket's applies)."""
        self.timeout = seconds
        if self._raw is not None:
            self._raw.settimeout(seconds)

    # -- API ----------------------------------------------------------------------------------

    def set_callback(self, f):
        """``f(topic, msg)`` is called for each message on a subscribed topic."""
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        """Registered with the next ``connect()`` (§3.1.2.5)."""
        assert 0 <= qos <= 1
        assert topic
        self.lw_topic = topic
        self.lw_msg = msg
        self.lw_qos = qos
        self.lw_retain = retain

    def connect(self, clean_session=True):
        """Open TCP (+TLS), send CONNECT, wait for CONNACK. Returns the session-present flag;
        raises MQTTException(code) when the broker refuses, OSError on network errors."""
        addr = socket.getaddrinfo(self.server, self.port)[0][-1]
        raw = socket.socket()
        self._raw = raw
        self.sock = raw
        try:
            raw.settimeout(self.timeout)
            raw.connect(addr)
            raw.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
            if self.ssl:
                self.sock = self.ssl.wrap_socket(raw, server_hostname=self.server)
            flags = 0x02 if clean_session else 0
            size = 10 + 2 + len(self.client_id)
            if self.user is not None:
                flags |= 0x80
                size += 2 + len(self.user)
                if self.pswd is not None:
                    flags |= 0x40
                    size += 2 + len(self.pswd)
            if self.lw_topic:
                flags |= 0x04 | (self.lw_qos & 1) << 3 | (0x20 if self.lw_retain else 0)
                size += 2 + len(self.lw_topic) + 2 + len(self.lw_msg)
            # §3.1.2: protocol name "MQTT", level 4 (3.1.1), connect flags, keep alive
            pkt = self._header(0x10, size)
            pkt += b"\x00\x04MQTT\x04"
            pkt += struct.pack("!BH", flags, self.keepalive)
            self._write(pkt)
            self._send_str(self.client_id)
            if self.lw_topic:
                self._send_str(self.lw_topic)
                self._send_str(self.lw_msg)
            if self.user is not None:
                self._send_str(self.user)
                if self.pswd is not None:
                    self._send_str(self.pswd)
            resp = self._read(4)
            if resp[0] != 0x20 or resp[1] != 0x02:
                raise MQTTException("bad_connack")
            if resp[3] != 0:
                raise MQTTException(resp[3])
            return resp[2] & 1
        except Exception:
            self.close()
            raise

    def close(self):
        """Drop the connection without DISCONNECT (the broker then publishes the will)."""
        sock, self.sock, self._raw = self.sock, None, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def disconnect(self):
        """Clean DISCONNECT (§3.14): the broker discards the will."""
        try:
            self._write(b"\xe0\x00")
        finally:
            self.close()

    def ping(self):
        self._write(b"\xc0\x00")

    def publish(self, topic, msg, retain=False, qos=0):
        """Send a PUBLISH; with qos=1 return only after its PUBACK (§4.3.2), dispatching any
        message that arrives meanwhile. Raises OSError on timeout or a lost connection."""
        if isinstance(topic, str):
            topic = topic.encode()
        size = 2 + len(topic) + len(msg)
        if qos > 0:
            size += 2
        # fixed header, topic and packet id in one write, the payload in a second: over TLS
        # each write is a record of its own
        pkt = self._header(0x30 | qos << 1 | retain, size)
        pkt += struct.pack("!H", len(topic))
        pkt += topic
        pid = 0
        if qos > 0:
            self.pid = self.pid % 65535 + 1  # packet identifiers are 1..65535 (§2.3.1)
            pid = self.pid
            pkt += struct.pack("!H", pid)
        self._write(pkt)
        self._write(msg)
        if qos == 1:
            while True:
                op = self.wait_msg()
                if op == 0x40:
                    sz = self._read(1)
                    if sz != b"\x02":
                        raise MQTTException("bad_puback")
                    rcv = struct.unpack("!H", self._read(2))[0]
                    if rcv == pid:
                        return pid
                    # a PUBACK for an earlier packet id (after a timeout): ignore it
                elif op not in (0, 0xD0):
                    self._skip()
        elif qos == 2:
            raise MQTTException("qos2_unsupported")
        return 0

    def subscribe(self, topic, qos=0):
        """SUBSCRIBE one topic and wait for its SUBACK; a refused subscription raises."""
        if isinstance(topic, str):
            topic = topic.encode()
        self.pid = self.pid % 65535 + 1
        pkt = self._header(0x82, 2 + 2 + len(topic) + 1)
        pkt += struct.pack("!H", self.pid)
        self._write(pkt)
        self._send_str(topic)
        self._write(bytes((qos,)))
        while True:
            op = self.wait_msg()
            if op == 0x90:
                resp = self._read(4)
                if resp[0] != 3 or struct.unpack("!H", resp[1:3])[0] != self.pid:
                    raise MQTTException("bad_suback")
                if resp[3] == 0x80:
                    raise MQTTException("subscribe_refused")
                return
            if op not in (0, 0xD0):
                self._skip()

    def wait_msg(self):
        """Read one packet. A PUBLISH goes to the callback (and gets its PUBACK) and 0 is
        returned (with ``rx``, its payload as described above); PINGRESP returns 0xD0; for
        other packets the first byte is returned with the rest unread; None when nothing is
        waiting on a non-blocking socket."""
        res = self.sock.read(1)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)
        self._blocking()
        op = res[0]
        if op == 0xD0:  # PINGRESP
            if self._read(1) != b"\x00":
                raise MQTTException("bad_pingresp")
            self.last_pong = ticks_ms()
            return 0xD0
        if op & 0xF0 != 0x30:
            return op & 0xF0
        sz = self._recv_len()
        tlen = struct.unpack("!H", self._read(2))[0]
        topic = self._read(tlen)
        sz -= tlen + 2
        pid = 0
        if op & 6:
            pid = struct.unpack("!H", self._read(2))[0]
            sz -= 2
        rx = self.rx
        if rx is None:
            msg = self._read(sz) if sz else b""
        elif sz <= len(rx):
            msg = rx[:sz]
            self._readinto(msg)
        else:
            msg = None  # too large: read through, a piece at a time
            while sz:
                k = min(sz, len(rx))
                self._readinto(rx[:k])
                sz -= k
        if op & 6 == 2:
            self._write(b"\x40\x02" + struct.pack("!H", pid))
        elif op & 6 == 4:
            raise MQTTException("qos2_unsupported")
        if self.cb is not None and self.cb(topic, msg) and rx is not None and msg is not None:
            self.rx = rx[sz:]  # kept by the callback: the next payload goes after it
        return 0

    def check_msg(self):
        """Handle at most one waiting packet without blocking; returns like wait_msg(), with
        the body of an unexpected packet (a late PUBACK, say) read and dropped."""
        self.sock.setblocking(False)
        try:
            op = self.wait_msg()
        finally:
            if self.sock is not None:
                self._blocking()
        if op not in (None, 0, 0xD0):
            self._skip()
        return op

    def _skip(self):
        # the body of a packet this client does not expect here
        n = self._recv_len()
        if n:
            self._read(n)

    def idle_ms(self):
        """Milliseconds since the last packet was sent (for keep-alive pings)."""
        return ticks_diff(ticks_ms(), self.last_io)
