"""Helpers of the centre's tests: a real collector (real Mosquitto, the embedded store behind
a switch) with ``[gb26875]`` on a free loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from collector.app import Collector
from collector.config import load_config
from collector.points import Point, Storable
from collector.sinks.base import SinkError
from collector.sinks.sqlite import SqliteSink
from collector.uitd.centre import Centre
from protocols.gb26875 import Command
from tests.collector.conftest import config_data, stored_points
from tests.infra.mosquitto import Mosquitto

from .fake_uitd import FakeUitd

ADDRESS = 0x000000000379
GATEWAY = "hz-xihu-0042-uitd"
SITE = "hz-xihu-0042"


class SwitchSink(SqliteSink):
    """The embedded store with a switch: while ``down``, every write fails as an outage."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.down = False
        self.failed = 0
        self.event_gateways: list[int] = []
        """Per successful write: how many gateways' ``fg_event`` points it held."""

    def write(self, points: Sequence[Storable]) -> None:
        if self.down:
            self.failed += 1
            raise SinkError("store down (test)")
        super().write(points)
        self.event_gateways.append(len({p.tag("gateway") for p in points
                                        if isinstance(p, Point) and
                                        p.measurement == "fg_event"}))


def gb_section(**over: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "listen": "127.0.0.1:0", "silence_timeout_s": 90.0,
        "uitd": [{"address": f"0x{ADDRESS:012x}", "gateway": GATEWAY, "site": SITE}],
    }
    section.update(over)
    return section


@contextlib.contextmanager
def centre(tmp_path: Path, broker: Mosquitto, name: str = "c1", *,
           sections: dict[str, Any] | None = None, **gb: Any
           ) -> Iterator[tuple[Collector, Centre, SwitchSink]]:
    """A collector named ``name`` (state ``tmp_path/name``) sharing ``tmp_path/store.sqlite``;
    ``gb`` overrides ``[gb26875]`` keys, ``sections`` adds top-level ones (``http``...)."""
    state = tmp_path / name
    data = config_data(state, broker, collector={"id": name}, gb26875=gb_section(**gb),
                       store={"sqlite": str(tmp_path / "store.sqlite"), "retention_days": 0},
                       **(sections or {}))
    path = tmp_path / f"{name}.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")  # arrays of tables inside a table
    cfg = load_config(path)
    sink = SwitchSink(cfg.sink.sqlite_path)
    c = Collector(cfg, sink=sink).start()
    try:
        assert c.centre is not None and c.centre.port
        yield c, c.centre, sink
    finally:
        c.close()


def events(store: Path, kind: str | None = None) -> list[dict[str, Any]]:
    out = []
    for p in stored_points(store, "fg_event"):
        fields = dict(p.fields)
        row = {**dict(p.tags), **fields}
        if kind is None or row.get("type") == kind:
            out.append(row)
    return out


def confirm_for(uitd: FakeUitd, raw: bytes) -> bool:
    frame = uitd.next_frame()
    assert frame is not None, "no answer from the centre"
    return frame.command == Command.CONFIRM and frame.serial == (raw[2] | raw[3] << 8)
