"""Client-side helpers: real pymodbus clients, decoding with ``protocols.registers``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from protocols.registers import DeviceProfile, ReadBlock, RegisterType

Client = AsyncModbusTcpClient | AsyncModbusSerialClient
# Short timeouts and no retries: a silent device costs one timeout, not four.
TIMEOUT = 0.3


@contextlib.asynccontextmanager
async def tcp_client(address: str) -> AsyncIterator[AsyncModbusTcpClient]:
    """A connected client for a ``HOST:PORT`` address."""
    host, _, port = address.rpartition(":")
    client = AsyncModbusTcpClient(host, port=int(port), timeout=TIMEOUT, retries=0)
    assert await client.connect(), f"cannot connect to {address}"
    try:
        yield client
    finally:
        client.close()


@contextlib.asynccontextmanager
async def rtu_client(path: str) -> AsyncIterator[AsyncModbusSerialClient]:
    """A connected RTU client on a serial device path (a pty here)."""
    client = AsyncModbusSerialClient(path, framer=FramerType.RTU, baudrate=9600,
                                     timeout=TIMEOUT, retries=0)
    assert await client.connect(), f"cannot open {path}"
    try:
        yield client
    finally:
        client.close()


async def read_block(client: Client, device_id: int, block: ReadBlock) -> ModbusPDU:
    """One read request for ``block`` (function 3 or 4)."""
    if block.register_type is RegisterType.HOLDING:
        return await client.read_holding_registers(block.start, count=block.count,
                                                   device_id=device_id)
    return await client.read_input_registers(block.start, count=block.count,
                                             device_id=device_id)


async def read_device(client: Client, device_id: int, profile: DeviceProfile
                      ) -> dict[str, float | frozenset[str]]:
    """Read every field of ``profile`` the way the edge driver will: merged adjacent reads."""
    out: dict[str, float | frozenset[str]] = {}
    for block in profile.read_blocks():
        reply = await read_block(client, device_id, block)
        assert not reply.isError(), f"device {device_id} {block}: {reply}"
        out.update(profile.decode_block(block, reply.registers))
    return out


async def read_value(client: Client, device_id: int, profile: DeviceProfile,
                     point: str | None = None) -> float:
    """One point's physical value (default: the profile's primary point)."""
    value = (await read_device(client, device_id, profile))[point or profile.primary.name]
    assert isinstance(value, float)
    return value
