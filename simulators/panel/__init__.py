"""A simulated fire panel UITD (用户信息传输装置) speaking GB/T 26875.3 over serial or TCP.

It stands in for the field device so the edge agent, installers' bench tests and CI can run
against it: scripted fire alarms, faults, operator actions and analog values are uploaded as a
real UITD uploads them (with confirms and resends per §6.5), reads and controls from the centre
are answered from a consistent state model, and faults of the line and of quirky devices can be
injected. Layers: :mod:`.model` (the building's state, pure), :mod:`.scenario` (the ``[panel]``
TOML table), :mod:`.engine` (the UITD, sans-I/O, on the codec's ``Session``), :mod:`.faults`,
:mod:`.reads` (answers to the centre's reads), :mod:`.ledger`, :mod:`.link` (pty, serial, TCP,
pacing) and :mod:`.runner` (asyncio).
"""

from .clock import ManualClock, PanelClock, ScaledClock
from .engine import UitdEngine
from .faults import FaultSettings, Transmission
from .ledger import Ledger, LedgerEntry, Status
from .link import (
    Pacer,
    PtyTransport,
    SerialTransport,
    TcpConnectTransport,
    TcpListenTransport,
)
from .model import ComponentSpec, PanelModel, SystemSpec, UitdSpec
from .runner import Panel
from .scenario import ACTIONS, Event, PanelConfig, ScenarioError, load_scenario, parse_scenario

__all__ = [
    "ACTIONS", "ComponentSpec", "Event", "FaultSettings", "Ledger", "LedgerEntry", "ManualClock",
    "Pacer", "Panel", "PanelClock", "PanelConfig", "PanelModel", "PtyTransport", "ScaledClock",
    "ScenarioError", "SerialTransport", "Status", "SystemSpec", "TcpConnectTransport",
    "TcpListenTransport", "Transmission", "UitdEngine", "UitdSpec", "load_scenario",
    "parse_scenario",
]
