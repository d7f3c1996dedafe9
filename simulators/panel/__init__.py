"""A simulated fire panel UITD (用户信息传输装置) speaking GB/T 26875.3 over serial or TCP.

It stands in for the field device so the edge agent, installers' bench tests and CI can run
against it: scripted fire alarms, faults, operator actions and analog values are uploaded as a
real UITD uploads them (with confirms and resends per §6.5), reads and controls from the centre
are answered from a consistent state model, and faults of the line and of quirky devices can be
injected. Layers: :mod:`.model` (the building's state, pure), :mod:`.scenario` (the ``[panel]``
TOML table) and :mod:`.timeline` (its events), :mod:`.engine` (the UITD, sans-I/O, on the
codec's ``Session``), :mod:`.faults`, :mod:`.reads` (answers to the centre's reads),
:mod:`.ledger` (the upload ledger), :mod:`.link` (pty, serial, TCP, pacing) and :mod:`.runner`
(asyncio).
"""

from .clock import ManualClock, PanelClock, ScaledClock
from .engine import UitdEngine
from .faults import FaultSettings, Transmission
from .ledger import LedgerEntry, Status, UploadLedger
from .link import (
    Pacer,
    PtyTransport,
    SerialTransport,
    TcpConnectTransport,
    TcpListenTransport,
)
from .model import ComponentSpec, PanelModel, SystemSpec, UitdSpec
from .runner import Panel
from .scenario import PanelSpec, load_scenario, parse_scenario
from .timeline import ACTIONS, TimelineEvent

__all__ = [
    "ACTIONS", "ComponentSpec", "FaultSettings", "LedgerEntry", "ManualClock", "Pacer", "Panel",
    "PanelClock", "PanelModel", "PanelSpec", "PtyTransport", "ScaledClock", "SerialTransport",
    "Status", "SystemSpec", "TcpConnectTransport", "TcpListenTransport", "TimelineEvent",
    "Transmission", "UitdEngine", "UitdSpec", "UploadLedger", "load_scenario", "parse_scenario",
]
