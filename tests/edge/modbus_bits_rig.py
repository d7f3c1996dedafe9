"""A real pymodbus TCP server whose coils, discrete inputs and holding registers a test sets.

The Modbus simulator (``simulators/modbus``) serves register maps; until it serves contacts too,
the contact tests run pymodbus's own server in-process with a datastore of 64 coils, 64 discrete
inputs and 16 holding registers per device, filled at each request from :attr:`ContactServer.coils`
etc. (the ``action`` hook pymodbus calls before it answers), so a test flips a contact between
two polls exactly as a field device would. Bits travel packed 16 to a register inside pymodbus:
bit ``n`` is bit ``n % 16`` of word ``n // 16``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from tests.infra.ports import free_port, wait_listening

N_BITS = 64
N_REGS = 16


@dataclass
class Table:
    """One device's tables as the test sets them."""

    coils: list[bool] = field(default_factory=lambda: [False] * N_BITS)
    inputs: list[bool] = field(default_factory=lambda: [False] * N_BITS)
    holding: list[int] = field(default_factory=lambda: [0] * N_REGS)
    exception: int | None = None  # answer every request with this exception code
    requests: dict[int, int] = field(default_factory=dict)  # function code -> count


def _pack(bits: list[bool]) -> list[int]:
    words = [0] * ((len(bits) + 15) // 16)
    for n, b in enumerate(bits):
        if b:
            words[n // 16] |= 1 << (n % 16)
    return words


class ContactServer:
    """Devices by unit id; ``address`` is ``127.0.0.1:<port>`` once started."""

    def __init__(self, units: tuple[int, ...] = (1,)) -> None:
        self.devices = {u: Table() for u in units}
        self.address = ""

    def _sim(self, unit: int) -> SimDevice:
        table = self.devices[unit]

        async def action(function_code: int, start: int, _address: int, _count: int,
                         registers: list[int], _values: list[int] | list[bool] | None
                         ) -> ExcCodes | None:
            table.requests[function_code] = table.requests.get(function_code, 0) + 1
            if table.exception is not None:
                return ExcCodes(table.exception)
            source = {1: _pack(table.coils), 2: _pack(table.inputs), 3: table.holding}.get(
                function_code)
            if source is None:
                return ExcCodes.ILLEGAL_FUNCTION
            for i in range(len(registers)):
                if 0 <= start + i < len(source):
                    registers[i] = source[start + i]
            return None

        bits = [SimData(0, count=N_BITS, datatype=SimType.BITS)]
        return SimDevice(unit, simdata=(bits, list(bits),
                                        [SimData(0, count=N_REGS, datatype=SimType.REGISTERS)],
                                        [SimData(0, datatype=SimType.INVALID)]),
                         action=action)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[ContactServer]:
        port = free_port()
        server = ModbusTcpServer([self._sim(u) for u in self.devices],
                                 address=("127.0.0.1", port))
        task = asyncio.create_task(server.serve_forever())
        try:
            await asyncio.to_thread(wait_listening, port)
            self.address = f"127.0.0.1:{port}"
            yield self
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]  # untyped in 3.16
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
