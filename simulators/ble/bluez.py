"""A mocked BlueZ on a private D-Bus, so the real bleak scanner works on machines with no radio.

Two subprocesses, both stopped by PID in :meth:`MockBluez.stop`:

1. ``dbus-daemon`` with a *system-bus style* configuration written to a temporary directory,
   listening on a Unix socket there (never the machine's real system bus);
2. ``python -m dbusmock --system --template bluez5`` connected to it, which owns ``org.bluez``
   and serves the object tree bleak expects (adapter ``/org/bluez/hci0``, devices below it).

A client (bleak, the edge agent) reaches the mock by setting ``DBUS_SYSTEM_BUS_ADDRESS`` to
:attr:`MockBluez.address`; bleak reads it each time it opens its bus connection.

Devices are added with dbusmock's generic ``AddObject`` plus an ``InterfacesAdded`` signal rather
than the template's ``AddDevice``, because that helper declares ``ManufacturerData`` and
``ServiceData`` as *arrays* of dictionaries (``aa{qv}`` / ``aa{sv}``) while BlueZ uses
dictionaries (``a{qv}`` / ``a{sv}``, values ``ay``). Advertisements are then pushed with
``UpdateProperties`` on ``org.bluez.Device1``, which makes the mock emit ``PropertiesChanged``:
exactly the signal bleak turns into a detection callback.

dbus-python is imported lazily (it is the ``sim`` extra), so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

BLUEZ_SERVICE = "org.bluez"
MOCK_IFACE = "org.freedesktop.DBus.Mock"
BLUEZ_MOCK_IFACE = "org.bluez.Mock"
DEVICE_IFACE = "org.bluez.Device1"
OBJECT_MANAGER_IFACE = "org.freedesktop.DBus.ObjectManager"
ENV_VAR = "DBUS_SYSTEM_BUS_ADDRESS"

# A system-bus style configuration (type "system", EXTERNAL auth) that lets any local user own
# names and talk to anyone: it is a private test bus in a private directory, not the host's bus.
_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


class BluezMockError(RuntimeError):
    """The private bus or the mock could not be started, or a mock call failed."""


def device_path(adapter: str, address: str) -> str:
    """BlueZ object path of a device: ``/org/bluez/hci0/dev_A4_C1_38_00_00_01``."""
    return f"/org/bluez/{adapter}/dev_{address.upper().replace(':', '_')}"


@dataclass(frozen=True, slots=True)
class Advert:
    """One advertisement as BlueZ exposes it on a Device1 object."""

    rssi: int
    service_data: Mapping[str, bytes]
    manufacturer_data: Mapping[int, bytes]


def _dbus() -> Any:
    """dbus-python, imported on first use: it is an optional extra (``firegate[sim]``)."""
    try:
        import dbus
        import dbus.bus
    except ImportError as exc:
        raise BluezMockError("the BLE simulator needs dbus-python and python-dbusmock: "
                             "pip install 'firegate[sim]'") from exc
    return dbus


def _dbus_props(advert: Advert) -> dict[str, Any]:
    """Device1 advertisement properties with explicit D-Bus types (``n``, ``a{sv}``, ``a{qv}``)."""
    dbus = _dbus()
    return {
        "RSSI": dbus.Int16(advert.rssi),
        "ServiceData": dbus.Dictionary(
            {dbus.String(uuid): dbus.Array(data, signature="y")
             for uuid, data in advert.service_data.items()},
            signature="sv",
        ),
        "ManufacturerData": dbus.Dictionary(
            {dbus.UInt16(company): dbus.Array(data, signature="y")
             for company, data in advert.manufacturer_data.items()},
            signature="qv",
        ),
    }


class MockBluez:
    """Private ``dbus-daemon`` + dbusmock ``bluez5``; a context manager.

    >>> with MockBluez() as bluez:               # doctest: +SKIP
    ...     bluez.add_device("A4:C1:38:00:00:01", "door", Advert(-60, {UUID: data}, {}))
    ...     os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bluez.address   # for bleak
    """

    def __init__(self, *, adapter: str = "hci0", alias: str = "firegate-sim",
                 start_timeout: float = 10.0) -> None:
        self.adapter = adapter
        self.alias = alias
        self.start_timeout = start_timeout
        self._dir: Path | None = None
        self._daemon: subprocess.Popen[bytes] | None = None
        self._mock: subprocess.Popen[bytes] | None = None
        self._address: str | None = None
        self._conn: Any = None
        self._devices: set[str] = set()

    # -- lifetime ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The private bus address; export it as ``DBUS_SYSTEM_BUS_ADDRESS`` for clients."""
        if self._address is None:
            raise BluezMockError("the private bus is not running")
        return self._address

    @property
    def env(self) -> dict[str, str]:
        """The environment a client process needs: ``{"DBUS_SYSTEM_BUS_ADDRESS": address}``."""
        return {ENV_VAR: self.address}

    @property
    def pids(self) -> tuple[int, ...]:
        """PIDs of the running subprocesses (daemon first)."""
        return tuple(p.pid for p in (self._daemon, self._mock) if p is not None)

    @property
    def adapter_path(self) -> str:
        return f"/org/bluez/{self.adapter}"

    def start(self) -> None:
        """Start the bus and the mock, wait until ``org.bluez`` is owned, add the adapter."""
        if self._daemon is not None:
            raise BluezMockError("already started")
        if shutil.which("dbus-daemon") is None:
            raise BluezMockError("dbus-daemon not found: install the Debian package 'dbus'")
        _dbus()  # fail early with a clear message
        if importlib.util.find_spec("dbusmock") is None:
            raise BluezMockError("the BLE simulator needs python-dbusmock: "
                                 "pip install 'firegate[sim]'")
        self._dir = Path(tempfile.mkdtemp(prefix="firegate-bluez-"))
        try:
            self._start_daemon()
            self._start_mock()
            self._add_adapter()
        except BaseException:
            self.stop()
            raise

    def _start_daemon(self) -> None:
        assert self._dir is not None
        config = self._dir / "system.conf"
        config.write_text(_BUS_CONFIG.format(socket=self._dir / "system_bus_socket"))
        self._daemon = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile",
             "--print-address=1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us; we stop the children
        )
        assert self._daemon.stdout is not None
        line = _read_line(self._daemon.stdout, self.start_timeout)
        if not line.startswith("unix:"):
            raise BluezMockError(f"dbus-daemon did not print its address (got {line!r})")
        self._address = line

    def _start_mock(self) -> None:
        dbus = _dbus()
        assert self._dir is not None
        log = (self._dir / "dbusmock.log").open("wb")
        try:
            self._mock = subprocess.Popen(
                [sys.executable, "-m", "dbusmock", "--system", "--template", "bluez5"],
                env={**os.environ, ENV_VAR: self.address},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self._conn = dbus.bus.BusConnection(self.address)
        deadline = time.monotonic() + self.start_timeout
        while not self._conn.name_has_owner(BLUEZ_SERVICE):
            if self._mock.poll() is not None:
                raise BluezMockError(f"dbusmock exited with {self._mock.returncode}: "
                                     f"{self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise BluezMockError("dbusmock did not claim org.bluez in time")
            time.sleep(0.02)

    def _add_adapter(self) -> None:
        self._interface("/", BLUEZ_MOCK_IFACE).AddAdapter(self.adapter, self.alias)

    def stop(self) -> None:
        """Stop the mock, then the daemon, by PID (TERM, then KILL after 5 s); remove the dir."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        for proc in (self._mock, self._daemon):
            if proc is not None:
                _terminate(proc)
        if self._daemon is not None and self._daemon.stdout is not None:
            self._daemon.stdout.close()
        self._mock = self._daemon = None
        self._address = None
        self._devices.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log_text(self) -> str:
        """What dbusmock printed so far (for error messages)."""
        if self._dir is None:
            return ""
        try:
            return (self._dir / "dbusmock.log").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- devices ----------------------------------------------------------------------------

    def has_device(self, address: str) -> bool:
        return address.upper() in self._devices

    def add_device(self, address: str, name: str, advert: Advert) -> str:
        """Create ``org.bluez.Device1`` for ``address`` with a first advertisement; emit
        ``InterfacesAdded`` (bleak reports a device whose first signal carries advert data).

        Returns the object path.
        """
        dbus = _dbus()
        address = address.upper()
        path = device_path(self.adapter, address)
        props: dict[str, Any] = {
            "Address": dbus.String(address),
            "AddressType": dbus.String("public"),
            "Name": dbus.String(name),
            "Alias": dbus.String(name),
            "Adapter": dbus.ObjectPath(self.adapter_path),
            "Paired": dbus.Boolean(False),
            "Connected": dbus.Boolean(False),
            "Trusted": dbus.Boolean(False),
            "Blocked": dbus.Boolean(False),
            "LegacyPairing": dbus.Boolean(False),
            "ServicesResolved": dbus.Boolean(False),
            "UUIDs": dbus.Array([], signature="s"),
            **_dbus_props(advert),
        }
        self._interface("/", MOCK_IFACE).AddObject(
            path, DEVICE_IFACE, props,
            # Sensors are broadcast-only; the methods exist so a client's Connect fails cleanly.
            [("Connect", "", "", "raise dbus.exceptions.DBusException("
              "'broadcast-only sensor', name='org.bluez.Error.NotSupported')"),
             ("Disconnect", "", "", "")],
        )
        self._interface("/", MOCK_IFACE).EmitSignal(
            OBJECT_MANAGER_IFACE, "InterfacesAdded", "oa{sa{sv}}",
            [dbus.ObjectPath(path),
             dbus.Dictionary({DEVICE_IFACE: dbus.Dictionary(props, signature="sv")},
                             signature="sa{sv}")],
        )
        self._devices.add(address)
        return path

    def advertise(self, address: str, advert: Advert) -> None:
        """Push a new advertisement: ``UpdateProperties`` -> ``PropertiesChanged`` on Device1."""
        path = device_path(self.adapter, address)
        self._interface(path, MOCK_IFACE).UpdateProperties(DEVICE_IFACE, _dbus_props(advert))

    def remove_device(self, address: str) -> None:
        """Drop the device object and emit ``InterfacesRemoved`` (what BlueZ does when a device
        has not been seen for a while)."""
        dbus = _dbus()
        address = address.upper()
        path = device_path(self.adapter, address)
        self._interface("/", MOCK_IFACE).RemoveObject(path)
        self._interface("/", MOCK_IFACE).EmitSignal(
            OBJECT_MANAGER_IFACE, "InterfacesRemoved", "oas",
            [dbus.ObjectPath(path), dbus.Array([DEVICE_IFACE], signature="s")],
        )
        self._devices.discard(address)

    def _interface(self, path: str, interface: str) -> Any:
        dbus = _dbus()
        if self._conn is None:
            raise BluezMockError("the mock is not running")
        return dbus.Interface(self._conn.get_object(BLUEZ_SERVICE, path), interface)


def _read_line(stream: Any, timeout: float) -> str:
    """Read one line from a pipe without blocking past ``timeout``."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise BluezMockError("timed out waiting for dbus-daemon to print its address")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the process by PID, wait, SIGKILL if it lingers; always reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
