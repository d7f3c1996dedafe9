"""Modbus RTU/TCP driver: one master per bus, merged reads, back-off for silent devices.

One :class:`ModbusDriver` serves one ``[[modbus]]`` bus with one task (its ``run()``): it asks
the devices in turn, strictly one request at a time with ``gap_ms`` of quiet between frames
(Modbus over Serial Line V1.02 §2.5.1.1 requires 3.5 character times; RS-485 is half duplex and
has one master). Each device is polled every ``interval_s`` with the fewest requests its
register map allows (``DeviceProfile.read_blocks()``: adjacent registers merged, gaps never
bridged), decoded by ``DeviceProfile.decode_block()``. All pymodbus use is behind
:mod:`edge.drivers.modbus_adapter`.

What the driver emits (sources ``modbus/<bus>/<unit>/<point>``, device ``modbus/<bus>/<unit>``):

* a :class:`Measurement` per point and poll, converted to the quantity's canonical unit (MPa,
  m, °C, mA), its ``description`` the device's configured name;
* ``sensor_offline`` (device source) after ``offline_after`` consecutive polls without an
  answer; the device's polls then back off exponentially up to ``backoff_max_s``, so a dead
  device costs its neighbours one timeout per back-off period and no more; cleared at its first
  answer. Link ``modbus/<bus>/<unit>`` follows it;
* ``device_error`` (device source) while it answers with exception replies (each counted as
  ``exception_<code>``), cleared by a poll whose reads all succeed;
* ``out_of_range`` (point source) while a reading lies outside the point's plausible range.
  **Such a reading is not emitted as a measurement**: a broken 4-20 mA loop or a saturated
  transmitter must not look like a real 0 MPa or 4 MPa in the centre's charts; the event carries
  the reading (``value``) and the bound it crossed (``limit``), and ``out_of_range`` counts it;
* ``fault`` per named status bit (``sensor_fault``, ``loop_open``, ``over_range``...; source
  ``modbus/<bus>/<unit>/<word>/<bit>``), and ``threshold_high`` for the device's own alarm bits
  (names ending in ``_alarm``, e.g. an electrical fire detector's residual current alarm).
  While a fault bit is set, the points it covers are not emitted either (counted
  ``fault_suppressed``; ``DeviceProfile.covered_by``): ``<x>_fault`` covers the points named
  ``<x>`` or ``<x>_*``, any other fault bit covers every point of the device;
* per contact (a coil, discrete input or register bit: docs/modbus-contacts.md; source
  ``modbus/<bus>/<unit>/<contact>``, its description the contact's): its meaning's event
  (``valve_off_normal``, ``running``, ``fault``, ``manual_mode``, ``door_open``,
  ``supervisory``) while its logical state is not its normal one, once a change held for the
  device's ``debounce_ms`` (the device is polled again when that time is up, so a change is
  reported between ``debounce_ms`` and ``interval_s + debounce_ms`` after it happened; a poll
  that sees the old state again cancels it, counted ``bounce``); and a ``state``
  measurement (1/0) at each reported change and at least every ``report_interval_s``;
* ``link_fault`` (source ``modbus/<bus>``, link ``modbus/<bus>``) while the port or TCP
  connection cannot be opened or was lost; it is reopened with back-off up to
  ``reopen_max_s``. The device links show ``bus down`` meanwhile (no ``sensor_offline``:
  nobody could ask them).

Counters (``ctx.counters``): ``reads`` (normal answers), ``timeout``, ``bad_reply``,
``exception_<code>``, ``out_of_range``, ``fault_suppressed``, ``contact_change``, ``bounce``,
``offline`` (devices that went
offline), ``open_failed``, ``link_lost``, ``reopen``, ``reconnect`` (a link found closed
between requests and reopened at once), ``emit_failed``.

Events are level-triggered against what was last *delivered*: a raise or restore whose
``emit`` failed (counted ``emit_failed``) is sent again after the next poll, so no transition
is lost while the outbox is full; the measurements of that poll are lost and counted. What was
delivered starts as the conditions still raised when the agent last stopped
(``ctx.previous``), so a restart neither raises them twice nor forgets to restore them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edge.config.modbus import ModbusBusConfig, ModbusDeviceConfig
from edge.drivers.base import CommandHandler, DriverContext, EmitRefused
from edge.drivers.modbus_adapter import (
    BadReply,
    Bits,
    BusClient,
    Endpoint,
    ExceptionReply,
    LinkError,
    NoAnswer,
    OpenError,
    Registers,
    SerialEndpoint,
    TcpEndpoint,
)
from protocols.registers import (
    BitBlock,
    BitPoint,
    ReadBlock,
    RegisterError,
    StatusWord,
    convert,
)
from protocols.wire import (
    Bus,
    CommandName,
    Event,
    EventType,
    Measurement,
    Quantity,
    Record,
    Source,
)

__all__ = ["ModbusDriver", "endpoint_of"]

_FIRST_REOPEN_S = 1.0
_DETAIL_MAX = 256  # protocols.wire Event.detail
_Key = tuple[str, EventType]


def endpoint_of(config: ModbusBusConfig) -> Endpoint:
    """The adapter's endpoint for a bus config."""
    if config.host is not None:
        return TcpEndpoint(config.host, config.tcp_port)
    assert config.port is not None
    return SerialEndpoint(config.port, config.baud, config.parity, config.bytesize,
                          config.stopbits)


@dataclass(frozen=True, slots=True)
class _Cond:
    """An observed condition: raised (``active``) or clear, for one source and event type."""

    source: Source
    type: EventType
    active: bool
    value: float | None = None
    limit: float | None = None
    detail: str | None = None


@dataclass(eq=False, slots=True)
class _Contact:
    """One contact's debounce state: what was accepted and what is waiting to be."""

    point: BitPoint
    source: Source
    accepted: bool | None = None  # logical state last accepted (None: not yet known)
    pending: bool | None = None  # a different state seen, not yet held for debounce_ms
    pending_since: float = 0.0  # loop time of the poll that first saw ``pending``
    reported_ms: int | None = None  # receive time of the last ``state`` measurement sent
    reported_state: bool | None = None  # and the state it said


@dataclass(eq=False, slots=True)
class _Device:
    cfg: ModbusDeviceConfig
    blocks: tuple[ReadBlock | BitBlock, ...]
    link: str
    source: Source
    sources: dict[str, Source]  # per point name and per "<word>/<bit>"
    decimals: dict[str, int | None]  # rounding of each point in its canonical unit
    contacts: tuple[_Contact, ...] = ()
    due: float = 0.0  # loop time of the next poll
    failures: int = 0  # consecutive polls without any answer
    offline: bool = False
    backoff_s: float = 0.0


@dataclass(slots=True)
class _Poll:
    """What one poll of one device brought back."""

    values: dict[str, float | frozenset[str]] = field(default_factory=dict)
    bits: dict[str, bool] = field(default_factory=dict)  # contacts' logical states
    exceptions: list[str] = field(default_factory=list)
    answered: bool = False  # any reply at all, exception replies included
    complete: bool = True  # every block read normally
    problem: str = ""


class ModbusDriver:
    """Polls the devices of one Modbus bus; see the module docstring for what it emits."""

    def __init__(self, config: ModbusBusConfig, ctx: DriverContext) -> None:
        self.config = config
        self._ctx = ctx
        self._name = f"modbus/{config.name}"
        where = config.endpoint  # a long device path is cut from the left: its end says most
        self._source = Source(self._name, Bus.MODBUS, description=where if len(where) <= 64
                              else "…" + where[-63:])
        self._client = BusClient(endpoint_of(config), timeout_s=config.timeout_s,
                                 retries=config.retries, gap_s=config.gap_ms / 1000.0)
        self._devices = [self._device(d) for d in config.devices]
        self._reported: dict[_Key, bool] = {}
        self._opens = 0
        self._seed(ctx.previous)

    def _seed(self, previous: Iterable[tuple[str, str]]) -> None:
        """Start from the conditions still raised when the agent last stopped.

        They count as delivered: one still active is not raised again, and one found clear
        (the first successful poll of its device or point, the first open for the bus's
        ``link_fault``) is restored. A device still offline keeps its ``sensor_offline``.
        """
        types = {t.value: t for t in EventType}
        for sid, value in previous:
            etype = types.get(value)
            if etype is not None and (sid == self._name or sid.startswith(self._name + "/")):
                self._reported[(sid, etype)] = True
        for d in self._devices:
            # Already counted as gone offline before the restart: not counted again.
            d.offline = self._reported.get((d.source.id, EventType.SENSOR_OFFLINE), False)

    @property
    def name(self) -> str:
        """``modbus/<bus>``."""
        return self._name

    @property
    def client(self) -> BusClient:
        """The bus client (its ``stats`` count request frames and transparent reopens)."""
        return self._client

    def commands(self) -> Mapping[CommandName, CommandHandler]:
        """No downward commands: the devices are read-only measurements."""
        return {}

    def _device(self, d: ModbusDeviceConfig) -> _Device:
        base = f"{self._name}/{d.unit}"
        sources = {p.name: Source(f"{base}/{p.name}", Bus.MODBUS, description=d.name)
                   for p in d.profile.points}
        for word in d.profile.status_words:
            for bit in word.bits.values():
                key = f"{word.name}/{bit}"
                sources[key] = Source(f"{base}/{key}", Bus.MODBUS, description=d.name)
        contacts = tuple(
            _Contact(b, Source(f"{base}/{b.name}", Bus.MODBUS,
                               description=b.description or d.name))
            for b in d.profile.bit_points)
        blocks: tuple[ReadBlock | BitBlock, ...] = (*d.profile.read_blocks(),
                                                    *d.profile.bit_blocks())
        return _Device(d, blocks, base, Source(base, Bus.MODBUS, description=d.name), sources,
                       {p.name: p.decimals for p in d.profile.points}, contacts)

    # -- the bus task --------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the bus until cancelled; field errors are counted, reported and retried."""
        try:
            while True:
                await self._open()
                await self._serve()
        finally:
            self._client.close()

    async def _open(self) -> None:
        delay = min(_FIRST_REOPEN_S, self.config.reopen_max_s)
        while True:
            try:
                await self._client.open()
            except OpenError as exc:
                self._ctx.counters.inc("open_failed")
                await self._bus_down(str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reopen_max_s)
                continue
            self._opens += 1
            if self._opens > 1 or self._ctx.counters.get("open_failed"):
                self._ctx.counters.inc("reopen")
            self._ctx.links.set(self._name, True, self.config.endpoint)
            await self._emit([_Cond(self._source, EventType.LINK_FAULT, False)])
            return

    async def _bus_down(self, detail: str) -> None:
        """The port is unusable: bus and device links down, ``link_fault`` raised.

        The devices are not declared ``sensor_offline``: nobody could ask them; the bus's
        ``link_fault`` is the one condition a person has to act on.
        """
        self._ctx.links.set(self._name, False, detail)
        for d in self._devices:
            self._ctx.links.set(d.link, False, "bus down")
        await self._emit([_Cond(self._source, EventType.LINK_FAULT, True, detail=detail)])

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for d in self._devices:
            # "now" for a device never polled: otherwise its second poll would follow its
            # first at once (due 0 + interval lies in the past), which a debounce would see as
            # a change held for no time at all
            if d.due == 0.0:
                d.due = start
        while True:
            device = min(self._devices, key=lambda d: d.due)
            wait = device.due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            poll = await self._read(device)
            if poll is None:
                return  # link lost: reopen, then poll this device first
            await self._conclude(device, poll, loop.time())

    async def _read(self, device: _Device) -> _Poll | None:
        poll = _Poll()
        unit, profile = device.cfg.unit, device.cfg.profile
        counters = self._ctx.counters
        for block in device.blocks:
            reconnects = self._client.stats.reconnects
            table = block.table if isinstance(block, BitBlock) else block.register_type
            result = await self._client.read(table, block.start, block.count, unit)
            if self._client.stats.reconnects != reconnects:  # closed under us, reopened
                counters.inc("reconnect")
            if isinstance(result, Registers | Bits):
                try:
                    if isinstance(result, Registers) and isinstance(block, ReadBlock):
                        poll.values.update(profile.decode_block(block, result.values))
                    if device.contacts:
                        poll.bits.update(profile.decode_bits(block, result.values))
                except RegisterError as exc:  # the adapter checks the count; belt and braces
                    counters.inc("bad_reply")
                    poll.complete, poll.problem = False, str(exc)
                    break
                counters.inc("reads")
                poll.answered = True
            elif isinstance(result, ExceptionReply):
                counters.inc(f"exception_{result.code}")
                poll.answered, poll.complete = True, False
                end = block.start + block.count - 1
                poll.exceptions.append(f"exception {result.code} ({result.meaning}) reading "
                                       f"{table} {block.start}..{end}")
            elif isinstance(result, LinkError):
                counters.inc("link_lost")
                self._client.close()
                await self._bus_down(result.detail)
                return None
            else:
                # a silent device: skip its other blocks, one timeout per poll is enough
                counters.inc("timeout" if isinstance(result, NoAnswer) else "bad_reply")
                assert isinstance(result, NoAnswer | BadReply)
                poll.complete, poll.problem = False, result.detail
                break
        return poll

    async def _conclude(self, device: _Device, poll: _Poll, now: float) -> None:
        cfg = device.cfg
        conds: list[_Cond] = []
        if poll.answered:
            device.failures, device.backoff_s, device.offline = 0, 0.0, False
            self._ctx.links.set(device.link, True)
            conds.append(_Cond(device.source, EventType.SENSOR_OFFLINE, False))
            device.due = max(device.due + cfg.interval_s, now)
        else:
            device.failures += 1
            if device.failures >= cfg.offline_after:
                detail = f"no answer to {device.failures} polls: {poll.problem}"
                if not device.offline:
                    device.offline = True
                    self._ctx.counters.inc("offline")
                self._ctx.links.set(device.link, False, detail)
                conds.append(_Cond(device.source, EventType.SENSOR_OFFLINE, True,
                                   detail=detail))
                device.backoff_s = min(cfg.backoff_max_s,
                                       max(cfg.interval_s, device.backoff_s) * 2)
                device.due = now + device.backoff_s
            else:
                device.due = max(device.due + cfg.interval_s, now)
        if poll.exceptions:
            conds.append(_Cond(device.source, EventType.DEVICE_ERROR, True,
                               detail="; ".join(poll.exceptions)))
        elif poll.complete:
            conds.append(_Cond(device.source, EventType.DEVICE_ERROR, False))
        now_ms = self._ctx.now_ms()
        measurements = list(self._values(device, poll.values, conds, now_ms))
        states = self._contacts(device, poll, conds, now, now_ms) if device.contacts else []
        if await self._emit(conds, [*measurements, *(m for _, m in states)], now_ms):
            for c, m in states:
                c.reported_ms, c.reported_state = now_ms, m.value == 1.0

    def _contacts(self, device: _Device, poll: _Poll, conds: list[_Cond], now: float,
                  now_ms: int) -> list[tuple[_Contact, Measurement]]:
        """Debounce each contact over polls; its event condition and due ``state`` reports.

        A state differing from the accepted one is accepted once every poll for
        ``debounce_ms`` saw it; meanwhile the device is polled again when that time is up.
        """
        cfg = device.cfg
        debounce_s = cfg.debounce_ms / 1000.0
        out: list[tuple[_Contact, Measurement]] = []
        for c in device.contacts:
            seen = poll.bits.get(c.point.name)
            if seen is None:  # not read this poll (silent device, failed block)
                c.pending = None
            elif seen == c.accepted:
                if c.pending is not None:
                    self._ctx.counters.inc("bounce")
                c.pending = None
            else:
                if c.pending is not seen:
                    c.pending, c.pending_since = seen, now
                # 1 ms of slack: the confirming poll was scheduled for exactly this moment
                if now - c.pending_since >= debounce_s - 0.001:
                    if c.accepted is not None:  # the first state read is no change
                        self._ctx.counters.inc("contact_change")
                    c.accepted, c.pending = seen, None
                else:
                    device.due = min(device.due, c.pending_since + debounce_s)
            if c.accepted is None:
                continue
            p = c.point
            conds.append(_Cond(c.source, p.event_type, p.is_abnormal(c.accepted),
                               detail=_contact_detail(p, c.accepted)))
            interval_ms = cfg.report_interval_s * 1000.0
            # a change not yet reported (a refused emit is retried), or the proof of life due
            if (c.reported_state is not c.accepted or c.reported_ms is None
                    or now_ms - c.reported_ms >= interval_ms):
                out.append((c, Measurement(source=c.source, quantity=Quantity.STATE,
                                           value=1.0 if c.accepted else 0.0, unit="",
                                           receive_ms=now_ms)))
        return out

    def _values(self, device: _Device, values: Mapping[str, float | frozenset[str]],
                conds: list[_Cond], now_ms: int) -> Iterable[Measurement]:
        profile = device.cfg.profile
        faulted: set[str] = set()
        for word in profile.status_words:
            bits = values.get(word.name)
            if not isinstance(bits, frozenset):
                continue
            for number, bit in sorted(word.bits.items()):
                alarm = StatusWord.is_alarm(bit)
                on = bit in bits
                conds.append(_Cond(device.sources[f"{word.name}/{bit}"],
                                   EventType.THRESHOLD_HIGH if alarm else EventType.FAULT, on,
                                   detail=f"{word.name} bit {number} {bit}"))
                if on and not alarm:
                    faulted.update(profile.covered_by(bit))
        for p in profile.points:
            raw = values.get(p.name)
            if not isinstance(raw, float):
                continue
            unit = p.canonical_unit
            value = _tidy(convert(raw, p.unit, unit), device.decimals[p.name])
            source = device.sources[p.name]
            if not math.isfinite(raw) or not p.in_range(raw):
                self._ctx.counters.inc("out_of_range")
                finite = math.isfinite(value)
                limit = convert(p.maximum if finite and raw > p.maximum else p.minimum,
                                p.unit, unit)
                conds.append(_Cond(source, EventType.OUT_OF_RANGE, True,
                                   value=value if finite else None, limit=limit,
                                   detail=f"{p.name} {value:g} {unit} outside "
                                          f"{convert(p.minimum, p.unit, unit):g}.."
                                          f"{convert(p.maximum, p.unit, unit):g} {unit}"))
                continue
            conds.append(_Cond(source, EventType.OUT_OF_RANGE, False, value=value))
            if p.name in faulted:
                self._ctx.counters.inc("fault_suppressed")
                continue
            yield Measurement(source=source, quantity=p.quantity, value=value, unit=unit.value,
                              receive_ms=now_ms)

    async def _emit(self, conds: Iterable[_Cond], measurements: Iterable[Measurement] = (),
                    now_ms: int | None = None) -> bool:
        """Emit the changed conditions and the measurements; commit them once durable.

        False when the pipeline refused them (counted ``emit_failed``)."""
        now_ms = self._ctx.now_ms() if now_ms is None else now_ms
        records: list[Record] = []
        marks: list[tuple[_Key, bool]] = []
        for c in conds:
            key = (c.source.id, c.type)
            if self._reported.get(key, False) != c.active:
                records.append(Event(source=c.source, type=c.type, active=c.active,
                                     receive_ms=now_ms, value=c.value, limit=c.limit,
                                     detail=_cut(c.detail)))
                marks.append((key, c.active))
        records.extend(measurements)
        if not records:
            return True
        try:
            await self._ctx.emit_readings(records)
        except EmitRefused:
            self._ctx.counters.inc("emit_failed")
            return False  # the conditions stay unreported: the next poll sends them again
        self._reported.update(marks)
        return True


def _contact_detail(p: BitPoint, state: bool) -> str:
    """``channel 3: closed (normal: open)``."""
    where = f"channel {p.channel}: " if p.channel is not None else ""
    return f"{where}{p.state_name(state)} (normal: {p.state_name(p.normal_state)})"


def _cut(detail: str | None) -> str | None:
    """Event details are at most 256 characters on the wire (``det``)."""
    if detail is None or len(detail) <= _DETAIL_MAX:
        return detail
    return detail[:_DETAIL_MAX - 1] + "…"


def _tidy(value: float, decimals: int | None) -> float:
    """A canonical value rounded to its point's ``PointSpec.decimals`` (the firmware's
    ``fg.points.canonical`` does the same)."""
    if not math.isfinite(value):
        return value
    if decimals is None:
        return float(f"{value:.7g}")  # f32 carries ~7 significant digits
    return round(value, decimals)
