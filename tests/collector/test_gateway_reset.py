"""A gateway whose outbox is new is not ignored (issue 14, part 1).

The real agent (Modbus and panel simulators, real Mosquitto) feeds an in-process collector
(SQLite store, a webhook receiver). The agent is stopped, its data directory deleted, and it is
started again with the same gateway id: its seqs start again at 1 under a new epoch. Before
epochs, the collector took every record of the new life for a repeat of the old one (0 stored,
fire alarms included); now the new life is stored, its fire alarm notified, and the reset is
visible in the metrics, the ledger and the store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from collector.ledger import SeqLedger
from protocols.wire import Event, EventType, Measurement
from tests.edge.agent_rig import agent, agent_config, until
from tests.edge.test_uplink_infra import Observer
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port
from tests.infra.simproc import simulator

from .conftest import config_data, running, stored_points, write_config
from .test_notify import SECRET, Receiver

GW = "gw-reset"

MODBUS = """
[modbus]
noise = 0.01
devices = [{ id = 1, profile = "pressure-a", initial = 0.35 }]
"""
PANEL = """
[panel]
events = [{ at = 2, action = "fire_alarm", component = "smoke-3F-east" }]
"""
DEVICES = """
[[modbus.device]]
unit = 1
name = "1F hydrant"
profile = "pressure-a"
interval_s = 0.2
"""


def readings(obs: Observer, epoch: int | None = None) -> set[int]:
    """Receive times of the readings the agent published (in ``epoch``, when given)."""
    return {r.receive_ms for b in obs.batches(GW) if epoch is None or b.epoch == epoch
            for r in b.records if isinstance(r, Measurement)}


def stored_times(store: Path) -> set[int]:
    return {p.time_ns // 1_000_000 for p in stored_points(store, "fg_value")
            if dict(p.tags).get("gateway") == GW}


async def test_an_agent_with_a_new_data_dir_is_stored_again(
        tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver()
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    cfg = write_config(tmp_path / "c.toml", config_data(
        tmp_path / "state", mosquitto,
        webhook=[{"url": receiver.url, "secret_env": "HOOK_SECRET", "retry_min_s": 0.05,
                  "retry_max_s": 0.3}]))
    modbus_site, panel_site = tmp_path / "modbus.toml", tmp_path / "panel.toml"
    modbus_site.write_text(MODBUS, encoding="utf-8")
    panel_site.write_text(PANEL, encoding="utf-8")
    obs = Observer(mosquitto.port)
    store = cfg.sink.sqlite_path
    try:
        with running(cfg) as c:
            async with simulator("modbus", "--tcp", f"127.0.0.1:{free_port()}", "--scenario",
                                 str(modbus_site)) as (_, address):
                host, port = address.rsplit(":", 1)
                # First life: no panel, readings only.
                config = agent_config(tmp_path, gw=GW, broker_port=mosquitto.port,
                                      modbus=(host, int(port)), devices=DEVICES)
                async with agent(config) as proc:
                    await until(lambda: len(stored_times(store)) >= 10, "the first life stored")
                    proc.terminate()
                    assert await proc.wait() == 0
                (first_epoch,) = {b.epoch for b in obs.batches(GW)}
                assert first_epoch != 0
                shutil.rmtree(tmp_path / "data")  # a replaced SD card: the outbox is new
                # Second life, same gateway id, and now a panel that reports a fire alarm.
                link = tmp_path / "panel-tty"
                async with simulator("panel", "--pty", "--link", str(link), "--scenario",
                                     str(panel_site), "--quiet"):
                    config = agent_config(tmp_path, gw=GW, broker_port=mosquitto.port,
                                          panel_port=link, modbus=(host, int(port)),
                                          devices=DEVICES)
                    async with agent(config) as proc:
                        await until(lambda: len({b.epoch for b in obs.batches(GW)}) == 2,
                                    "the second life at the broker")
                        (second_epoch,) = {b.epoch for b in obs.batches(GW)} - {first_epoch}
                        await until(lambda: len(readings(obs, second_epoch)) >= 20,
                                    "readings of the second life")
                        await until(lambda: any(
                            isinstance(r, Event) and r.type is EventType.FIRE_ALARM
                            for b in obs.batches(GW) for r in b.records), "the fire alarm", 40)
                        proc.terminate()
                        assert await proc.wait() == 0  # a clean stop drains the outbox
            after = readings(obs, second_epoch)
            assert min(r.seq for b in obs.batches(GW) if b.epoch == second_epoch
                       for r in b.records) == 1  # the new outbox starts again at 1
            await until(lambda: len(after & stored_times(store)) >= 0.95 * len(after),
                        "the second life stored")
            await until(lambda: any(b"fire_alarm" in body for _, body in receiver.requests),
                        "the fire alarm notified")
            assert c.metrics.gateway_resets.value() == 1
    finally:
        obs.close()
        receiver.close()
    assert after <= stored_times(store)  # in fact every reading of the second life
    ledger = SeqLedger(cfg.ledger_path)
    try:
        (reset,) = ledger.resets()
        assert (reset.gateway_id, reset.old_epoch, reset.new_epoch) == \
            (GW, first_epoch, second_epoch)
        assert reset.old_highest >= 10 and reset.old_missing == 0
        assert ledger.current_epoch(GW) == second_epoch
    finally:
        ledger.close()
    (point,) = stored_points(store, "fg_reset")
    assert dict(point.fields)["old_epoch"] == f"{first_epoch:016x}"
