"""Import bthome-ble without loading Home Assistant's Bluetooth manager.

bthome-ble takes one thing from habluetooth: its ``BluetoothServiceInfoBleak`` data model,
the parser's input (``from habluetooth import BluetoothServiceInfoBleak``). That import runs
habluetooth's package ``__init__``, and the ``__init__`` imports the whole manager: scanners,
the auto-scheduler, BlueZ channels, storage, the client wrappers. With their Cython modules
that is about 2.4 MB of resident memory. The agent uses none of it, and its budget is 50 MB
(issue 4, docs/benchmarks.md).

:func:`defer_habluetooth_init` puts the ``habluetooth`` package in place with only
``habluetooth.models`` loaded and the two model classes bound. The real ``__init__`` is
deferred, not skipped. The first use of any other name runs it (a module ``__getattr__``,
PEP 562), and from then on the package is the ordinary complete module. Anything that asks
for the manager later gets it, and submodule imports work all along.

The normal import runs instead if habluetooth is already imported, or if its layout is not
the one this was written against (for example, if the models moved). Any change in
habluetooth can cost memory, but never correctness.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

__all__ = ["MODEL_NAMES", "PACKAGE", "defer_habluetooth_init"]

PACKAGE = "habluetooth"
MODELS = "habluetooth.models"
MODEL_NAMES = ("BluetoothServiceInfo", "BluetoothServiceInfoBleak")
"""What bthome-ble and bluetooth-sensor-state-data import from habluetooth."""


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
        assert spec is not None and spec.loader is not None  # set by defer_habluetooth_init
        get_code = getattr(spec.loader, "get_code", None)
        assert get_code is not None  # checked by defer_habluetooth_init
        self.__dict__["_firegate_deferred"] = False  # a lookup during the run must not recurse
        try:
            exec(get_code(self.__name__), self.__dict__)
        except BaseException:
            self.__dict__["_firegate_deferred"] = True  # a later lookup tries again
            raise
        del self.__dict__["_firegate_deferred"]
        # an ordinary, complete module from now on (a module's __class__ is assignable)
        self.__class__ = types.ModuleType  # type: ignore[assignment]


def defer_habluetooth_init() -> bool:
    """Load only habluetooth's models now and defer its package ``__init__`` until a name
    other than :data:`MODEL_NAMES` is used. True if deferred; False if habluetooth is
    already imported, missing (``import`` raises as usual), or not laid out as expected (the
    next ``import habluetooth`` is the normal one)."""
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if (spec is None or spec.loader is None or not spec.submodule_search_locations
            or not hasattr(spec.loader, "get_code")):
        return False
    package = _DeferredPackage(PACKAGE)
    package.__dict__.update(
        __spec__=spec, __loader__=spec.loader, __file__=spec.origin, __cached__=spec.cached,
        __package__=PACKAGE, __path__=list(spec.submodule_search_locations),
        _firegate_deferred=True)
    sys.modules[PACKAGE] = package
    try:
        models = importlib.import_module(MODELS)
        package.__dict__.update({name: getattr(models, name) for name in MODEL_NAMES})
    except Exception:
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        return False
    return True
