"""What contacts cost: the firmware's heap, and the Modbus simulator's coil / discrete-input reads.

Firmware (real MicroPython, unix port, 64-bit: an ESP32's objects are about half the size):
``heap used`` is what the firmware prints after start-up (``gc.collect()`` done; config
parsed, ring opened, TLS context made, poller built), and ``smallest heap`` the smallest
``-X heapsize`` (2 KB steps) at which it starts. Two site files: the reference node of
``tests/firmware/helpers.py`` (3 devices, 7 points, no contacts) and the parity test's
(``tests/firmware/test_bits_parity.py``: a DI-8 with 2 channels, a valve monitor, a fire pump
controller: 9 contacts, 2 points). Neither talks to a broker or a bus here (start-up only;
``bench_firmware.py`` measures a running node).

Simulator: one pymodbus client, one request at a time, reading a DI-16's 16 inputs (FC2) over
loopback TCP and over RTU on an unpaced pty, client and server in one process.

    python bench/bench_firmware_contacts.py    # prints Markdown rows for docs
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.framer import FramerType

from firegate.provision import load_site, provision
from protocols.registers import get_profile
from simulators.modbus.model import ManualClock
from simulators.modbus.scenario import DeviceSpec, Scenario
from simulators.modbus.server import serve_rtu_pty, serve_tcp
from tests.firmware.helpers import MICROPYTHON, build
from tests.firmware.helpers import bus_toml as reference_bus
from tests.firmware.test_bits_parity import bus_toml as contacts_bus
from tests.infra.tls import TestCA


def heap_used(node: Path, heap_kb: int) -> int | None:
    """Bytes used after start-up, or None if it does not start in ``heap_kb``."""
    try:
        proc = subprocess.run([MICROPYTHON, "-X", f"heapsize={heap_kb}K", "main.py",
                               "config.json"], cwd=node, capture_output=True, text=True,
                              timeout=3, check=False)
        out = proc.stdout
    except subprocess.TimeoutExpired as exc:  # still running: it started
        raw = exc.stdout or b""
        out = raw.decode() if isinstance(raw, bytes) else raw
    for line in out.splitlines():
        if line.startswith("fg: heap: "):
            return int(line.split()[2])
    return None


def firmware_rows(tmp: Path) -> list[str]:
    fw = build(tmp / "build")
    TestCA(tmp / "pki")
    rows = []
    for name, bus in (("reference node: 3 devices, 7 points, no contacts",
                       reference_bus("127.0.0.1:1")),
                      ("contacts: DI-8 (2 channels), valve-4, fire-pump: 9 contacts, 2 points",
                       contacts_bus("127.0.0.1:1"))):
        site = tmp / "site.toml"
        site.write_text(f'[site]\nid = "s"\n[uplink]\nurl = "mqtts://localhost:1"\n'
                        f'ca_file = "{tmp / "pki" / "ca.crt"}"\n{bus}')
        config = provision(load_site(site), "firmware", firmware_data_dir=".")
        node = tmp / "node"
        shutil.rmtree(node, ignore_errors=True)
        shutil.copytree(fw, node)
        (node / "config.json").write_bytes(config.files["config.json"][0])
        used = heap_used(node, 200)
        smallest = next((kb for kb in range(84, 131, 2) if heap_used(node, kb) is not None),
                        None)
        size = len(json.dumps(json.loads(config.files["config.json"][0])))
        rows.append(f"| {name} | {size:,} B | {used / 1024:.1f} KB | {smallest} KB |"
                    if used is not None else f"| {name} | {size:,} B | did not start | |")
    return rows


async def fc2_rate(client: AsyncModbusTcpClient | AsyncModbusSerialClient, reads: int) -> float:
    await client.connect()
    try:
        start = time.perf_counter()
        for _ in range(reads):
            reply = await client.read_discrete_inputs(0, count=16, device_id=1)
            assert not reply.isError(), reply
        return reads / (time.perf_counter() - start)
    finally:
        client.close()


async def simulator_rows(reads: int = 2000) -> list[str]:
    bus = Scenario((DeviceSpec(1, get_profile("di-16"), "di"),), noise=0.0).build(ManualClock())
    rows = []
    async with serve_tcp(bus) as running:
        host, _, port = running.address.rpartition(":")
        r = await fc2_rate(AsyncModbusTcpClient(host, port=int(port), timeout=1, retries=0),
                           reads)
        rows.append(f"| TCP loopback | {r:,.0f} |")
    async with serve_rtu_pty(bus, pace=False) as running:
        r = await fc2_rate(AsyncModbusSerialClient(running.address, framer=FramerType.RTU,
                                                   baudrate=9600, timeout=1, retries=0), reads)
        rows.append(f"| RTU pty, unpaced | {r:,.0f} |")
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print("| firmware config | config.json | heap used after start-up | smallest heap |")
        print("|---|---|---|---|")
        for row in firmware_rows(Path(tmp)):
            print(row)
    print()
    print("| simulator, FC2 16 inputs | reads/s |")
    print("|---|---|")
    for row in asyncio.run(simulator_rows()):
        print(row)


if __name__ == "__main__":
    main()
