# Hardware seam of the MicroPython unix port: the firmware's logic runs unchanged on a PC.
#
# The RS-485 line is the Modbus simulator's (`firegate sim modbus --rtu` prints a pty path;
# `--tcp` a host:port): config.json says `"transport": "pty", "path": ...` or `"transport":
# "tcp", "host": ..., "port": ...`. The network is the host's, always up; the clock is the
# host's (NTP is the host's business); there is no hardware watchdog (feed() does nothing: a
# hung process is the test's or the supervisor's to kill).

import select
import socket
import time


class PtyPort:
    """A pty (or any tty) opened as a file. VMIN=0/VTIME=0 make read() return what has arrived
    at once, so it never blocks; select.poll waits for data."""

    def __init__(self, path):
        import termios

        self.f = open(path, "r+b")
        fd = self.f.fileno()
        termios.setraw(fd)
        attr = termios.tcgetattr(fd)
        attr[6][6] = 0  # VMIN
        attr[6][5] = 0  # VTIME
        termios.tcsetattr(fd, termios.TCSANOW, attr)
        self.poll = select.poll()
        self.poll.register(self.f, select.POLLIN)

    def write(self, data):
        self.f.write(data)

    def read(self):
        data = self.f.read(256)
        return data or None

    def wait(self, ms):
        return bool(self.poll.poll(ms))

    def close(self):
        self.f.close()


class TcpPort:
    """A Modbus TCP connection; read() returns b"" when the server closed it."""

    def __init__(self, host, port, timeout_s):
        self.s = socket.socket()
        self.s.settimeout(timeout_s)
        self.s.connect(socket.getaddrinfo(host, port)[0][-1])
        self.s.setsockopt(6, 1, 1)  # TCP_NODELAY: a request is one small write
        self.s.setblocking(False)
        self.poll = select.poll()
        self.poll.register(self.s, select.POLLIN)

    def write(self, data):
        self.s.setblocking(True)
        try:
            self.s.write(data)
        finally:
            self.s.setblocking(False)

    def read(self):
        return self.s.read(256)

    def wait(self, ms):
        return bool(self.poll.poll(ms))

    def close(self):
        self.s.close()


class Hw:
    name = "unix"

    def __init__(self, cfg):
        self.cfg = cfg

    def start(self, log):
        log("hw: unix port, no watchdog, host network and clock")

    def now_ms(self):
        return time.time_ns() // 1000000

    def network_up(self):
        return True

    def service(self):
        """Wi-Fi, NTP and the like: nothing to do on a PC."""

    def feed(self):
        """The watchdog: none on the unix port."""

    def boot_reason(self):
        return "boot"

    def set_clock(self, ms):
        return False

    def port_name(self, bus):
        if bus["transport"] == "tcp":
            return "%s:%d" % (bus["host"], bus["port"])
        return bus["path"]

    def open_modbus(self, bus):
        if bus["transport"] == "tcp":
            return TcpPort(bus["host"], bus["port"], bus["timeout_ms"] / 1000)
        if bus["transport"] == "pty":
            return PtyPort(bus["path"])
        raise OSError("transport %r needs an ESP32" % bus["transport"])

    def disk_free(self, path):
        import os

        st = os.statvfs(path)
        return st[4] * st[1]

    def reset(self):
        raise SystemExit(3)
