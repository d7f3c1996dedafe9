"""A fleet of simulated UITDs (用户信息传输装置) dialing one GB/T 26875.3 monitoring centre.

``firegate sim uitd-fleet`` stands in for thousands of field UITDs in the centre's load tests
and benchmarks: each UITD is the panel simulator's sans-I/O engine
(:class:`~simulators.panel.engine.UitdEngine`: uploads, confirms, resends per §6.5, answers to
the centre's reads and controls) on one TCP connection, all on one asyncio loop. Layers:
:mod:`.config` (the ``[uitd_fleet]`` table, addresses by index), :mod:`.device` (one UITD's
asyncio shell), :mod:`.ledger` (counters, confirm latency, fire alarm ground truth) and
:mod:`.runner` (the fleet: ramp, load, bursts, drops, drain).
"""

from .config import (
    Burst,
    Drop,
    FleetSpec,
    UitdIdentity,
    identities,
    load_spec,
    parse_spec,
    uitd_entries,
)
from .device import SimUitd
from .ledger import FireAlarm, FleetLedger, FleetReport
from .runner import FleetError, Progress, UitdFleet, panel_spec, raise_nofile, run_fleet

__all__ = [
    "Burst", "Drop", "FireAlarm", "FleetError", "FleetLedger", "FleetReport", "FleetSpec",
    "Progress", "SimUitd", "UitdFleet", "UitdIdentity", "identities", "load_spec",
    "panel_spec", "parse_spec", "raise_nofile", "run_fleet", "uitd_entries",
]
