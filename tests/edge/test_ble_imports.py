"""bthome-ble without Home Assistant's Bluetooth manager (edge/drivers/ble_imports.py).

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
                          "manager": "habluetooth.manager" in sys.modules,
                          "models": "habluetooth.models" in sys.modules,
                          "loaded": sorted(m for m in sys.modules if m.startswith("habluetooth"))}))
    """)
    assert out["plain"] == ["ok", {"pressure": 3500.0}, {"door": True}, None]
    assert out["encrypted"] == ["ok", {"pressure": 3500.0}, {"door": True}, 9]
    assert out["models"] is True
    assert out["manager"] is False, out["loaded"]


def test_any_other_name_completes_the_package() -> None:
    out = run("""
        import importlib.metadata, json, sys, types
        from edge.drivers.ble_imports import defer_habluetooth_init
        deferred = defer_habluetooth_init()
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
    assert out == {"deferred": True, "before": False, "same": True, "version": True,
                   "plain_module": True, "all_bound": True, "model_kept": True,
                   "missing": "None"}


def test_an_unknown_name_raises_attribute_error_after_completing() -> None:
    out = run("""
        import json, sys
        from edge.drivers.ble_imports import defer_habluetooth_init
        defer_habluetooth_init()
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
        from edge.drivers.ble_imports import defer_habluetooth_init
        first = sys.modules["habluetooth"]
        print(json.dumps({"deferred": defer_habluetooth_init(),
                          "same": sys.modules["habluetooth"] is first}))
    """)
    assert out == {"deferred": False, "same": True}


def test_an_unexpected_layout_falls_back_to_the_normal_import() -> None:
    out = run(DECODE, """
        import json, sys, types
        from edge.drivers import ble_imports
        ble_imports.MODEL_NAMES = ("BluetoothServiceInfoBleak", "MovedElsewhere")
        deferred = ble_imports.defer_habluetooth_init()
        leftover = sorted(m for m in sys.modules if m.startswith("habluetooth"))
        plain = decoded(None)
        import habluetooth
        print(json.dumps({"deferred": deferred, "leftover": leftover, "plain": plain,
                          "plain_module": type(habluetooth) is types.ModuleType,
                          "manager": "habluetooth.manager" in sys.modules}))
    """)
    assert out == {"deferred": False, "leftover": [], "plain_module": True, "manager": True,
                   "plain": ["ok", {"pressure": 3500.0}, {"door": True}, None]}
