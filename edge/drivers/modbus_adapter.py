"""The one file that imports pymodbus (pinned to 3.16.x): a bus client with typed read results.

pymodbus reports a failed read through two channels - exceptions (``ModbusIOException``,
``ConnectionException``) and replies whose ``isError()`` is true - and renames its API between
minors. Everything above this file sees one small interface instead: :class:`BusClient` opens
a Modbus RTU serial line or a Modbus TCP connection and :meth:`BusClient.read` returns one of
:class:`Registers` (FC3/FC4), :class:`Bits` (FC1/FC2), :class:`ExceptionReply`,
:class:`NoAnswer`, :class:`BadReply` or :class:`LinkError`. It never raises because of the
field.

What it relies on, read from the pymodbus 3.16.1 source (``client/``, ``transaction/``):

* ``AsyncModbusSerialClient(port, framer=FramerType.RTU, baudrate=..., timeout=, retries=)`` and
  ``AsyncModbusTcpClient(host, port=, timeout=, retries=)``; ``connect()`` returns False (it
  logs, never raises) when the port cannot be opened; ``timeout`` bounds both the connect and
  the wait for each answer.
* ``read_holding_registers(address, count=, device_id=)`` / ``read_input_registers`` /
  ``read_coils`` / ``read_discrete_inputs`` (whose ``bits`` come padded to a multiple of 8:
  the byte count of V1.1b3 §6.1, so only the first ``count`` are the answer); an
  exception reply comes back as an ``ExceptionResponse`` (``isError()``, ``exception_code``),
  no answer within ``timeout`` x (``retries`` + 1) raises ``ModbusIOException``, a client
  without a transport raises ``ConnectionException``.
* Behaviours turned off because they hide errors or stall the bus:
  ``reconnect_delay=0`` (no background reconnect task racing ours and hiding a dead port);
  ``set_max_no_responses(...)`` very high, because the transaction manager otherwise closes a
  TCP connection after ``retries + 3`` consecutive unanswered requests - one silent device
  would cut off its neighbours. If the link closes anyway (peer reset, USB adapter pulled),
  :meth:`BusClient.read` reopens it once, transparently, and counts it in ``stats.reconnects``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import termios
import time
from dataclasses import dataclass, field
from typing import TypeAlias

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from protocols.registers import BitTable, RegisterType

__all__ = [
    "EXCEPTION_MEANINGS",
    "BadReply",
    "Bits",
    "BusClient",
    "ClientStats",
    "Endpoint",
    "ExceptionReply",
    "LinkError",
    "NoAnswer",
    "OpenError",
    "ReadResult",
    "Registers",
    "SerialEndpoint",
    "TcpEndpoint",
    "exception_meaning",
    "quiet_pymodbus_logging",
]

#: Modbus Application Protocol V1.1b3 §7, exception codes.
EXCEPTION_MEANINGS: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
_NEVER_DROP = 2**31  # consecutive unanswered requests before pymodbus closes a TCP link
_GUARD_S = 1.0  # slack over pymodbus's own timeouts before our safety net fires


def quiet_pymodbus_logging(level: int = logging.CRITICAL) -> None:
    """Silence pymodbus's own log lines (an ERROR with a frame dump per timeout).

    Every failure already comes back typed from :meth:`BusClient.read` and is counted; the
    library's lines would repeat each one in the log (or, with no logging configured, on
    stderr through Python's last-resort handler).
    """
    logging.getLogger("pymodbus").setLevel(level)


def _reraise_swallowed_cancel() -> None:
    """Re-raise a cancellation that pymodbus swallowed.

    pymodbus awaits answers and connects with ``asyncio.wait_for``, which in Python 3.11 returns
    the result instead of raising ``CancelledError`` when the awaited future completes in the
    same loop turn as the cancellation (fixed in 3.12). A bus task cancelled at that moment
    would poll on forever; its ``cancelling()`` count still shows the request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def exception_meaning(code: int) -> str:
    """The standard's name of an exception code (``illegal data address`` for 2)."""
    return EXCEPTION_MEANINGS.get(code, "non-standard exception code")


@dataclass(frozen=True, slots=True)
class SerialEndpoint:
    """A Modbus RTU line on a serial device."""

    port: str
    baud: int = 9600
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1

    def __str__(self) -> str:
        return f"{self.port} {self.baud} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    """A Modbus TCP server or an RTU-to-TCP gateway."""

    host: str
    port: int = 502

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


Endpoint: TypeAlias = SerialEndpoint | TcpEndpoint


@dataclass(frozen=True, slots=True)
class Registers:
    """A normal answer: the registers read, ``count`` of them."""

    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Bits:
    """A normal answer to a coil / discrete-input read: the raw bits, ``count`` of them."""

    values: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class ExceptionReply:
    """The device answered with an exception (function code | 0x80)."""

    code: int

    @property
    def meaning(self) -> str:
        """The standard's name for the code."""
        return exception_meaning(self.code)


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """Nothing (usable) came back within the timeout: a dead or absent device."""

    detail: str = "no answer"


@dataclass(frozen=True, slots=True)
class BadReply:
    """Something came back that is not a valid answer to the request."""

    detail: str


@dataclass(frozen=True, slots=True)
class LinkError:
    """The port or connection itself is unusable; the caller should close and reopen."""

    detail: str


ReadResult: TypeAlias = Registers | Bits | ExceptionReply | NoAnswer | BadReply | LinkError


class OpenError(OSError):
    """The serial port or TCP connection could not be opened; the message says why."""


@dataclass
class ClientStats:
    """What this client did; the bench and the tests read it to prove merged reads."""

    requests: int = 0
    """Request frames written to the line (pymodbus retries included)."""
    reconnects: int = 0
    """Times :meth:`BusClient.read` found the link closed and reopened it transparently."""
    by_unit: dict[int, int] = field(default_factory=dict)
    """:meth:`BusClient.read` calls per device address."""


class BusClient:
    """One master on one bus: requests strictly one at a time, ``gap_s`` of quiet between.

    Not safe for concurrent use by design: the owner (one task per bus) awaits each read.
    """

    def __init__(self, endpoint: Endpoint, *, timeout_s: float = 0.5, retries: int = 0,
                 gap_s: float = 0.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.retries = retries
        self.gap_s = gap_s
        self.stats = ClientStats()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._quiet_from = 0.0  # monotonic time the line last went quiet

    @property
    def is_open(self) -> bool:
        """True while the port or connection is open."""
        return self._client is not None and self._client.connected

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # pymodbus trace_packet hook: sees every frame, so retries are counted too
        if sending and data:
            self.stats.requests += 1
        return data

    def _make(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        ep = self.endpoint
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if isinstance(ep, TcpEndpoint):
            client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=self.timeout_s,
                                          retries=self.retries, reconnect_delay=0,
                                          trace_packet=self._trace)
        else:
            client = AsyncModbusSerialClient(ep.port, framer=FramerType.RTU, baudrate=ep.baud,
                                             parity=ep.parity, bytesize=ep.bytesize,
                                             stopbits=ep.stopbits, timeout=self.timeout_s,
                                             retries=self.retries, reconnect_delay=0,
                                             trace_packet=self._trace)
        # before connect: connection_made copies it into the live countdown
        client.set_max_no_responses(_NEVER_DROP)
        return client

    async def open(self) -> None:
        """Open the port / connect; raises :class:`OpenError` saying why it failed."""
        self.close()
        client = self._make()
        try:
            connected = await client.connect()
            _reraise_swallowed_cancel()
        except asyncio.CancelledError:
            client.close()
            raise
        if not connected:
            client.close()
            raise OpenError(self._why_not_open())
        self._client = client
        problem = self._flush_input()
        if problem is not None:
            self.close()
            raise OpenError(problem)

    def close(self) -> None:
        """Close the port or connection (safe to call twice)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _why_not_open(self) -> str:
        ep = self.endpoint
        if isinstance(ep, TcpEndpoint):
            return f"cannot connect to {ep}: refused, unreachable or no answer in " \
                   f"{self.timeout_s:g} s"
        if "://" not in ep.port:  # pyserial URLs (socket://, rfc2217://) are not paths
            if not os.path.exists(ep.port):
                return f"cannot open {ep.port}: no such device"
            if not os.access(ep.port, os.R_OK | os.W_OK):
                return f"cannot open {ep.port}: permission denied"
        return f"cannot open {ep.port}: busy (another program has it) or not a serial port"

    def _flush_input(self) -> str | None:
        """Drop unread input on a serial line; returns why the port failed, if it did.

        A pty or socat link keeps unread bytes across reopen, and RTU has no transaction id:
        a stale or late answer must not be taken for the answer to the next request.
        """
        transport = getattr(getattr(self._client, "ctx", None), "transport", None)
        sync_serial = getattr(transport, "sync_serial", None)
        if sync_serial is None:
            return None
        try:
            sync_serial.reset_input_buffer()
        except (OSError, termios.error) as exc:  # the adapter was unplugged
            return f"serial port failed: {exc}"
        return None

    async def _ensure_open(self) -> str | None:
        if self._client is None:
            return "not open"
        if self._client.connected:
            return None
        # the peer closed, the device vanished, or pymodbus dropped the link: reopen once
        connected = await self._client.connect()
        _reraise_swallowed_cancel()
        if not connected:
            return self._why_not_open()
        self.stats.reconnects += 1
        return None

    async def read(self, register_type: RegisterType | BitTable, start: int, count: int,
                   unit: int) -> ReadResult:
        """Read ``count`` registers (or coils / discrete inputs) from ``start`` of ``unit``'s
        table; never raises."""
        problem = await self._ensure_open()
        if problem is not None:
            return LinkError(problem)
        client = self._client
        assert client is not None
        wait = self._quiet_from + self.gap_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        # RTU has no transaction id: a late answer to an earlier request that timed out must
        # not be taken for the answer to this one. Drop whatever arrived while we were quiet.
        problem = self._flush_input()
        if problem is not None:
            return LinkError(problem)
        self.stats.by_unit[unit] = self.stats.by_unit.get(unit, 0) + 1
        result: ReadResult
        try:
            # a safety net only: pymodbus bounds each attempt by its own timeout
            async with asyncio.timeout(self.timeout_s * (self.retries + 1) + _GUARD_S):
                result = _classify(await self._request(client, register_type, start, count,
                                                       unit), count,
                                   isinstance(register_type, BitTable))
        except ConnectionException as exc:
            result = LinkError(f"not connected: {exc.string}")
        except ModbusIOException as exc:
            if not client.connected:
                result = LinkError(f"connection lost: {exc.string}")
            elif "No response" in exc.string:
                # pymodbus 3.16 raises the same type for silence and for undecodable frames;
                # only its message tells them apart
                result = NoAnswer(f"no answer from unit {unit} within {self.timeout_s:g} s")
            else:
                result = BadReply(exc.string)
        except TimeoutError:
            result = NoAnswer(f"no answer from unit {unit} (guard timeout)")
        finally:
            self._quiet_from = time.monotonic()
        _reraise_swallowed_cancel()
        return result

    @staticmethod
    async def _request(client: AsyncModbusTcpClient | AsyncModbusSerialClient,
                       register_type: RegisterType | BitTable, start: int, count: int,
                       unit: int) -> ModbusPDU:
        if register_type is BitTable.COIL:
            return await client.read_coils(start, count=count, device_id=unit)
        if register_type is BitTable.DISCRETE_INPUT:
            return await client.read_discrete_inputs(start, count=count, device_id=unit)
        if register_type is RegisterType.HOLDING:
            return await client.read_holding_registers(start, count=count, device_id=unit)
        return await client.read_input_registers(start, count=count, device_id=unit)


def _classify(reply: ModbusPDU, count: int, bits: bool = False) -> ReadResult:
    if isinstance(reply, ExceptionResponse):
        return ExceptionReply(int(reply.exception_code))
    if reply.isError():
        return BadReply(f"error reply {reply}")
    if bits:
        got = list(getattr(reply, "bits", None) or ())
        # padded to whole bytes (V1.1b3 §6.1: byte count = ceil(N / 8)); fewer is a bad reply
        if len(got) < count or len(got) > (count + 7) // 8 * 8:
            return BadReply(f"asked for {count} bits, got {len(got)}")
        return Bits(tuple(bool(b) for b in got[:count]))
    registers = list(getattr(reply, "registers", None) or ())
    if len(registers) != count:
        return BadReply(f"asked for {count} registers, got {len(registers)}")
    return Registers(tuple(registers))
