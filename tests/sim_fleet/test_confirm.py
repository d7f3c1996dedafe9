"""Delivered means stored (docs/wire-protocol.md, "Stored"; issue 18) in the fleet: a virtual
gateway keeps a record after the broker's PUBACK until a collector's confirmation of its epoch
names it, and sends it again when none came within its confirm timeout. Against a real
Mosquitto, with the subscriber of helpers.py playing the collector."""

from __future__ import annotations

from collections import Counter

import pytest

from simulators.fleet import FleetConfig, run_fleet
from tests.infra.mosquitto import Mosquitto

from .helpers import Collector, assert_nothing_lost


def url(broker: Mosquitto) -> str:
    return f"mqtt://127.0.0.1:{broker.port}"


async def test_a_record_goes_only_when_confirmed_and_is_resent_until_it_is(
        mosquitto: Mosquitto) -> None:
    """The subscriber confirms a record only at its second arrival: every first copy stays
    unconfirmed, times out, is sent again and then confirmed."""
    config = FleetConfig(broker=url(mosquitto), gateways=4, records=800, rate=200,
                         batch_interval=0.1, max_batch=50, confirm_timeout=0.5,
                         health_interval=0.5, seed=4, keep_records=True)
    with Collector(mosquitto.port, confirm_after=2) as sub:
        report = await run_fleet(config)
        await sub.wait_for_all(report)
    assert report.ok, report.to_json()["errors"]
    assert_nothing_lost(report, sub, values=True)
    assert report.acked == report.confirmed == report.delivered == report.produced == 800
    for gw, ledger in report.gateways.items():
        produced = set(ledger.produced)
        assert set(ledger.confirmed) == set(ledger.acked) == produced
        assert ledger.timeouts == len(produced) and set(ledger.resent) == produced
        assert Counter(a.record.seq for a in sub.records[gw]) == dict.fromkeys(produced, 2)
        assert ledger.confirmations > 0 and ledger.other_epoch == 0
        # one epoch per gateway, in every batch and health message
        assert sub.epochs[gw] == {ledger.epoch} and ledger.epoch > 0
        assert sub.health[gw] and {h.epoch for h in sub.health[gw]} == {ledger.epoch}
    assert len({g.epoch for g in report.gateways.values()}) == 4


@pytest.mark.parametrize("collector", ["silent", "another epoch"])
async def test_without_a_confirmation_of_its_epoch_a_gateway_deletes_nothing(
        mosquitto: Mosquitto, collector: str) -> None:
    """A subscriber that confirms nothing, or only in another epoch: the broker acknowledged
    every record, none may be deleted; they are sent again and again until the drain gives up.
    With the old deletion point (PUBACK) the same run is complete."""
    config = FleetConfig(broker=url(mosquitto), gateways=3, records=300, rate=150,
                         batch_interval=0.1, confirm_timeout=0.3, drain_timeout=1.5, seed=6)
    if collector == "silent":
        sub = Collector(mosquitto.port, confirming=False)
    else:
        sub = Collector(mosquitto.port, epoch_shift=1)
    with sub:
        report = await run_fleet(config)
        await sub.wait_for_all(report)
    assert not report.ok and report.acked == report.produced == 300
    assert report.confirmed == report.delivered == 0
    assert report.to_json()["errors"] == {"drain timed out after 1.5 s": 3}
    for ledger in report.gateways.values():
        assert set(ledger.missing) == set(ledger.unconfirmed) == set(ledger.produced)
        assert ledger.timeouts > 0 and ledger.resent and ledger.confirmations == 0
        if collector == "another epoch":
            assert ledger.other_epoch > 0
    with Collector(mosquitto.port, confirming=False) as sub:
        old = await run_fleet(FleetConfig(broker=url(mosquitto), gateways=3, records=300,
                                          rate=150, batch_interval=0.1, seed=6,
                                          delete_on="puback"))
        await sub.wait_for_all(old)
    assert old.ok and old.acked == old.delivered == 300 and old.confirmed == 0
    assert all(g.timeouts == 0 and not g.resent for g in old.gateways.values())
