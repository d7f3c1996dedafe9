# The MQTT side: connect with back-off, last will, status, batches from the ring, health, commands.
#
# Topics and payloads are those of docs/wire-protocol.md: records, status (retained, and the
# last will), health, cmd (subscribed) and cmd/ack, all QoS 1. A batch is published and its
# PUBACK awaited before the next one (one message in flight): only then are its slots freed in
# the ring, so a record the broker has not acknowledged survives any reboot and is sent again
# (the collector drops the duplicate by (gateway, seq)).

import gc
import os
import time

from fg.mqtt import MQTTException

_TOPIC = "firegate/v1/%s/%s"


def _put(buf, n, data):
    if isinstance(data, str):
        data = data.encode()
    buf[n:n + len(data)] = data
    return n + len(data)


class Uplink:
    def __init__(self, cfg, hw, ring, counters, links, app, buf, tls):
        self.cfg = cfg
        self.m = cfg.mqtt
        self.hw = hw
        self.ring = ring
        self.counters = counters
        self.links = links
        self.app = app
        self.client = None
        self.retry_at = time.ticks_ms()
        self.delay_ms = int(self.m["reconnect_min_s"] * 1000)
        self.health_at = time.ticks_ms()
        self.ping_since = None
        self.commands = []
        self.first = True
        self.buf = buf  # a memoryview of batch_max_bytes, allocated early by the app
        self.tls = tls  # an ssl.SSLContext (None without TLS), reused for every connection
        links["uplink"] = False

    def topic(self, channel):
        return _TOPIC % (self.cfg.gw, channel)

    def _count(self, reason, n=1):
        self.counters[reason] = self.counters.get(reason, 0) + n

    # -- connection ---------------------------------------------------------------------------

    def _connect(self):
        from fg import connect  # needed once per connection: loaded for it, then dropped

        gc.collect()
        try:
            client = connect.session(self)
        finally:
            self.app.unload("connect")
        if client is None:
            return
        self.client = client
        self.first = False
        self._count("connects")
        self.links["uplink"] = True
        self.delay_ms = int(self.m["reconnect_min_s"] * 1000)
        self.health_at = time.ticks_ms()  # a health report on every connect
        self.ping_since = None
        self.app.log("uplink: connected to %s:%d" % (self.m["host"], self.m["port"]))

    def retry(self, why):
        # jittered doubling back-off (50-100 % of the delay), reconnect_min_s .. reconnect_max_s
        jitter = self.delay_ms * (128 + os.urandom(1)[0] // 2) // 256
        self.retry_at = time.ticks_add(time.ticks_ms(), jitter)
        self.app.log("uplink: %s; next attempt in %d ms" % (why, jitter))
        self.delay_ms = min(self.delay_ms * 2, int(self.m["reconnect_max_s"] * 1000))

    def shutdown(self):
        """A deliberate stop: retained status "offline" (reason "shutdown"), then DISCONNECT,
        so the broker discards the last will."""
        if self.client is None:
            return
        from fg.connect import status_json

        try:
            msg = status_json(self.cfg.gw, "offline", self.hw.now_ms(), self.cfg.site,
                              "shutdown")
            self.client.publish(self.topic("status"), msg.encode(), True, 1)
            self.client.disconnect()
        except (OSError, MQTTException):
            self.client.close()
        self.client = None

    def drop(self, why):
        """Close the connection after an error; the broker publishes the last will."""
        if self.client is not None:
            self.client.close()
            self.client = None
            self._count("disconnects")
        self.links["uplink"] = False
        self.retry(why)

    # -- the loop's share ---------------------------------------------------------------------

    def service(self):
        """Connect when due, send what waits (a few batches), answer commands, keep alive.
        Returns True when more records wait to be sent."""
        if self.client is None:
            if not self.hw.network_up():
                return False
            if time.ticks_diff(self.retry_at, time.ticks_ms()) > 0:
                return False
            self._connect()
            if self.client is None:
                return False
        try:
            more = False
            for _ in range(4):
                more = self._send_batch()
                if not more:
                    break
            while self.client.check_msg() is not None:
                pass
            if self.ping_since is not None and \
                    time.ticks_diff(self.client.last_pong, self.ping_since) >= 0:
                self.ping_since = None
            while self.commands:
                self._command(self.commands.pop(0))
            if time.ticks_diff(time.ticks_ms(), self.health_at) >= 0:
                self.publish_health()
            self._keepalive()
            return more
        except (OSError, MQTTException) as e:
            self.drop("connection lost: %r" % (e,))
            return False

    def _send_batch(self):
        slots = self.ring.pending(self.m["batch_max_records"])
        if not slots:
            return False
        # The batch is written into one buffer allocated at start: no list of parts, no joined
        # copy, no encoded copy, so the heap needs no large free block while records wait.
        buf = self.buf
        head = '{"v":1,"gw":"%s"%s,"ep":"%s","ts":%d,"recs":[' % (
            self.cfg.gw, ',"site":"%s"' % self.cfg.site if self.cfg.site else "",
            self.ring.epoch_hex(), self.hw.now_ms())
        n = _put(buf, 0, head)
        used = []
        for slot, rec in zip(slots, self.ring.read(slots)):
            part = self.app.render(rec).encode()
            if n + len(part) + 3 > len(buf):
                if not used:  # cannot happen with the limits provisioning enforces
                    raise MQTTException("record_too_large")
                break
            if used:
                n = _put(buf, n, b",")
            n = _put(buf, n, part)
            used.append(slot)
        n = _put(buf, n, b"]}")
        self.app.unload("texts")  # loaded by render() for the events of this batch
        self.app.heap()
        self.client.publish(self.topic("records"), buf[:n], False, 1)  # returns after PUBACK
        self.ring.ack(used)
        self._count("batches")
        self._count("records", len(used))
        return len(used) < len(slots) or self.ring.depth > 0

    def publish_health(self):
        from fg import health  # built once a minute: loaded for it, then dropped

        self.health_at = time.ticks_add(time.ticks_ms(), int(self.m["health_interval_s"] * 1000))
        try:
            payload = health.build(self.app).encode()
        finally:
            self.app.unload("health")
        self.client.publish(self.topic("health"), payload, False, 1)

    def _keepalive(self):
        ka = self.m["keepalive_s"] * 1000
        if self.ping_since is not None and time.ticks_diff(time.ticks_ms(), self.ping_since) > ka:
            raise OSError(110)  # no PINGRESP within a keep-alive period: the link is dead
        if ka and self.client.idle_ms() > ka // 2 and self.ping_since is None:
            self.client.ping()
            self.ping_since = time.ticks_ms()

    # -- commands (spec "Command", "Ack") -----------------------------------------------------

    def on_message(self, topic, msg):
        if topic == self.topic("cmd").encode():
            self.commands.append(msg)

    def _command(self, msg):
        from fg import cmd  # commands are rare: their code is loaded for them and dropped

        try:
            cmd.run(self, msg)
        finally:
            self.app.unload("cmd")
