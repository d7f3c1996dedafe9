"""``python -m collector`` (the ``firegate collector run`` process) with ``[gb26875]``: the
centre runs as a named task of the collector's TaskGroup, takes a UITD's fire alarm, stores it
before confirming it, and stops with SIGTERM like the rest."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from tests.collector.conftest import CollectorProcess, config_data, wait_until
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port, wait_listening

from .fake_uitd import FakeUitd, fire_alarm
from .helpers import ADDRESS, GATEWAY, confirm_for, events, gb_section


def test_the_collector_process_serves_uitds(mosquitto: Mosquitto, tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "store.sqlite"
    data = config_data(tmp_path / "state", mosquitto,
                       gb26875=gb_section(listen=f"127.0.0.1:{port}"),
                       store={"sqlite": str(store), "retention_days": 0})
    path = tmp_path / "collector.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    proc = CollectorProcess(path).start()
    try:
        wait_listening(port, 30)
        uitd = FakeUitd(port, ADDRESS)
        raw = uitd.upload(fire_alarm())
        assert confirm_for(uitd, raw)
        assert [e["gateway"] for e in events(store, "fire_alarm")] == [GATEWAY]
        wait_until((tmp_path / "state" / "uitd.json").exists, "uitd.json")
        assert proc.stop() == 0
        assert uitd.wait_closed(), "the link outlived the collector"
        uitd.close()
    finally:
        proc.kill()
