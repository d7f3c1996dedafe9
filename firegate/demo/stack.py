"""Starting and stopping the demo's processes: broker, collector, simulators, edge agent.

Every part is the real program run as a child process (``firegate collector run``, ``firegate
sim panel``, ``firegate agent run``, ``mosquitto``), each in its own session so that a Ctrl-C
in the terminal reaches only the demo, which then stops the children in a sensible order: the
agent first (it publishes its "offline" status on the way out), then the collector (it
finishes what it holds), the simulators, the broker last. Each is stopped **by its PID**:
SIGTERM, SIGKILL after a grace period, always reaped. A child also gets SIGTERM from the
kernel if the demo itself dies (``PR_SET_PDEATHSIG``), so a killed demo leaves nothing behind.

Output goes to one log file per child in ``<workdir>/logs``; the demo reads a child's first
lines from there (the simulators print where they listen), so no pipe can fill up and block a
child that runs for hours.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.proc import pid_alive
from firegate.demo.plan import Broker, ConsoleAccess, DemoError, Influx, Layout

__all__ = ["Child", "Running", "Stack", "start_agent", "start_ble", "start_broker",
           "start_collector", "start_simulator"]

START_TIMEOUT_S = 45.0  # generous: a loaded 2-core machine imports pymodbus slowly
STOP_TIMEOUT_S = 15.0
_PR_SET_PDEATHSIG = 1
_STOP_ORDER = ("agent", "collector", "panel", "modbus", "ble", "broker")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def firegate_command() -> list[str]:
    """The ``firegate`` command of this very installation."""
    script = Path(sys.executable).parent / "firegate"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from firegate.entry import main; main()"]


@dataclass
class Child:
    """One child process and what the demo knows about it."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    extra_pids: tuple[int, ...] = ()
    """Processes the child started itself (the BLE simulator's bus and mock)."""
    stopping: bool = False
    killed: bool = False
    left_out: bool = False
    """An optional part (BLE) that could not start; the demo went on without it."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_line(self, accept: Callable[[str], bool], what: str,
                  timeout: float = START_TIMEOUT_S) -> str:
        """The first line of the child's output that ``accept`` takes; DemoError if the child
        ends first or nothing fits within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.log.read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
            for line in text.splitlines():
                if accept(line):
                    return line
            if self.proc.poll() is not None:
                raise DemoError(f"{self.name} ended (exit status {self.proc.returncode}) before "
                                f"{what}; {self.log}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DemoError(f"{self.name}: no {what} after {timeout:.0f} s; "
                                f"{self.log}:\n{self.log_tail()}")
            time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class Running:
    """The pipeline once every part has started."""

    broker: Broker
    influx: Influx | None
    store: Path | None
    ble_note: str | None
    """Why BLE is left out; None when it runs."""
    t0: float
    """``time.monotonic()`` when the simulators' scenario clocks started."""
    console: ConsoleAccess | None = None
    """The collector's web console (URL, operator, token)."""


@dataclass
class Stack:
    """The running children; :meth:`stop` ends them all (idempotent)."""

    layout: Layout
    children: list[Child] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)

    def spawn(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None
              ) -> Child:
        """Start ``argv`` as child ``name``, its output to ``logs/<name>.log``."""
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        log = self.layout.logs / f"{name}.log"
        with open(log, "wb") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.layout.root, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                # preexec_fn is unsafe with threads: every child is started before the demo
                # starts any (the MQTT view and the live display come after the agent).
                start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def get(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def failed(self) -> Child | None:
        """A child that ended although nobody asked it to."""
        return next((c for c in self.children
                     if not c.stopping and c.proc.poll() is not None), None)

    def stop_one(self, child: Child) -> int | None:
        """Stop one child now (by PID); returns its exit status."""
        self.exit_codes[child.name] = _stop(child)
        return self.exit_codes[child.name]

    def stop(self) -> dict[str, int | None]:
        """Stop every child by PID, in order; returns the exit status of each."""
        order = sorted(self.children, key=lambda c: _STOP_ORDER.index(c.name)
                       if c.name in _STOP_ORDER else -1)
        for child in order:
            self.stop_one(child)
        return dict(self.exit_codes)

    def pids(self) -> list[dict[str, object]]:
        """Every process the demo started, directly or through a child."""
        return [{"name": c.name, "pid": c.pid, "extra_pids": list(c.extra_pids),
                 "exit_code": c.proc.returncode, "killed": c.killed, "left_out": c.left_out,
                 "log": str(c.log)}
                for c in self.children]


def _stop(child: Child) -> int | None:
    child.stopping = True
    proc = child.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    # The BLE simulator stops its bus itself; if it could not (killed), its processes are
    # orphans that only the demo knows about: end them by PID too.
    for pid in child.extra_pids:
        deadline = time.monotonic() + 5.0
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not pid_alive(pid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            time.sleep(0.5)
    return proc.returncode


# -- the parts ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(child: Child, port: int, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if child.proc.poll() is not None:
            raise DemoError(f"{child.name} ended (exit status {child.proc.returncode}); "
                            f"{child.log}:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise DemoError(f"{child.name}: nothing listens on 127.0.0.1:{port} after "
                            f"{timeout:.0f} s; {child.log}:\n{child.log_tail()}")
        time.sleep(0.05)


def start_broker(stack: Stack) -> Broker:
    """A private Mosquitto on a free loopback port, with its config in ``<workdir>/broker``.

    Mosquitto and not a pure-Python broker: the collector needs MQTT 5 (shared subscriptions,
    PUBACK reason codes). Started as root, Mosquitto drops to user ``mosquitto`` before it
    opens its files, so the config says ``user root`` then (and only then).
    """
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None)
    if binary is None:
        raise DemoError("the embedded broker needs the 'mosquitto' program: install the Debian "
                        "package 'mosquitto' (sudo apt-get install mosquitto; ./dev setup does "
                        "it), or give --broker mqtt://HOST:PORT")
    directory = stack.layout.broker_dir
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    lines = ([] if os.geteuid() != 0 else ["user root"]) + [
        "persistence false", f"log_dest file {directory / 'mosquitto.log'}",
        "log_type error", "log_type warning", "log_type notice", "connection_messages true",
        "per_listener_settings false", "allow_anonymous true", "max_queued_messages 0",
        f"listener {port} 127.0.0.1"]
    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    child = stack.spawn("broker", [binary, "-c", str(conf)])
    _wait_port(child, port)
    return Broker(f"mqtt://127.0.0.1:{port}", embedded=True)


def start_collector(stack: Stack) -> Child:
    """``firegate collector run`` on the generated config (readiness: see :func:`ready`)."""
    return stack.spawn("collector", [*firegate_command(), "collector", "run", "--config",
                                     str(stack.layout.collector_toml)])


def start_simulator(stack: Stack, name: str, *args: str) -> Child:
    """``firegate sim NAME --scenario <workdir>/scenario.toml ARGS``."""
    return stack.spawn(name, [*firegate_command(), "sim", name, "--scenario",
                              str(stack.layout.scenario), *args])


def listening_address(child: Child) -> str:
    """The device or address from a simulator's first line (``listening pty /dev/pts/3``)."""
    line = child.wait_line(lambda s: s.startswith("listening "), "'listening' line")
    return line.split()[2]


def ble_unavailable() -> str | None:
    """Why the BLE simulator cannot run here, or None if it can."""
    import importlib.util

    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon is not installed (Debian package 'dbus')"
    missing = [m for m in ("dbus", "dbusmock") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"Python module(s) {', '.join(missing)} missing: install firegate's 'sim' "
                "extra (pip install -e '.[sim]'; ./dev setup does it)")
    if importlib.util.find_spec("bleak") is None:
        return "bleak is missing: install firegate's 'ble' extra"
    return None


def start_ble(stack: Stack) -> Child:
    """``firegate sim ble``: BTHome adverts on a mocked BlueZ on a private D-Bus."""
    return start_simulator(stack, "ble", "--quiet")


def ble_bus(child: Child) -> str:
    """Wait for the BLE simulator's bus; returns its ``DBUS_SYSTEM_BUS_ADDRESS`` and records
    the bus processes' PIDs on ``child``."""
    pids = child.wait_line(lambda s: s.startswith("mocked BlueZ"), "mocked BlueZ")
    child.extra_pids = tuple(int(p) for p in pids.split("pids", 1)[1].split() if p.isdigit())
    line = child.wait_line(lambda s: "export DBUS_SYSTEM_BUS_ADDRESS=" in s, "D-Bus address")
    return line.split("=", 1)[1].strip().strip("'")


def ready(child: Child) -> None:
    """Wait until the collector has subscribed (its ``ready:`` line)."""
    child.wait_line(lambda s: s.startswith("ready:"), "'ready' line")


def start_agent(stack: Stack, bus_address: str | None) -> Child:
    """``firegate agent run`` on the generated config; bleak finds the mocked BlueZ through
    ``DBUS_SYSTEM_BUS_ADDRESS``."""
    env = {"DBUS_SYSTEM_BUS_ADDRESS": bus_address} if bus_address else None
    return stack.spawn("agent", [*firegate_command(), "agent", "run", "--config",
                                 str(stack.layout.gateway_toml)], env=env)
