"""Helpers for tests that point the real bleak at a :class:`~simulators.ble.bluez.MockBluez`.

What we found about bleak 3.1 (pinned ``bleak==3.1.*``) and a bus that changes:

* bleak keeps **one BlueZ manager per asyncio event loop** and reads ``DBUS_SYSTEM_BUS_ADDRESS``
  only when that manager (re)connects. With pytest-asyncio's default function-scoped loops,
  every test gets a fresh manager, so a private bus per test needs nothing more.
* Within **one** event loop, swapping buses is unsafe: if the old bus is still running, the
  manager silently keeps using it (the scanner sees nothing); if it was stopped but the loop has
  not yet noticed, the next scan fails with ``OSError: [Errno 9] Bad file descriptor``.
  :func:`reset_bleak_manager` drops the loop's manager so the next scanner connects afresh.

It touches bleak's private ``_global_instances``; the pin is why that is acceptable, and the
test suite has a test that fails if bleak changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from simulators.ble.bluez import ENV_VAR, MockBluez


async def reset_bleak_manager() -> None:
    """Forget the current loop's bleak BlueZ manager and close its bus connection."""
    from bleak.backends.bluezdbus import manager

    instance = manager._global_instances.pop(asyncio.get_running_loop(), None)
    if instance is None or instance._bus is None:
        return
    instance._bus.disconnect()
    watcher = instance._bus_watcher_task
    if watcher is not None:
        # Its disconnect handling only logs; wait so it does not outlive the manager.
        with contextlib.suppress(Exception):
            await asyncio.wait({watcher}, timeout=2.0)


async def use_bus(bluez: MockBluez) -> None:
    """Point this process's bleak at ``bluez``: set the env var and reset bleak's manager."""
    os.environ[ENV_VAR] = bluez.address
    await reset_bleak_manager()
