"""bthome-ble without Home Assistant's Bluetooth manager (edge/drivers/ble_imports.py): the
package ``__init__`` of habluetooth and bleak-retry-connector deferred until used.

Each case runs in a fresh interpreter: this test process has long imported habluetooth.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

MANAGER = "habluetooth.manager"


def run(*parts: str) -> dict[str, Any]:
    """Run the script ``parts`` in a fresh interpreter; it prints one JSON document last."""
    script = "\n".join(textwrap.dedent(part) for part in parts)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


DECODE = """
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData
    from edge.drivers.ble import decode_advert, Outcome
    from simulators.ble import bthome

    KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
    MAC = "A4:C1:38:00:00:01"

    def advert(key):
        O = bthome.ObjectId
        data = bthome.encode_service_data(
            [(O.PACKET_ID, 4), (O.PRESSURE, bthome.mpa_to_hpa(0.35)), (O.DOOR, True)],
            key=key, counter=9, mac=bthome.parse_mac(MAC) if key else None)
        adv = AdvertisementData(local_name="s", manufacturer_data={},
                                service_data={bthome.SERVICE_UUID: data},
                                service_uuids=[bthome.SERVICE_UUID], tx_power=None, rssi=-60,
                                platform_data=())
        return BLEDevice(MAC, "s", {}), adv

    def decoded(key):
        d = decode_advert(*advert(key), key)
        return [str(d.outcome), d.sensors, d.binary, d.counter]
"""


def test_decoding_loads_the_models_without_the_manager() -> None:
    out = run(DECODE, """
        import json, sys
        from edge.drivers.ble import require_ble
        require_ble()
        plain, encrypted = decoded(None), decoded(KEY)
        print(json.dumps({"plain": plain, "encrypted": encrypted,
                          "loaded": sorted(m for m in sys.modules if m.startswith(
                              ("habluetooth", "bleak_retry_connector", "bluetooth_adapters")))}))
    """)
    assert out["plain"] == ["ok", {"pressure": 3500.0}, {"door": True}, None]
    assert out["encrypted"] == ["ok", {"pressure": 3500.0}, {"door": True}, 9]
    assert out["loaded"] == ["bleak_retry_connector", "bleak_retry_connector.const",
                             "habluetooth", "habluetooth.models"]


def test_any_other_name_completes_the_package() -> None:
    out = run("""
        import importlib.metadata, json, sys, types
        from edge.drivers.ble_imports import defer_ble_imports
        deferred = defer_ble_imports()
        import bthome_ble
        import habluetooth
        before = "habluetooth.manager" in sys.modules
        from habluetooth import BluetoothManager, HaScanner
        import habluetooth.manager, habluetooth.scanner_bleak
        print(json.dumps({
            "deferred": deferred, "before": before,
            "same": BluetoothManager is habluetooth.manager.BluetoothManager
                    and HaScanner is habluetooth.scanner_bleak.HaScanner,
            "version": habluetooth.__version__ == importlib.metadata.version("habluetooth"),
            "plain_module": type(habluetooth) is types.ModuleType,
            "all_bound": all(hasattr(habluetooth, n) for n in habluetooth.__all__),
            "model_kept": habluetooth.BluetoothServiceInfoBleak
                          is habluetooth.models.BluetoothServiceInfoBleak,
            "missing": repr(getattr(habluetooth, "no_such_name", None)),
        }))
    """)
    assert out == {"deferred": ["bleak_retry_connector", "habluetooth"], "before": False,
                   "same": True, "version": True,
                   "plain_module": True, "all_bound": True, "model_kept": True,
                   "missing": "None"}


def test_an_unknown_name_raises_attribute_error_after_completing() -> None:
    out = run("""
        import json, sys
        from edge.drivers.ble_imports import defer_ble_imports
        defer_ble_imports()
        import habluetooth
        try:
            habluetooth.no_such_name
        except AttributeError as exc:
            error = str(exc)
        print(json.dumps({"error": error, "manager": "habluetooth.manager" in sys.modules}))
    """)
    assert out == {"error": "module 'habluetooth' has no attribute 'no_such_name'",
                   "manager": True}


def test_an_already_imported_package_is_left_alone() -> None:
    out = run("""
        import json, sys
        import habluetooth
        from edge.drivers.ble_imports import defer_ble_imports
        first = sys.modules["habluetooth"], sys.modules["bleak_retry_connector"]
        print(json.dumps({"deferred": defer_ble_imports(),
                          "same": (sys.modules["habluetooth"],
                                   sys.modules["bleak_retry_connector"]) == first}))
    """)
    assert out == {"deferred": [], "same": True}


def test_an_unexpected_layout_falls_back_to_the_normal_import() -> None:
    out = run(DECODE, """
        import json, sys, types
        from edge.drivers import ble_imports
        brc, models = ble_imports.DEFERRALS
        ble_imports.DEFERRALS = (brc, models._replace(names=models.names + ("Moved",)))
        deferred = ble_imports.defer_ble_imports()
        leftover = sorted(m for m in sys.modules if m.startswith("habluetooth"))
        plain = decoded(None)
        import habluetooth
        print(json.dumps({"deferred": deferred, "leftover": leftover, "plain": plain,
                          "plain_module": type(habluetooth) is types.ModuleType,
                          "manager": "habluetooth.manager" in sys.modules}))
    """)
    assert out == {"deferred": ["bleak_retry_connector"], "leftover": [], "plain_module": True,
                   "manager": True,
                   "plain": ["ok", {"pressure": 3500.0}, {"door": True}, None]}


def test_the_connector_completes_when_the_manager_needs_it() -> None:
    out = run("""
        import json, sys, types
        from edge.drivers.ble_imports import defer_ble_imports
        defer_ble_imports()
        import bleak_retry_connector as brc
        before = "bleak_retry_connector.bluez" in sys.modules
        from habluetooth import BluetoothManager  # its __init__ takes Allocations from brc
        from bleak_retry_connector import establish_connection
        print(json.dumps({
            "before": before, "plain_module": type(brc) is types.ModuleType,
            "complete": all(hasattr(brc, n) for n in brc.__all__),
            "callable": callable(establish_connection),
            "adapters": "bluetooth_adapters" in sys.modules}))
    """)
    assert out == {"before": False, "plain_module": True, "complete": True, "callable": True,
                   "adapters": True}
