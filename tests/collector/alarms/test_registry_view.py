"""``Registry.view()``: copies as of the writer's last flush, so another thread (the API) never
sees a gateway half-changed or a change not yet written."""

from __future__ import annotations

from pathlib import Path

from collector.registry import Registry
from collector.risk import Assessment, Colour

NOW = 1_718_000_000_000


def test_the_view_shows_what_was_flushed_and_never_the_writers_objects(tmp_path: Path) -> None:
    r = Registry(tmp_path / "registry.sqlite")
    r.seen("gw-1", "north-1", NOW)
    r.set_site(Assessment("north-1", Colour.RED, ("fire_alarm: gw-1 x",)), NOW)
    assert r.view().gateways == {} and r.view().sites == {}  # not flushed yet
    r.flush()
    view = r.view()
    assert view.gateways["gw-1"].state == "online" and view.sites["north-1"].colour == "red"
    assert view.gateways["gw-1"] is not r.gateways["gw-1"]
    r.seen("gw-1", "north-1", NOW + 5)  # the writer changes its own object in place ...
    assert view.gateways["gw-1"].last_seen_ms == NOW  # ... not the copy handed out
    r.flush()
    assert r.view().gateways["gw-1"].last_seen_ms == NOW + 5
    r.close()
    assert Registry(tmp_path / "registry.sqlite").view().gateways["gw-1"].site == "north-1"
