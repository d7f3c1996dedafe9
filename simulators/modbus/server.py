"""Serve a :class:`~simulators.modbus.model.BusModel` with pymodbus's own servers.

This is the simulator's one pymodbus adapter (pinned to 3.16.x in ``pyproject.toml``): every
pymodbus name the simulator uses is imported here. What it relies on, read from the 3.16.1 source:

* ``ModbusTcpServer`` / ``ModbusSerialServer`` (RTU framer) accept a list of
  ``pymodbus.simulator.SimDevice``; each device's ``simdata`` is given as the 4-tuple
  (coils, discrete inputs, holding, input) so function 3 and function 4 see separate tables, as on
  the real devices. Every field is a read-only ``SimData`` of ``DataType.REGISTERS``; registers
  between fields are invalid, so a read across a gap gets exception 2 (illegal data address).
* ``SimDevice(action=...)`` is awaited on every access with the block's live register list. The
  action fills in the current values (the model is evaluated lazily at the clock's time), or
  returns an exception code. Values are laid out with pymodbus's own
  ``ModbusClientMixin.convert_to_registers``, an implementation independent of
  ``protocols.registers``, so client tests decoding with the latter cross-check both.
* **Silence.** pymodbus always answers: an unknown device id gets exception 4 (its ``SimCore``
  raises ``KeyError``), and an action can only return an exception code. A real RTU slave with a
  dead line, or a request to an address nobody has, gets no answer at all. The server's
  ``trace_packet`` hook sees each outgoing frame and may return replacement bytes; the guard here
  returns ``b""`` for any frame whose device id is unknown or silenced, and pymodbus then writes
  nothing. This covers every function code, including those answered without the datastore
  (diagnostics 0x08, device identification 0x2B). A catch-all ``SimDevice(id=0)`` takes requests
  for unknown ids so pymodbus does not log a traceback for each; its replies are dropped too.
* **Coils and discrete inputs** (function 1 and 2) are the third and fourth tables. pymodbus
  keeps them 16 bits to a register from the first address rounded down to 16, pads the rest
  with zeros, and calls the action with the number of *registers* touched, not of bits, so the
  action alone cannot tell that a read runs past the last input. The ``trace_pdu`` hook sees
  the request itself: a bit read that touches an address the device does not have is pointed
  at address 0xFFFF, which pymodbus answers with exception 2 (illegal data address) as a real
  module does. The action then writes each contact's raw bit into the packed registers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from protocols.registers import BitTable, DataType, PointSpec, RegisterType

from .model import BusModel, DeviceModel, contact_names
from .ptylink import PtyLink

_CONVERT = {
    DataType.U16: ModbusClientMixin.DATATYPE.UINT16,
    DataType.I16: ModbusClientMixin.DATATYPE.INT16,
    DataType.U32: ModbusClientMixin.DATATYPE.UINT32,
    DataType.I32: ModbusClientMixin.DATATYPE.INT32,
    DataType.F32: ModbusClientMixin.DATATYPE.FLOAT32,
}
# function code -> register table it addresses (0x17 read/write multiple uses holding registers)
_TABLE = {3: RegisterType.HOLDING, 6: RegisterType.HOLDING, 16: RegisterType.HOLDING,
          23: RegisterType.HOLDING, 4: RegisterType.INPUT}
# function code -> bit table (V1.1b3 §6.1 read coils, §6.2 read discrete inputs; 5 and 15
# write coils, refused: the simulated contacts are inputs)
_BITS = {1: BitTable.COIL, 5: BitTable.COIL, 15: BitTable.COIL, 2: BitTable.DISCRETE_INPUT}
_MBAP_UNIT_ID = 6  # Modbus TCP: the unit identifier follows the 6-byte MBAP prefix


def encode_point(spec: PointSpec, value: float) -> list[int]:
    """Registers for ``value`` (in the point's unit), saturating as a real transmitter does."""
    raw = spec.raw_from_physical(value, saturate=True)
    number: int | float = raw if spec.data_type is DataType.F32 else int(raw)
    return ModbusClientMixin.convert_to_registers(
        number, _CONVERT[spec.data_type], word_order=spec.word_order.value)


@dataclass
class BusStats:
    """Frames the guard let through or dropped (silenced or unknown device ids)."""

    sent: int = 0
    dropped: int = 0
    dropped_by_id: dict[int, int] = field(default_factory=dict)


class BusServer:
    """The pymodbus device list and silence guard for one bus; one pymodbus server serves it."""

    def __init__(self, bus: BusModel, framer: FramerType) -> None:
        self.bus = bus
        self.framer = framer
        self.stats = BusStats()
        self.devices = [self._sim_device(d) for d in bus.devices.values()]
        # catch-all for unknown ids (SimDevice id 0 = "every id not defined"); replies dropped
        self.devices.append(SimDevice(0, simdata=[SimData(0, datatype=SimType.REGISTERS)]))

    def _sim_device(self, device: DeviceModel) -> SimDevice:
        tables: dict[RegisterType, list[SimData]] = {RegisterType.HOLDING: [],
                                                     RegisterType.INPUT: []}
        for f in device.profile.fields:
            tables[f.register_type].append(SimData(
                f.address, count=f.register_count, datatype=SimType.REGISTERS, readonly=True))
        for rtype, address in sorted({(b.table, b.address) for b in device.profile.bit_points
                                      if isinstance(b.table, RegisterType)}):
            tables[rtype].append(SimData(address, datatype=SimType.REGISTERS, readonly=True))
        holding, inputs = (tables[t] or [SimData(0, datatype=SimType.INVALID)]
                           for t in (RegisterType.HOLDING, RegisterType.INPUT))
        addresses = bit_addresses(device)
        coils, discrete = (_bit_block(addresses[t]) for t in BitTable)

        async def action(function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], values: list[int] | list[bool] | None
                         ) -> ExcCodes | None:
            if function_code in _BITS:
                return self._serve_bits(device, _BITS[function_code], start_address, address,
                                        count, registers, values is not None)
            return self._serve(device, function_code, start_address, registers)

        return SimDevice(device.id, simdata=(coils, discrete, holding, inputs), action=action)

    def _serve_bits(self, device: DeviceModel, table: BitTable, start_register: int,
                    address: int, count: int, registers: list[int], write: bool
                    ) -> ExcCodes | None:
        """Fill the packed bit registers pymodbus keeps for a coil / discrete-input table
        (16 bits a register, bit 0 of register ``start_register`` is address
        ``16 * start_register``) with each contact's bit now."""
        self.bus.advance()
        if device.silenced:
            return ExcCodes.DEVICE_FAILURE  # never sent: the guard drops it
        if device.exception_code is not None:
            return ExcCodes(device.exception_code)
        at = bit_addresses(device)[table]
        if not at:
            return ExcCodes.ILLEGAL_FUNCTION  # no coils (or no inputs) on this device
        served = set(at.values())
        if write or any(a not in served for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS  # unmapped (pymodbus pads to 16), or a write
        raw = device.reading(self.bus.clock.now()).contacts
        base = 16 * start_register
        for name, a in at.items():
            index, bit = divmod(a - base, 16)
            if 0 <= index < len(registers):
                registers[index] = (registers[index] | 1 << bit if raw[name]
                                    else registers[index] & ~(1 << bit))
        return None

    def _serve(self, device: DeviceModel, function_code: int, start: int,
               registers: list[int]) -> ExcCodes | None:
        self.bus.advance()
        if device.silenced:
            return ExcCodes.DEVICE_FAILURE  # never sent: the guard drops it
        if device.exception_code is not None:
            return ExcCodes(device.exception_code)
        table = _TABLE.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        reading = device.reading(self.bus.clock.now())
        for spec in device.profile.points:
            if spec.register_type is table:
                regs = encode_point(spec, reading.values[spec.name])
                registers[spec.address - start:spec.address - start + len(regs)] = regs
        for word in device.profile.status_words:
            if word.register_type is table:
                registers[word.address - start] = word.encode(reading.status[word.name])[0]
        contact_words: dict[int, int] = {}
        for b in device.profile.bit_points:  # contacts packed into a register
            if b.table is table and b.bit is not None:
                packed = contact_words.get(b.address, 0)
                contact_words[b.address] = packed | (1 << b.bit if reading.contacts[b.name]
                                                     else 0)
        for address, packed in contact_words.items():
            registers[address - start] = packed
        return None

    def check_request(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """pymodbus ``trace_pdu`` hook: a coil / discrete-input read of an address the device
        does not have is answered with exception 2 (see the module docstring)."""
        fn = pdu.function_code
        if sending or fn not in (1, 2):
            return pdu
        device = self.bus.devices.get(pdu.dev_id)
        if device is None:
            return pdu
        served = set(bit_addresses(device)[_BITS[fn]].values())
        if served and any(a not in served for a in range(pdu.address, pdu.address + pdu.count)):
            pdu.address, pdu.count = 0xFFFF, 1  # beyond every table here: exception 2
        return pdu

    def answers(self, device_id: int) -> bool:
        """Whether a reply from ``device_id`` would reach the wire now."""
        self.bus.advance()
        device = self.bus.devices.get(device_id)
        return device is not None and not device.silenced

    def guard(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus ``trace_packet`` hook: drop replies of unknown and silenced devices."""
        if not sending or not packet:
            return packet
        pos = 0 if self.framer is FramerType.RTU else _MBAP_UNIT_ID
        device_id = packet[pos] if len(packet) > pos else -1
        if self.answers(device_id):
            self.stats.sent += 1
            return packet
        self.stats.dropped += 1
        self.stats.dropped_by_id[device_id] = self.stats.dropped_by_id.get(device_id, 0) + 1
        return b""


def bit_addresses(device: DeviceModel) -> dict[BitTable, dict[str, int]]:
    """Each coil / discrete-input contact of a device by name, with its protocol address (a
    channel bank's inputs included, as ``ch<n>``)."""
    out: dict[BitTable, dict[str, int]] = {t: {} for t in BitTable}
    profile = device.profile
    for b in profile.bit_points:
        if isinstance(b.table, BitTable):
            out[b.table][b.name] = b.address
    bank = profile.bank
    if bank is not None:
        for name in contact_names(profile):
            if name.startswith("ch") and name not in device.bit_points:
                out[bank.table][name] = bank.address(int(name[2:]))
    return out


def _bit_block(addresses: dict[str, int]) -> list[SimData]:
    # pymodbus keeps bits 16 to a register from the first address rounded down to 16 and pads
    # the gaps with zeros; _serve_bits refuses what is not a contact. One read-only entry from
    # the lowest to the highest address (pymodbus needs at least one entry per table).
    if not addresses:
        return [SimData(0, values=[False] * 16, datatype=SimType.BITS, readonly=True)]
    low, high = min(addresses.values()), max(addresses.values())
    return [SimData(low, values=[False] * (high - low + 1), datatype=SimType.BITS,
                    readonly=True)]


class ServeError(OSError):
    """The server could not open its port (address in use, no such serial device, ...)."""


async def _start(server: ModbusTcpServer | ModbusSerialServer, where: str) -> None:
    # pymodbus logs the OS error and raises a bare RuntimeError; give callers one error type
    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:
        raise ServeError(f"cannot listen on {where}: {exc}") from None


@dataclass
class Running:
    """A started server: how a client reaches it."""

    kind: str  # "tcp" or "rtu"
    address: str  # "HOST:PORT" or the serial device path the client opens
    bus_server: BusServer
    link: PtyLink | None = None

    @property
    def stats(self) -> BusStats:
        """Guard counters."""
        return self.bus_server.stats


@contextlib.asynccontextmanager
async def serve_tcp(bus: BusModel, host: str = "127.0.0.1", port: int = 0
                    ) -> AsyncIterator[Running]:
    """Serve ``bus`` over Modbus TCP; ``port=0`` picks a free port (see ``Running.address``)."""
    bus_server = BusServer(bus, FramerType.SOCKET)
    server = ModbusTcpServer(bus_server.devices, address=(host, port),
                             trace_packet=bus_server.guard, trace_pdu=bus_server.check_request)
    await _start(server, f"{host}:{port}")
    try:
        sockets = getattr(server.transport, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        yield Running("tcp", f"{host}:{bound}", bus_server)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]  # untyped in pymodbus 3.16


@contextlib.asynccontextmanager
async def serve_rtu(bus: BusModel, port: str, baudrate: int = 9600) -> AsyncIterator[Running]:
    """Serve ``bus`` over Modbus RTU on an existing serial device (e.g. a USB RS-485 adapter)."""
    bus_server = BusServer(bus, FramerType.RTU)
    server = ModbusSerialServer(bus_server.devices, framer=FramerType.RTU, port=port,
                                baudrate=baudrate, trace_packet=bus_server.guard,
                                trace_pdu=bus_server.check_request)
    await _start(server, port)
    try:
        yield Running("rtu", port, bus_server)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]  # untyped in pymodbus 3.16


@contextlib.asynccontextmanager
async def serve_rtu_pty(bus: BusModel, baudrate: int = 9600, *, pace: bool = True,
                        link: str | None = None) -> AsyncIterator[Running]:
    """Serve ``bus`` over Modbus RTU on a new pty pair; clients open ``Running.address``.

    With ``pace`` the relay holds bytes back to the rate of a ``baudrate`` line.
    """
    pty = PtyLink(baudrate if pace else None, link=link)
    pty.open()
    try:
        async with serve_rtu(bus, pty.server_path, baudrate) as running:
            yield Running("rtu", pty.client_path, running.bus_server, pty)
    finally:
        pty.close()
