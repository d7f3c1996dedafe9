"""Import bthome-ble without loading Home Assistant's Bluetooth manager.

bthome-ble takes one thing from habluetooth: its ``BluetoothServiceInfoBleak`` data model,
the parser's input (``from habluetooth import BluetoothServiceInfoBleak``). That import runs
habluetooth's package ``__init__``, and the ``__init__`` imports the whole manager: scanners,
the auto-scheduler, BlueZ channels, storage, the client wrappers. The models module in turn
takes one constant from bleak-retry-connector, whose ``__init__`` loads its connection
helpers, bluetooth-adapters, the OUI table reader, ctypes and an XML parser. With their Cython
modules that is about 3 MB of resident memory. The agent uses none of it, and its budget is
50 MB (issue 4, docs/benchmarks.md).

:func:`defer_ble_imports` applies one mechanism to both packages, :func:`defer_package_init`.
It puts the package in place with only the one submodule that is needed loaded, and binds the
names that callers take from it. The real ``__init__`` is deferred, not skipped. The first
use of any other name runs it (a module ``__getattr__``, PEP 562), and from then on the
package is the ordinary complete module. Anything that asks for the manager later gets it,
and submodule imports work all along.

The normal import runs instead if a package is already imported, or if its layout is not the
one this was written against (for example, if the models moved). Any change in those packages
can cost memory, but never correctness.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = [
    "DEFERRALS",
    "BleUnavailable",
    "Deferral",
    "defer_ble_imports",
    "defer_package_init",
    "require_ble",
]


class Deferral(NamedTuple):
    """Load ``module`` of ``package`` now and bind ``names`` from it on the package."""

    package: str
    module: str
    names: tuple[str, ...]


DEFERRALS = (
    # What habluetooth.models takes from bleak-retry-connector; first, so that it is there.
    Deferral("bleak_retry_connector", "bleak_retry_connector.const", ("NO_RSSI_VALUE",)),
    # What bthome-ble and bluetooth-sensor-state-data take from habluetooth.
    Deferral("habluetooth", "habluetooth.models",
             ("BluetoothServiceInfo", "BluetoothServiceInfoBleak")),
)


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` runs on the first lookup of a name it does not have."""

    def __getattr__(self, name: str) -> Any:
        if self.__dict__.get("_firegate_deferred") is not True:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        self._run_init()
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None

    def _run_init(self) -> None:
        spec = self.__spec__
        assert spec is not None and spec.loader is not None  # set by defer_package_init
        get_code = getattr(spec.loader, "get_code", None)
        assert get_code is not None  # checked by defer_package_init
        self.__dict__["_firegate_deferred"] = False  # a lookup during the run must not recurse
        try:
            exec(get_code(self.__name__), self.__dict__)
        except BaseException:
            self.__dict__["_firegate_deferred"] = True  # a later lookup tries again
            raise
        del self.__dict__["_firegate_deferred"]
        # an ordinary, complete module from now on (a module's __class__ is assignable)
        self.__class__ = types.ModuleType  # type: ignore[assignment]


def defer_ble_imports() -> tuple[str, ...]:
    """Apply :data:`DEFERRALS` (idempotent); the packages deferred by this call."""
    return tuple(d.package for d in DEFERRALS if defer_package_init(*d))


def defer_package_init(package: str, module: str, names: Sequence[str]) -> bool:
    """Load only ``module`` of ``package`` now, bind ``names`` from it on the package, and
    defer the package's ``__init__`` until any other name is used. True if deferred; False if
    the package is already imported, missing (``import`` raises as usual), or not laid out as
    expected (the next ``import`` of it is the normal one)."""
    if package in sys.modules:
        return False
    spec = importlib.util.find_spec(package)
    if (spec is None or spec.loader is None or not spec.submodule_search_locations
            or not hasattr(spec.loader, "get_code")):
        return False
    deferred = _DeferredPackage(package)
    deferred.__dict__.update(
        __spec__=spec, __loader__=spec.loader, __file__=spec.origin, __cached__=spec.cached,
        __package__=package, __path__=list(spec.submodule_search_locations),
        _firegate_deferred=True)
    sys.modules[package] = deferred
    try:
        loaded = importlib.import_module(module)
        deferred.__dict__.update({name: getattr(loaded, name) for name in names})
    except Exception:
        for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
            del sys.modules[name]
        return False
    return True


class BleUnavailable(ImportError):
    """bleak / bthome-ble are not installed (the optional ``ble`` extra)."""


def require_ble() -> None:
    """Import the optional BLE stack now; :class:`BleUnavailable` names the extra."""
    try:
        import bleak  # noqa: F401

        defer_ble_imports()  # bthome-ble needs data models, not the HA Bluetooth manager
        import bthome_ble  # noqa: F401
        import habluetooth  # noqa: F401
    except ImportError as exc:
        raise BleUnavailable(f"BLE support is not installed ({exc.name or exc}): "
                             "install firegate[ble]") from exc
