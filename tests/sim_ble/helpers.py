"""Helpers for the BLE simulator tests: bthome-ble decoding as the edge agent will do it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bthome_ble import BTHomeBluetoothDeviceData, SensorUpdate
from habluetooth import BluetoothServiceInfoBleak

from simulators.ble.bthome import SERVICE_UUID


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def service_info(address: str, service_data: bytes, *, rssi: int = -60,
                 name: str = "sim") -> BluetoothServiceInfoBleak:
    """What the agent will build from a bleak callback, for decoding without a bus."""
    device = BLEDevice(address, name, {})
    adv = AdvertisementData(local_name=name, manufacturer_data={},
                            service_data={SERVICE_UUID: service_data},
                            service_uuids=[SERVICE_UUID], tx_power=None, rssi=rssi,
                            platform_data=())
    return BluetoothServiceInfoBleak.from_scan("sim", device, adv, time.monotonic(), False)


def values(update: SensorUpdate) -> dict[str, Any]:
    """bthome-ble's update flattened to ``{"pressure": 1200.0, "door": True, ...}``."""
    out: dict[str, Any] = {k.key: v.native_value for k, v in update.entity_values.items()}
    out.update({k.key: v.native_value for k, v in update.binary_entity_values.items()})
    out.update({f"event:{k.key}": e.event_type for k, e in update.events.items()})
    return out


def decode(service_data: bytes, *, address: str = "A4:C1:38:00:00:01",
           key: bytes | None = None) -> dict[str, Any]:
    """Decode one advert with a fresh bthome-ble parser."""
    return values(BTHomeBluetoothDeviceData(key).update(service_info(address, service_data)))


@dataclass
class Seen:
    """Everything a bleak detection callback saw, in order."""

    adverts: list[tuple[BLEDevice, AdvertisementData]] = field(default_factory=list)

    def __call__(self, device: BLEDevice, adv: AdvertisementData) -> None:
        self.adverts.append((device, adv))

    def of(self, address: str) -> list[AdvertisementData]:
        return [adv for dev, adv in self.adverts if dev.address == address]

    def decoded(self, address: str, key: bytes | None = None
                ) -> tuple[BTHomeBluetoothDeviceData, list[dict[str, Any]]]:
        """Feed this address's adverts, in order, through one bthome-ble parser."""
        parser = BTHomeBluetoothDeviceData(key)
        history = []
        for dev, adv in self.adverts:
            if dev.address == address and SERVICE_UUID in adv.service_data:
                info = BluetoothServiceInfoBleak.from_scan("sim", dev, adv, time.monotonic(),
                                                           False)
                history.append(values(parser.update(info)))
        return parser, history
