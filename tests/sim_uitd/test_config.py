"""The ``[uitd_fleet]`` table: the sample loads, bad scenarios give errors naming the key, and
the printed ``[[gb26875.uitd]]`` list is what the collector's own validator accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collector.uitd.config import parse_gb26875, unknown_gateway_id
from common.config import ConfigError, Table
from protocols.gb26875 import address_from_int
from simulators.uitd import FleetSpec, identities, load_spec, parse_spec, uitd_entries
from simulators.uitd.config import NEVER, to_data

REPO = Path(__file__).resolve().parents[2]


def test_the_sample_loads_and_round_trips() -> None:
    spec = load_spec(REPO / "simulators/uitd/sample.toml")
    assert spec.uitds == 10 and spec.first_address == 0x000001000000
    assert spec.bursts[0].alarms == 2 and spec.drops[0].duration == 3.0
    assert parse_spec(to_data(spec)) == spec
    assert parse_spec(to_data(FleetSpec(check_post_answer=NEVER))).check_post_answer == NEVER


@pytest.mark.parametrize(("table", "message"), [
    ({"uitds": 0}, "uitd_fleet.uitds: must be at least 1, got 0"),
    ({"centre": "localhost"}, "uitd_fleet.centre: must be HOST:PORT (port 1-65535), got "
                              "'localhost'"),
    ({"profiles": ["standard", "hikvison"]}, "uitd_fleet.profiles[1]: must be one of"),
    ({"first_address": 2**48 - 2, "uitds": 5}, "uitd_fleet.first_address: 0xfffffffffffe + 5 "
                                               "UITDs runs past the 6-byte address range"),
    ({"confirm_timeout": 30}, "uitd_fleet.confirm_timeout: must be at most 10, got 30"),
    ({"bursts": [{"fraction": 0.5}]}, "uitd_fleet.bursts[0].at: is required"),
    ({"detectors": 2, "bursts": [{"at": 1, "alarms": 3}]},
     "uitd_fleet.bursts[0].alarms: must be at most detectors (2)"),
    ({"drops": [{"at": 1, "fraction": 0}]}, "uitd_fleet.drops[0].fraction: must be greater "
                                            "than 0, got 0"),
    ({"drops": [{"at": 1, "fraction": 0.5, "duratoin": 3}]},
     "uitd_fleet.drops[0].duratoin: unknown key; allowed here: at, duration, fraction"),
    ({"rate": "fast"}, "uitd_fleet.rate: must be a number, got a string"),
    ({"check_post_answer": "later"}, "uitd_fleet.check_post_answer: must be seconds or "
                                     "\"never\", got 'later'"),
    ({"reconnect_min": 5, "reconnect_max": 1}, "uitd_fleet.reconnect_max: must be at least "
                                               "reconnect_min (5)"),
    ({"uitd": 3}, "uitd_fleet.uitd: unknown key; allowed here:"),
    ({"faults": {"garbage": 2}}, "uitd_fleet.faults.garbage: must be at most 1, got 2"),
    ({"faults": {"noise": 0.1}}, "uitd_fleet.faults.noise: unknown key; allowed here:"),
])
def test_bad_scenarios_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec(table)
    assert str(err.value).startswith(message), str(err.value)


def test_a_bad_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[uitd_fleet]\nuitds = -3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"site\.toml: uitd_fleet\.uitds: must be at least 1"):
        load_spec(path)
    path.write_text("[uitd_fleet\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_spec(path)


def test_addresses_derive_from_the_index_and_the_collector_takes_the_list() -> None:
    spec = parse_spec({"uitds": 5, "first_address": 0x0379, "uitds_per_site": 2,
                       "profiles": ["standard", "hikvision"]})
    ids = identities(spec)
    assert [u.address for u in ids] == [0x0379 + i for i in range(5)]
    assert [u.site for u in ids] == ["uitd-site-00001"] * 2 + ["uitd-site-00002"] * 2 + [
        "uitd-site-00003"]
    centre = parse_gb26875(Table({"gb26875": {"listen": "127.0.0.1:0",
                                              "uitd": uitd_entries(spec)}}).table("gb26875"))
    assert centre is not None and len(centre.uitds) == 5
    for u in ids:  # the collector finds each UITD by the raw bytes its frames carry
        raw = address_from_int(u.address, u.profile.address_byte_order)
        entry = centre.lookup(raw)
        assert entry is not None and entry.gateway == u.gateway == unknown_gateway_id(u.address)
        assert entry.profile.name == u.profile.name
