"""The asyncio shell: drive a :class:`~simulators.ble.sensors.Simulation` in (scaled) real time
and hand its adverts to the mocked BlueZ.

Simulated time is ``(monotonic() - start) * speed``: ``speed = 10`` plays a 60 s scenario in 6 s
(tests use that), and intervals shrink with it. The loop sleeps until the simulation's next
deadline, so an idle simulator costs nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from simulators.ble.bluez import Advert, MockBluez
from simulators.ble.sensors import Advertisement, Simulation

Publish = Callable[[Advertisement], None]


class BluezPublisher:
    """Turns adverts into BlueZ objects: the first advert of an address creates its Device1
    (``InterfacesAdded``), later ones update its properties (``PropertiesChanged``)."""

    def __init__(self, bluez: MockBluez) -> None:
        self.bluez = bluez
        self.sent = 0

    def __call__(self, advert: Advertisement) -> None:
        data = Advert(rssi=advert.rssi, service_data=advert.service_data, manufacturer_data={})
        if self.bluez.has_device(advert.address):
            self.bluez.advertise(advert.address, data)
        else:
            self.bluez.add_device(advert.address, advert.name, data)
        self.sent += 1


async def run_simulation(
    sim: Simulation,
    publish: Publish,
    *,
    speed: float = 1.0,
    until: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Play ``sim`` until cancelled, or until simulated time ``until`` has passed.

    ``publish`` is called synchronously for every advert; the BlueZ publisher makes one local
    D-Bus call (well under a millisecond), which is not worth a thread.
    """
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    start = clock()
    while True:
        now = (clock() - start) * speed
        for advert in sim.advance(now):
            publish(advert)
        if until is not None and now >= until:
            return
        deadline = sim.next_deadline()
        if until is not None:
            deadline = until if deadline is None else min(deadline, until)
        if deadline is None:
            await asyncio.Event().wait()  # nothing left to do: idle until cancelled
            return  # pragma: no cover
        await asyncio.sleep(max(0.0, (deadline - now) / speed))
