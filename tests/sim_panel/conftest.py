"""Running the panel simulator on a real link for the conversation tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from simulators.panel import (
    ManualClock,
    Panel,
    PanelSpec,
    PtyTransport,
    TcpListenTransport,
    UitdEngine,
    UploadLedger,
)
from simulators.panel.clock import Clock
from simulators.panel.scenario import parse_scenario

from .helpers import START, Centre, pty_centre, tcp_centre


def panel_config(**panel: Any) -> PanelSpec:
    return parse_scenario({"start_time": START.isoformat(), **panel})


@contextlib.asynccontextmanager
async def running(config: PanelSpec, *, link: str = "pty", clock: Clock | None = None,
                  pace: int | None = None,
                  ledger: UploadLedger | None = None) -> AsyncIterator[tuple[Panel, Centre]]:
    """The simulator on a new pty (or TCP listening on a free port) with a centre on the other
    end. Without a clock: a manual one, so nothing happens until the test advances it."""
    engine = UitdEngine(config, ledger=ledger)
    transport = PtyTransport() if link == "pty" else TcpListenTransport("127.0.0.1", 0)
    cfg = engine.config
    async with Panel(engine, transport, clock or ManualClock(), pace=pace) as panel:
        opened = (pty_centre(panel.address, profile=cfg.profile) if link == "pty"
                  else tcp_centre(panel.address, profile=cfg.profile))
        async with opened as centre:
            if link != "pty":
                await panel.wait_until(lambda: engine.connected)
            yield panel, centre
