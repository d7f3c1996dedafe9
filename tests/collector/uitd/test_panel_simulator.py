"""The panel simulator (``firegate sim panel``, a real subprocess) dials the collector's centre
as a UITD does in the field: its fire alarm is stored with the component's description, and
the centre's clock sync and check-post reach it, the operator's answer is stored."""

from __future__ import annotations

import json
from pathlib import Path

from collector.uitd.commands import check_post, clock_sync, run_command
from tests.collector.conftest import async_wait_until
from tests.infra.mosquitto import Mosquitto
from tests.infra.simproc import simulator

from .helpers import ADDRESS, GATEWAY, centre, events


def _ledger(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_the_panel_simulator_dials_the_centre(mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    ledger = tmp_path / "ledger.jsonl"
    assert ADDRESS == 0x0379  # the simulator's default UITD address
    with centre(tmp_path, mosquitto) as (_, ctr, _):
        async with simulator("panel", "--tcp-connect", f"127.0.0.1:{ctr.port}",
                             "--fire-alarm-at", "0.5", "--check-post-answer", "0.2",
                             "--ledger", str(ledger), first_line=("dialing ", "listening ")):
            await async_wait_until(lambda: len(events(store, "fire_alarm")) >= 1,
                                   "the simulator's fire alarm stored")
            fire = events(store, "fire_alarm")[0]
            assert fire["gateway"] == GATEWAY and fire["active"] is True
            assert fire["description"] == "3F 东侧走廊"  # the component's 部件说明
            await async_wait_until(
                lambda: any(e.get("event") == "confirmed" for e in _ledger(ledger)),
                "the simulator's ledger: an upload confirmed")
            out = await run_command(ctr, lambda: clock_sync(ctr, GATEWAY))
            assert out["confirmed"] is True
            out = await run_command(ctr, lambda: check_post(ctr, GATEWAY, 1))
            assert out["confirmed"] is True
            await async_wait_until(lambda: len(events(store, "check_post")) == 1,
                                   "the operator's answer to the check-post stored")
            seen = {e.get("event") for e in _ledger(ledger)}
            assert {"clock_synced", "check_post"} <= seen, seen
