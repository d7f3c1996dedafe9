"""BLE driver: BTHome v2 sensors heard by a bleak scan become records.

bleak listens (passively by default: the gateway never transmits) through BlueZ; every
advertisement from an allow-listed MAC address is decoded by bthome-ble with that device's
bind key and turned into measurements and events for ``ctx.emit``. Everything else the radio
hears is counted as ``ignored``.

The per-advert rules, each counted under its own reason when it refuses an advert:

* ``decrypt_failed``: encrypted, and no key is configured or the AES-CCM MIC does not match
  (bthome.io/encryption). ``downgrade``: plaintext from a device that has a key (bthome-ble
  refuses these as well). ``bad_payload``: not BTHome v2, too short, or objects that do not
  parse whole (what did parse is still used). ``replay``: an authenticated advert whose
  encryption counter went backwards (bthome-ble's rule: a counter below 100 is a restart).
* ``duplicate``: the same packet id (object 0x00) with the same objects as the last advert
  used; the BTHome format says receivers should drop those (devices repeat adverts so that
  one gets through). A duplicate still proves the device is alive.

A device is *heard* when an advert is authentic (plaintext device: any BTHome advert;
keyed device: the MIC matched). Unheard for ``offline_after_s`` -> one ``sensor_offline``
(link ``ble/<MAC>`` down); heard again -> restored. While the scanner itself is down the
silence is ours, not the devices': no device goes offline, and their clocks restart when the
scanner does. A failed scanner (adapter gone or powered off, BlueZ or D-Bus gone) puts link
``ble`` down, raises ``link_fault`` on source ``ble/<adapter>`` and is restarted with a
doubling back-off; a BlueZ watchdog checks the adapter every ``watchdog_s`` while scanning.

State events (door, smoke...) are committed only once ``emit`` returned, so a failed emit is
retried by the next advert of the device instead of being lost; measurements that could not
be stored are counted ``emit_failed`` (a broadcast sensor cannot be asked to resend). The
states start from the conditions still raised when the agent last stopped (``ctx.previous``):
a device's first authentic advert restores what cleared meanwhile and raises nothing twice.

Counters: ``adverts``, ``ignored``, ``not_bthome``, ``bad_payload``, ``decrypt_failed``,
``downgrade``, ``replay``, ``duplicate``, ``bad_value``, ``queue_full``, ``emit_failed``,
``scanner_restart``. Passive scanning registers a BlueZ advertisement monitor for the BTHome
UUID; the mocked BlueZ of the tests (python-dbusmock ``bluez5``) accepts the monitor but does
not apply its pattern, so the tests run both modes and the UUID is checked here either way.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from common.backoff import Backoff
from edge.config.ble import BleConfig, BleDeviceConfig, DeviceKind, ScanningMode
from protocols.wire import (
    Bus,
    CommandName,
    Event,
    EventType,
    Measurement,
    Priority,
    Quantity,
    Record,
    Source,
    WireError,
)

from .base import CommandHandler, DriverContext, EmitRefused
from .ble_decode import (
    BINARY_EVENTS,
    SERVICE_UUID,
    STATE_TYPES,
    Decoded,
    Outcome,
    decode_advert,
    measurements_of,
    split_key,
)
from .ble_imports import BleUnavailable, require_ble

if TYPE_CHECKING:
    from bleak import BleakScanner
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

__all__ = [
    "SERVICE_UUID",
    "BleDriver",
    "BleUnavailable",
    "Decoded",
    "Outcome",
    "decode_advert",
    "measurements_of",
    "new_scanner",
    "require_ble",
]

log = logging.getLogger(__name__)

COUNTER_RESTART_BELOW = 100  # a lower counter after a higher one is a device restart
QUEUE_MAX = 4096  # adverts waiting for the decoder: over a minute at 50 adverts/s
START_TIMEOUT_S = 20.0
PROBE_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


# -- the driver --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Device:
    config: BleDeviceConfig
    source: Source
    link: str
    last_heard: float | None = None  # monotonic
    offline: bool = False  # sensor_offline raised (and stored)
    fingerprint: tuple[object, ...] | None = None
    counter: int | None = None
    binary: dict[str, bool] = field(default_factory=dict)
    raised: dict[EventType, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Heard:
    address: str
    device: BLEDevice
    adv: AdvertisementData
    receive_ms: int
    mono: float


def new_scanner(config: BleConfig,
                callback: Callable[[BLEDevice, AdvertisementData], None]) -> BleakScanner:
    """A bleak scanner for BTHome adverts on the configured adapter and mode."""
    from bleak import BleakScanner
    from bleak.args.bluez import BlueZScannerArgs, OrPattern
    from bleak.assigned_numbers import AdvertisementDataType

    bluez = BlueZScannerArgs(adapter=config.adapter)
    if config.scanning_mode is ScanningMode.PASSIVE:
        # BlueZ advertisement monitor: AD type 0x16 (service data, 16-bit UUID) starting with
        # the UUID 0xFCD2 little-endian. Monitors may match foreign devices: we check again.
        bluez["or_patterns"] = [
            OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xd2\xfc")]
    mode: Literal["passive", "active"] = (
        "passive" if config.scanning_mode is ScanningMode.PASSIVE else "active")
    return BleakScanner(detection_callback=callback, scanning_mode=mode, bluez=bluez)


class BleDriver:
    """Serves the ``[ble]`` section; see the module docstring for the rules."""

    def __init__(self, config: BleConfig, ctx: DriverContext) -> None:
        require_ble()
        self.config = config
        self.ctx = ctx
        self._devices = {
            d.address: _Device(d, Source(f"ble/{d.address}", Bus.BLE, description=d.name),
                               f"ble/{d.address}")
            for d in config.devices}
        self._adapter_source = Source(f"ble/{config.adapter}", Bus.BLE,
                                      description=f"BLE adapter {config.adapter}")
        self._queue: asyncio.Queue[_Heard] = asyncio.Queue(QUEUE_MAX)
        self._lock = asyncio.Lock()  # one advert or offline check at a time: state + emit
        self._backoff = Backoff(config.restart_backoff_s, config.restart_backoff_max_s)
        self._scanning_since: float | None = None
        self._fault_raised = EventType.LINK_FAULT.value in ctx.previous_of(
            self._adapter_source.id)  # restored once the scanner runs, not raised twice
        for dev in self._devices.values():
            self._seed(dev, ctx.previous_of(dev.source.id))

    @staticmethod
    def _seed(dev: _Device, previous: set[str]) -> None:
        """Start a device from the conditions still raised when the agent last stopped.

        Its first authentic advert then restores those that cleared meanwhile (door closed,
        smoke gone; ``sensor_offline`` by being heard) and raises none of them twice.
        """
        dev.offline = EventType.SENSOR_OFFLINE.value in previous
        dev.raised.update({t: True for t in STATE_TYPES if t.value in previous})

    @property
    def name(self) -> str:
        return "ble"

    @property
    def scanning(self) -> bool:
        """True while the scanner runs and the adapter answers the watchdog."""
        return self._scanning_since is not None

    def commands(self) -> Mapping[CommandName, CommandHandler]:
        return {}

    async def run(self) -> None:
        """Scan, decode and watch for silent devices until cancelled."""
        for dev in self._devices.values():
            self.ctx.links.set(dev.link, False, "not heard yet")
        self.ctx.links.set("ble", False, "starting")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._scan_loop(), name="ble/scan")
            tasks.create_task(self._decode_loop(), name="ble/decode")
            tasks.create_task(self._offline_loop(), name="ble/offline")

    # -- scanner ---------------------------------------------------------------------------

    def on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        """bleak's detection callback (on the event loop): filter, then queue for decoding."""
        self.ctx.counters.inc("adverts")
        address = device.address.upper()
        if address not in self._devices:
            self.ctx.counters.inc("ignored")
            return
        try:
            self._queue.put_nowait(_Heard(address, device, adv, self.ctx.now_ms(),
                                          time.monotonic()))
        except asyncio.QueueFull:
            self.ctx.counters.inc("queue_full")

    async def _scan_loop(self) -> None:
        while True:
            fault = await self._scan_until_fault()
            self._scanning_since = None
            self.ctx.counters.inc("scanner_restart")
            delay = self._backoff.next()
            log.warning("BLE scanner on %s failed: %s; restart in %g s",
                        self.config.adapter, fault, delay)
            self.ctx.links.set("ble", False, f"{fault}; restart in {delay:g} s")
            await self._scanner_event(True, fault)
            await asyncio.sleep(delay)

    async def _scan_until_fault(self) -> str:
        """Run one scanner until it fails; returns what went wrong."""
        scanner: BleakScanner | None = None
        probe: _AdapterProbe | None = None
        try:
            scanner = new_scanner(self.config, self.on_advert)
            async with asyncio.timeout(START_TIMEOUT_S):
                await scanner.start()
                probe = await _AdapterProbe.open(self.config.adapter)
                fault = await probe.check()
            if fault is not None:
                return fault
            self._scanning_since = time.monotonic()
            self.ctx.links.set("ble", True, f"{self.config.scanning_mode.value} scan on "
                                            f"{self.config.adapter}")
            while True:
                await self._scanner_event(False, None)  # retried each round until stored
                await asyncio.sleep(self.config.watchdog_s)
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    fault = await probe.check()
                if fault is not None:
                    return fault
                self._backoff.reset()  # healthy for a whole watchdog period
        except TimeoutError:
            return "BlueZ did not answer in time"
        except Exception as exc:  # bleak, dbus-fast and the OS raise many types (even
            # AssertionError for a lost bus); every one means "this scanner is gone"
            return f"{type(exc).__name__}: {exc}"[:200]
        finally:
            if probe is not None:
                await probe.close()
            if scanner is not None:
                await _stop(scanner)

    async def _scanner_event(self, active: bool, detail: str | None) -> None:
        if self._fault_raised is active:
            return
        event = Event(source=self._adapter_source, type=EventType.LINK_FAULT, active=active,
                      receive_ms=self.ctx.now_ms(), detail=detail)
        if await self._emit([event]):
            self._fault_raised = active

    # -- adverts ---------------------------------------------------------------------------

    async def _decode_loop(self) -> None:
        while True:
            heard = await self._queue.get()
            async with self._lock:
                await self._handle(heard)

    async def process_queued(self) -> int:
        """Decode every advert queued by :meth:`on_advert` now; returns how many.

        ``run()`` does this continuously; tools and tests without a scanner call it.
        """
        count = 0
        while not self._queue.empty():
            heard = self._queue.get_nowait()
            async with self._lock:
                await self._handle(heard)
            count += 1
        return count

    async def _handle(self, heard: _Heard) -> None:
        dev = self._devices[heard.address]
        decoded = decode_advert(heard.device, heard.adv, dev.config.key)
        counters = self.ctx.counters
        if decoded.outcome is not Outcome.OK:
            counters.inc(decoded.outcome.value)
            log.debug("BLE %s: %s (%s)", heard.address, decoded.outcome, decoded.problem)
            return
        if decoded.problem is not None:
            counters.inc("bad_payload")
            log.debug("BLE %s: %s", heard.address, decoded.problem)
        if decoded.counter is not None and dev.counter is not None and (
                COUNTER_RESTART_BELOW <= decoded.counter < dev.counter):
            counters.inc("replay")
            return
        if decoded.counter is not None:
            dev.counter = decoded.counter
        dev.last_heard = heard.mono
        self.ctx.links.set(dev.link, True, f"rssi {heard.adv.rssi} dBm")
        records: list[Record] = []
        if dev.offline:
            records.append(self._event(dev, EventType.SENSOR_OFFLINE, False, heard.receive_ms))
        duplicate = decoded.packet_id is not None and decoded.fingerprint() == dev.fingerprint
        if duplicate:
            counters.inc("duplicate")
        dev.binary.update(decoded.binary)
        raised = self._state_events(dev, heard.receive_ms, records)
        if not duplicate:
            records.extend(self._point_events(dev, decoded, heard.receive_ms))
            records.extend(self._measurements(dev, decoded, heard))
        if records and not await self._emit(records):
            return  # nothing committed: the next advert of this device tries again
        dev.offline = False
        dev.raised.update(raised)
        dev.fingerprint = decoded.fingerprint()

    def _state_events(self, dev: _Device, receive_ms: int, out: list[Record]
                      ) -> dict[EventType, bool]:
        """Append raise/restore events for changed binary states; returns the new states."""
        on: dict[EventType, list[str]] = {}
        priority: dict[EventType, Priority | None] = {}
        for key, value in dev.binary.items():
            spec = BINARY_EVENTS.get(split_key(key)[0])
            if spec is not None:
                on.setdefault(spec[0], [])
                priority[spec[0]] = spec[1]
                if value:
                    on[spec[0]].append(key)
        changed: dict[EventType, bool] = {}
        for etype, keys in on.items():
            active = bool(keys)
            # A first sight reports only a raised state, unless the condition was still
            # raised at the last stop (seeded in ``raised``): then a clear state restores it.
            if dev.raised.get(etype, False) is not active:
                out.append(self._event(dev, etype, active, receive_ms, priority[etype],
                                       ", ".join(keys) if active else None))
            changed[etype] = active
        return changed

    def _point_events(self, dev: _Device, decoded: Decoded, receive_ms: int) -> list[Record]:
        """A press on a wireless manual call point is a fire alarm (no restore: the call
        point is reset by a person at the site, and the centre clears the alarm)."""
        if dev.config.kind is not DeviceKind.CALLPOINT:
            return []
        return [self._event(dev, EventType.FIRE_ALARM, True, receive_ms,
                            detail=f"manual call point: {kind}")
                for key, kind in decoded.events.items()
                if split_key(key)[0] == "button" and kind != "hold_release"]

    def _measurements(self, dev: _Device, decoded: Decoded, heard: _Heard) -> list[Record]:
        out: list[Record] = []
        rows = [*measurements_of(decoded), ("rssi", Quantity.RSSI, float(heard.adv.rssi),
                                            "dBm", 1)]
        for key, quantity, value, unit, index in rows:
            source = dev.source if index == 1 else Source(
                f"{dev.source.id}/{index}", Bus.BLE, description=dev.config.name)
            try:
                out.append(Measurement(source=source, quantity=quantity, value=value, unit=unit,
                                       receive_ms=heard.receive_ms))
            except WireError as exc:  # a NaN/inf float object: counted, the rest goes on
                self.ctx.counters.inc("bad_value")
                log.debug("BLE %s %s: %s", dev.config.address, key, exc)
        return out

    def _event(self, dev: _Device, etype: EventType, active: bool, receive_ms: int,
               priority: Priority | None = None, detail: str | None = None) -> Event:
        return Event(source=dev.source, type=etype, active=active, receive_ms=receive_ms,
                     priority=priority, detail=detail)

    # -- silence ---------------------------------------------------------------------------

    async def _offline_loop(self) -> None:
        limits = [d.config.offline_after_s for d in self._devices.values()]
        tick = min(1.0, max(0.05, min(limits, default=60.0) / 10))
        while True:
            await asyncio.sleep(tick)
            async with self._lock:
                await self.check_offline(time.monotonic())

    async def check_offline(self, now: float) -> None:
        """Raise ``sensor_offline`` for devices silent past their limit (scanner up only)."""
        since_scan = self._scanning_since
        if since_scan is None:
            return
        for dev in self._devices.values():
            if dev.offline:
                continue
            silent = now - max(dev.last_heard or since_scan, since_scan)
            if silent <= dev.config.offline_after_s:
                continue
            detail = (f"not heard for {silent:.0f} s (expected every "
                      f"{dev.config.expected_interval_s:g} s)")
            event = self._event(dev, EventType.SENSOR_OFFLINE, True, self.ctx.now_ms(),
                                detail=detail)
            if await self._emit([event]):
                dev.offline = True
                self.ctx.links.set(dev.link, False, detail)

    async def _emit(self, records: list[Record]) -> bool:
        """Hand records to the outbox; False (counted per record) when they were not stored."""
        try:
            await self.ctx.emit_readings(records)
        except EmitRefused as exc:
            self.ctx.counters.inc("emit_failed", len(records))
            log.warning("BLE: %d record(s) not stored: %s", len(records), exc)
            return False
        return True


async def _stop(scanner: BleakScanner) -> None:
    """Stop a scanner whose BlueZ may be gone: bounded, and failures only logged."""
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await scanner.stop()
    except Exception as exc:  # the bus or adapter it would talk to may be the fault itself
        log.debug("BLE scanner stop: %r", exc)


class _AdapterProbe:
    """The watchdog: asks BlueZ over its own D-Bus connection whether the adapter exists and
    is powered (``org.bluez.Adapter1.Powered``). bleak itself reports neither a removed
    adapter nor a dead BlueZ to a running scanner; it just stops calling back."""

    def __init__(self, bus: Any, adapter: str) -> None:
        self._bus = bus
        self._adapter = adapter

    @classmethod
    async def open(cls, adapter: str) -> _AdapterProbe:
        if sys.platform != "linux":  # no BlueZ: nothing to probe
            return cls(None, adapter)
        from dbus_fast import BusType
        from dbus_fast.aio import MessageBus

        return cls(await MessageBus(bus_type=BusType.SYSTEM).connect(), adapter)

    async def check(self) -> str | None:
        """None when healthy, else what is wrong."""
        if self._bus is None:
            return None
        from dbus_fast import Message, MessageType

        if not self._bus.connected:
            return "D-Bus connection to BlueZ lost"
        reply = await self._bus.call(Message(
            destination="org.bluez", path=f"/org/bluez/{self._adapter}",
            interface="org.freedesktop.DBus.Properties", member="Get", signature="ss",
            body=["org.bluez.Adapter1", "Powered"]))
        if reply.message_type is MessageType.ERROR:
            return f"adapter {self._adapter}: {reply.error_name}"
        if not reply.body[0].value:
            return f"adapter {self._adapter} is powered off"
        return None

    async def close(self) -> None:
        """Disconnect, and collect how the connection ended (dbus-fast keeps an error for a
        lost bus in a future that must be read, or asyncio reports it at exit)."""
        if self._bus is None:
            return
        self._bus.disconnect()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self._bus.wait_for_disconnect()
        except Exception as exc:  # EOFError / OSError of the bus that died: the known fault
            log.debug("BLE watchdog bus: %r", exc)
