# The MQTT side: connect with back-off, last will, status, batches from the ring, health, commands,
# the collector's confirmations.
#
# Topics and payloads are those of docs/wire-protocol.md: records, status (retained, and the
# last will), health, cmd and stored (subscribed) and cmd/ack, all QoS 1. A batch is published
# and its PUBACK awaited before the next one (one message in flight). Delivered means stored:
# the PUBACK only marks its records sent; a slot is freed when the collector's ``stored``
# message of this ring's epoch names its seq (fg/stored.py parses it and frees them), and
# a sent record not confirmed within ``confirm_timeout_s`` is sent again (Ring.age, on a clock
# that runs whether connected or not). A record survives any reboot until it is confirmed; the
# collector drops a duplicate by (gateway, epoch, seq) and confirms it again. With
# ``delete_on = "puback"`` (a broker without a firegate collector) the PUBACK frees, as before.

import gc
import os
import time

from micropython import const

from fg.mqtt import MQTTException
from fg.records import put
from fg.ring import AGE_STEPS

_TOPIC = "firegate/v1/%s/%s"
_MAX_COMMANDS = const(4)  # commands waiting for their turn; more are dropped, counted


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
        self.buf = buf  # a memoryview of batch_max_bytes, allocated early by the app; also
        # where incoming payloads are read (fg/mqtt.py): a stored message larger is refused
        self.arrived = []  # confirmations kept in the batch buffer until they are applied
        self.tls = tls  # an ssl.SSLContext (None without TLS), reused for every connection
        self.t_cmd = self.topic("cmd").encode()
        self.t_stored = self.topic("stored").encode()
        # delete_on "puback": a broker without a firegate collector; the PUBACK frees, as
        # before confirmations existed (what the broker then loses is lost)
        self.puback = self.m["delete_on"] == "puback"
        # the confirm timeout's clock: Ring.age() every timeout / AGE_STEPS
        self.age_ms = max(250, int(self.m["confirm_timeout_s"] * 1000) // AGE_STEPS)
        self.age_at = time.ticks_add(time.ticks_ms(), self.age_ms)
        links["uplink"] = False

    def topic(self, channel):
        return _TOPIC % (self.cfg.gw, channel)

    def _count(self, reason, n=1):
        self.counters[reason] = self.counters.get(reason, 0) + n

    # -- connection ---------------------------------------------------------------------------

    def _connect(self):
        self._confirmations()  # the new client reads into the whole buffer again
        gc.collect()
        try:
            from fg import connect  # needed once per connection: loaded for it, then dropped

            client = connect.session(self)
        except MemoryError:  # no reset for it: tried again with back-off, counted
            client = None
            self._count("connect_no_memory")
            self.retry("no memory to connect")
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
        self._age()
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
            self._confirmations()
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
        self._confirmations()  # they are in the batch buffer, which is written now
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
        end = len(buf) - 2  # room for the closing "]}"
        used = []
        for slot, rec in zip(slots, self.ring.read(slots)):
            # written in place, piece by piece: a record that does not fit is cut off again
            start = n
            try:
                if used:
                    n = put(buf, n, b",", end)
                n = self.app.render(rec, buf, n, end)
            except ValueError:  # records.put: past the end
                if not used:  # cannot happen with the limits provisioning enforces
                    raise MQTTException("record_too_large") from None
                n = start
                break
            used.append(slot)
        n = _put(buf, n, b"]}")
        self.app.unload("texts")  # loaded by render() for the events of this batch
        self.app.heap()
        self.client.publish(self.topic("records"), buf[:n], False, 1)  # returns after PUBACK
        self.ring.ack(used, self.puback)  # sent: held until confirmed (puback: freed)
        self._confirmations()  # what came during the wait (often the previous batch's)
        self._count("batches")
        self._count("records", len(used))
        return len(used) < len(slots) or self.ring.live > 0

    def _age(self):
        # the confirm timeout's clock: one step when due (a loop held up for long catches up
        # one step a turn, so no generation is skipped)
        if time.ticks_diff(time.ticks_ms(), self.age_at) >= 0:
            self.age_at = time.ticks_add(self.age_at, self.age_ms)
            n = self.ring.age()
            if n:
                self._count("unconfirmed_resent", n)

    def publish_health(self):
        # Written into the batch buffer (fg/health.py): confirmations kept there are applied
        # first (a command's ack may have waited for its PUBACK while one came). A report that
        # finds no memory is lost, counted (health_dropped), never a reset: the next one is due
        # in health_interval_s, and a fire alarm matters more than a health report.
        self.health_at = time.ticks_add(time.ticks_ms(), int(self.m["health_interval_s"] * 1000))
        self._confirmations()
        gc.collect()  # the report's code and pieces find the heap's free blocks joined
        n = 0
        try:
            from fg import health  # built once a minute: loaded for it, then dropped

            n = health.build(self.app, self.buf)
        except (MemoryError, ValueError):  # ValueError: records.put, past the end (~0.4 KB: cannot)
            n = 0
            try:
                self._count("health_dropped")
                self.app.log("uplink: no memory for the health report: dropped")
            except MemoryError:
                pass
        finally:
            self.app.unload("health")
        if n:
            self.client.publish(self.topic("health"), self.buf[:n], False, 1)

    def _keepalive(self):
        ka = self.m["keepalive_s"] * 1000
        if self.ping_since is not None and time.ticks_diff(time.ticks_ms(), self.ping_since) > ka:
            raise OSError(110)  # no PINGRESP within a keep-alive period: the link is dead
        if ka and self.client.idle_ms() > ka // 2 and self.ping_since is None:
            self.client.ping()
            self.ping_since = time.ticks_ms()

    # -- from the cloud: confirmations (spec "Stored"), commands (spec "Command", "Ack") ------

    def on_message(self, topic, msg):
        # ``msg`` is a slice of the batch buffer (fg/mqtt.py), or None when it did not fit.
        # A confirmation is kept there (True: the next payload goes after it) and applied
        # when no publish is waiting (``_confirmations``), so that the code that applies it
        # is never in memory beside the health report's or a command's.
        if topic == self.t_stored:
            if msg is None:
                self._count("stored_too_large")  # what it named is resent, then confirmed
                return False
            self.arrived.append(msg)
            return True
        if topic == self.t_cmd:
            if msg is None:
                self._count("cmd_too_large")
            elif len(self.commands) >= _MAX_COMMANDS:
                self._count("cmd_dropped")
            else:
                self.commands.append(bytes(msg))
        return False

    def _confirmations(self):
        # spec "Stored": free what the collector stored of this ring's epoch
        if not self.arrived:
            return
        try:
            from fg import stored  # about once a batch; 2 KB of heap: loaded, then dropped

            for msg in self.arrived:
                stored.apply(self, msg)
        except OSError as e:  # flash failing: the records stay held, are resent, confirmed
            self._count("confirm_failed")
            self.app.log("ring: cannot apply a confirmation: %s" % (e,))
        except MemoryError:  # the same: what it named is resent after the timeout, confirmed
            self._count("confirm_no_memory")
        finally:
            self.arrived = []
            if self.client is not None:
                self.client.rx = self.buf
            self.app.unload("stored")

    def _command(self, msg):
        try:
            # commands are rare: their code is loaded for them and dropped; loading it is
            # where room runs out first (~3.7 KB), so it is inside the try
            from fg import cmd

            cmd.run(self, msg)
        except MemoryError:  # lost, counted, never a reset (the sender may send it again)
            self._count("cmd_no_memory")
        finally:
            self.app.unload("cmd")
