"""``[gb26875]``: the sample block parses, defaults are the documented ones, and every bad value
is refused with an error that names its key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from collector.config import ConfigError, parse_config
from collector.uitd.config import DEFAULT_FORWARD_EVENTS, unknown_gateway_id
from protocols.gb26875 import HIKVISION

EXAMPLE = Path(__file__).resolve().parents[3] / "collector" / "collector.example.toml"


def _example_block() -> dict[str, Any]:
    """The commented ``[gb26875]`` block of the sample, uncommented."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("# [gb26875]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        text = line[2:] if line.startswith("# ") else line[1:]
        if text.startswith("# ") or text.startswith("#"):
            continue  # an optional key, left commented in the sample
        block.append(text)
    return tomllib.loads("\n".join(block))


def test_the_sample_block_parses() -> None:
    gb = parse_config(_example_block()).gb26875
    assert gb is not None
    assert gb.listen_address == ("0.0.0.0", 9000)
    assert gb.silence_timeout_s == 90.0 and gb.max_connections == 20_000
    (uitd,) = gb.uitds
    assert (uitd.address, uitd.gateway, uitd.site) == (0x379, "hz-xihu-0042-uitd",
                                                       "hz-xihu-0042")
    assert gb.lookup(bytes.fromhex("790300000000")) is uitd
    (up,) = gb.upstreams
    assert (up.name, up.host, up.port, up.uitd_address) == ("city-centre",
                                                            "centre.example.gov.cn", 9000, 0x42)
    assert up.events == frozenset({"fire_alarm", "fault", "supervisory"})
    assert up.sites == ("hz-xihu-*",) and up.timeout_s == 10.0 and up.retries == 3


def test_defaults_and_absence() -> None:
    assert parse_config({}).gb26875 is None
    gb = parse_config({"gb26875": {}}).gb26875
    assert gb is not None and gb.listen == "0.0.0.0:9000" and not gb.accept_unknown
    assert gb.uitds == () and gb.upstreams == ()
    gb = parse_config({"gb26875": {"listen": "", "upstream": [
        {"connect": "h:9", "uitd_address": 1}]}}).gb26875
    assert gb is not None and gb.listen_address is None
    assert gb.upstreams[0].events == frozenset(DEFAULT_FORWARD_EVENTS)
    assert unknown_gateway_id(0x379) == "uitd-000000000379"


def test_a_big_endian_dialect_finds_its_uitd_by_the_written_address() -> None:
    gb = parse_config({"gb26875": {"uitd": [{"address": "0x000000000379", "gateway": "g",
                                              "site": "s", "profile": "hikvision"}]}}).gb26875
    assert gb is not None and gb.uitds[0].profile == HIKVISION
    assert gb.lookup(bytes.fromhex("000000000379")) is gb.uitds[0]
    assert gb.lookup(bytes.fromhex("790300000000")) is None


UITD = {"address": "0x000000000379", "gateway": "g1", "site": "s1"}


@pytest.mark.parametrize(("section", "key", "message"), [
    ({"listen": "9000"}, "gb26875.listen", "must be HOST:PORT"),
    ({"silence_timeout_s": 0}, "gb26875.silence_timeout_s", "at least 1"),
    ({"silence_timeout_s": 9000}, "gb26875.silence_timeout_s", "at most 7200"),
    ({"command_timeout_s": 11}, "gb26875.command_timeout_s", "at most 10"),
    ({"max_connections": 0}, "gb26875.max_connections", "at least 1"),
    ({"profile": "acme"}, "gb26875.profile", "must be one of"),
    ({"listne": "x"}, "gb26875.listne", "unknown key"),
    ({"uitd": [{**UITD, "address": "0x379"}]}, "gb26875.uitd[0].address", "12 hex digits"),
    ({"uitd": [{**UITD, "address": 1 << 48}]}, "gb26875.uitd[0].address", "below 2**48"),
    ({"uitd": [{**UITD, "address": True}]}, "gb26875.uitd[0].address", "boolean"),
    ({"uitd": [{**UITD, "gateway": "bad id!"}]}, "gb26875.uitd[0].gateway", "1-64 chars"),
    ({"uitd": [{"address": "0x000000000001", "gateway": "g"}]}, "gb26875.uitd[0].site",
     "is required"),
    ({"uitd": [UITD, {**UITD, "gateway": "g2"}]}, "gb26875.uitd[1].address", "already uitd[0]"),
    ({"uitd": [UITD, {**UITD, "address": "0x000000000002"}]}, "gb26875.uitd[1].gateway",
     "already uitd[0]"),
    ({"uitd": [{**UITD, "timezone": "Mars/../x y"}]}, "gb26875.uitd[0].timezone", "IANA"),
    ({"uitd": [{**UITD, "timezone": "Mars/Base"}]}, "gb26875.uitd[0].timezone", "unknown"),
    ({"upstream": [{"connect": "nohost", "uitd_address": 1}]}, "gb26875.upstream[0].connect",
     "HOST:PORT"),
    ({"upstream": [{"connect": "h:1"}]}, "gb26875.upstream[0].uitd_address", "is required"),
    ({"upstream": [{"connect": "h:1", "uitd_address": 1, "events": ["fire"]}]},
     "gb26875.upstream[0].events", "not an event type"),
    ({"upstream": [{"connect": "h:1", "uitd_address": 1, "sites": []}]},
     "gb26875.upstream[0].sites", "at least one"),
    ({"upstream": [{"connect": "h:1", "uitd_address": 1, "timeout_s": 30}]},
     "gb26875.upstream[0].timeout_s", "at most 10"),
    ({"upstream": [{"connect": "h:1", "uitd_address": 1, "reconnect_min_s": 9,
                    "reconnect_max_s": 2}]}, "gb26875.upstream[0].reconnect_max_s",
     "at least reconnect_min_s"),
    ({"upstream": [{"name": "a", "connect": "h:1", "uitd_address": 1},
                   {"name": "a", "connect": "h:2", "uitd_address": 2}]},
     "gb26875.upstream[1].name", "used twice"),
])
def test_bad_values_name_their_key(section: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"gb26875": section})
    assert info.value.key == key, str(info.value)
    assert message in info.value.message
