# Hardware seam of the ESP32: UART + RS-485 transceiver, Wi-Fi, NTP, RTC, hardware watchdog.
#
# Everything board-specific of the firmware is here; fg/hw_unix.py is its twin for the
# MicroPython unix port, and the rest of the firmware cannot tell them apart.

import select
import time

import machine
import network

# MicroPython on the ESP32 counts time from 2000-01-01; the wire protocol from 1970 (spec
# "Encoding": ports whose epoch is 2000 add 946,684,800 s).
EPOCH_MS = 946684800000 if time.gmtime(0)[0] == 2000 else 0
_PARITY = {"N": None, "E": 0, "O": 1}


class UartPort:
    """A UART with an RS-485 transceiver; ``de`` (driver enable) is raised while sending when
    the board has no automatic direction control."""

    def __init__(self, u):
        self.uart = machine.UART(u["id"], baudrate=u["baud"], bits=8,
                                 parity=_PARITY[u.get("parity", "N")], stop=u.get("stopbits", 1),
                                 tx=u["tx"], rx=u["rx"], timeout=0, rxbuf=512)
        de = u.get("de")
        self.de = machine.Pin(de, machine.Pin.OUT, value=0) if de is not None else None
        self.poll = select.poll()
        self.poll.register(self.uart, select.POLLIN)

    def write(self, data):
        if self.de is not None:
            self.de.value(1)
        self.uart.write(data)
        self.uart.flush()  # returns when the last stop bit has left: release the line then
        if self.de is not None:
            self.de.value(0)

    def read(self):
        return self.uart.read()

    def wait(self, ms):
        return bool(self.poll.poll(ms))

    def close(self):
        self.uart.deinit()


class Hw:
    name = "esp32"

    def __init__(self, cfg):
        self.cfg = cfg
        self.wlan = network.WLAN(network.STA_IF)
        self.wdt = None
        self.wifi_at = time.ticks_ms()
        self.wifi_ms = 1000
        self.ntp_at = time.ticks_ms()
        self.synced = False
        self.log = print

    def start(self, log):
        self.log = log
        self.wlan.active(True)
        # From here on a hang (a stuck driver, a lost TLS peer) resets the board.
        self.wdt = machine.WDT(timeout=self.cfg.watchdog_s * 1000)
        log("hw: esp32, watchdog %d s" % self.cfg.watchdog_s)

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    def now_ms(self):
        return time.time_ns() // 1000000 + EPOCH_MS

    def network_up(self):
        return self.wlan.isconnected()

    def service(self):
        """Keep Wi-Fi up (jittered back-off up to 60 s) and the clock set (NTP)."""
        now = time.ticks_ms()
        wifi = self.cfg.wifi
        if wifi is not None and not self.wlan.isconnected():
            if time.ticks_diff(now, self.wifi_at) >= 0:
                self.log("wifi: connecting to %s" % wifi["ssid"])
                try:
                    self.wlan.disconnect()
                    self.wlan.connect(wifi["ssid"], wifi.get("password", ""))
                except OSError as e:
                    self.log("wifi: %s" % e)
                self.wifi_at = time.ticks_add(now, self.wifi_ms)
                self.wifi_ms = min(self.wifi_ms * 2, 60000)
            return
        self.wifi_ms = 1000
        if time.ticks_diff(now, self.ntp_at) >= 0:
            self._ntp(now)

    def _ntp(self, now):
        import ntptime

        ntp = self.cfg.ntp
        ntptime.host = ntp.get("host", "pool.ntp.org")
        try:
            ntptime.settime()
            self.synced = True
            again = ntp.get("interval_s", 3600) * 1000
            self.log("ntp: clock set from %s" % ntptime.host)
        except (OSError, OverflowError) as e:
            again = 60000
            self.log("ntp: %s: %s" % (ntptime.host, e))
        self.ntp_at = time.ticks_add(now, again)

    def boot_reason(self):
        cause = machine.reset_cause()
        names = {machine.PWRON_RESET: "power_on", machine.HARD_RESET: "hard_reset",
                 machine.WDT_RESET: "watchdog", machine.DEEPSLEEP_RESET: "deep_sleep",
                 machine.SOFT_RESET: "soft_reset"}
        return "boot:" + names.get(cause, "reset_%d" % cause)

    def set_clock(self, ms):
        t = time.gmtime((ms - EPOCH_MS) // 1000)
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))
        return True

    def port_name(self, bus):
        if bus["transport"] == "tcp":
            return "%s:%d" % (bus["host"], bus["port"])
        return "uart%d" % bus["uart"]["id"]

    def open_modbus(self, bus):
        if bus["transport"] == "uart":
            return UartPort(bus["uart"])
        if bus["transport"] == "tcp":
            from fg.hw_unix import TcpPort  # plain sockets: the same code serves both ports

            return TcpPort(bus["host"], bus["port"], bus["timeout_ms"] / 1000)
        raise OSError("transport %r is not available on the ESP32" % bus["transport"])

    def disk_free(self, path):
        import os

        st = os.statvfs(path)
        return st[4] * st[1]

    def reset(self):
        machine.reset()
