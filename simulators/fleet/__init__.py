"""Gateway fleet simulator: many virtual firegate gateways in one process, for collector load
and soak tests (``firegate sim fleet``).

Each virtual gateway speaks the real wire contract (:mod:`protocols.wire`): its own client id,
a retained ``online`` status and the last will, QoS 1 record batches from ``pack_batches``
under its own random epoch, periodic ``health``. Records are a realistic mix (measurements,
alarm bursts), numbered per gateway from 1. Some gateways drop offline abruptly, keep producing,
and catch up on return, alarms first. Like the agent, a gateway keeps a record after its PUBACK
until a collector confirms it (``stored``), and sends it again if that takes longer than
``confirm_timeout``; ``delete_on="puback"`` deletes at the PUBACK instead. A ledger counts a
record as acked (PUBACK), confirmed (``stored``) and delivered (at the deletion point)::

    from simulators.fleet import FleetConfig, run_fleet

    report = await run_fleet(FleetConfig(broker="mqtt://127.0.0.1:1883", gateways=100,
                                         records=100_000, rate=50, seed=1))
    assert report.ok, report.lost()

paho is imported by :mod:`.runner` (through the gateways), not here, so the configuration,
the record mix and the ledger load without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import BrokerAddress, FleetConfig, parse_broker
from .ledger import Catchup, FleetReport, GatewayLedger
from .ranges import SeqRanges

if TYPE_CHECKING:
    from .runner import FleetError, Progress, run_fleet

__all__ = [
    "BrokerAddress",
    "Catchup",
    "FleetConfig",
    "FleetError",
    "FleetReport",
    "GatewayLedger",
    "Progress",
    "SeqRanges",
    "parse_broker",
    "run_fleet",
]


def __getattr__(name: str) -> Any:
    # The runner imports paho; load it only when it is asked for.
    if name in ("FleetError", "Progress", "run_fleet"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
