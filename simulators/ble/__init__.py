"""BLE sensor simulator: BTHome v2 advertisements delivered to the real bleak through a mocked
BlueZ on a private D-Bus (``firegate sim ble``; see docs/simulators.md, "BLE sensors").

Modules: :mod:`.bthome` (pure encoder), :mod:`.sensors` (sensor state and the pure scheduler),
:mod:`.scenario` (the ``[ble]`` table), :mod:`.bluez` (private bus + dbusmock subprocesses),
:mod:`.runner` (asyncio shell), :mod:`.cli` (the command), :mod:`.testing` (bleak helpers).
Nothing here imports dbus-python, dbusmock or bleak at import time.
"""
