"""Delivered means stored, on the node (docs/wire-protocol.md "Stored", issue 18): the firmware
keeps a record after the broker's PUBACK until the collector's ``stored`` confirmation of its
epoch names it, sends again what stays unconfirmed past ``confirm_timeout_s`` (and everything
unconfirmed after a reboot), and answers ``resend``.

Real MicroPython (``-X heapsize=100K``), a real Mosquitto with the provisioned ACL, the Modbus
simulator over TCP as the record source, and the paho collector of helpers.py, here told when
to confirm. What the node holds is read from its flash (``ring_held``); its counters from its
health reports.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from protocols.wire import Channel, topic
from tests.infra.simproc import simulator

from .helpers import (
    SCENARIO,
    Collector,
    Node,
    ProvisionedBroker,
    bus_toml,
    make_node,
    ring_held,
)


@asynccontextmanager
async def running(tmp_path: Path, fw_build: Path, broker: ProvisionedBroker,
                  timeout_s: float, delete_on: str = "stored"
                  ) -> AsyncIterator[tuple[Node, Collector]]:
    """A node with ``confirm_timeout_s = timeout_s`` and a collector that does not confirm
    until told to."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO.replace("{events}", ""))
    async with simulator("modbus", "--tcp", "127.0.0.1:0", "--scenario", str(scenario)) as (
            _sim, address):
        node, prov = make_node(tmp_path, fw_build, broker, bus_toml(address),
                               mqtt_keys={"confirm_timeout_s": timeout_s,
                                          "delete_on": delete_on})
        broker.start()
        col = Collector(broker, prov.credentials.gateway_id, confirming=False)
        try:
            node.start()
            yield node, col
            assert not col.errors, col.errors[:3]
            assert "MemoryError" not in node.log()
        except BaseException:
            print("node output:\n" + node.log()[-5000:])
            raise
        finally:
            node.kill()
            col.close()


def counter(col: Collector, name: str) -> int:
    """The node's ``uplink`` counter ``name`` in its latest health report (0 before any)."""
    if not col.raw_health:
        return 0
    return int(col.raw_health[-1].get("counters", {}).get("uplink", {}).get(name, 0))


def seen(col: Collector) -> set[int]:
    return set(col.records())


def held(node: Node) -> set[int]:
    return ring_held(node.dir / "ring")


def copies(col: Collector) -> dict[int, int]:
    return {seq: len(rs) for seq, rs in col.records().items()}


def stored_payload(gw: str, seqs: list[int], ep: str | None, **extra: Any) -> bytes:
    d: dict[str, Any] = {"v": 1, "gw": gw}
    if ep is not None:
        d["ep"] = ep
    d.update(seqs=[[s, s] for s in seqs], ts=int(time.time() * 1000), **extra)
    return json.dumps(d).encode()


async def test_unconfirmed_records_stay_are_resent_and_leave_only_when_confirmed(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    async with running(tmp_path, fw_build, broker, timeout_s=2.0) as (node, col):
        wait = col.wait
        gw = col.gateway
        wait(lambda: len(seen(col)) >= 40, "40 records at the collector")
        epoch = col.batches[0].epoch
        first = sorted(seen(col))[:40]
        # PUBACKed, not confirmed: every one is still on the node's flash
        assert set(first) <= held(node)
        # ... and sent again once the confirm timeout has passed
        wait(lambda: all(copies(col)[s] >= 2 for s in first[:10]), "the first records resent")
        wait(lambda: counter(col, "unconfirmed_resent") >= 10, "the resends counted")

        # A confirmation deletes exactly its seqs (here every other one of the first 40).
        chosen, others = first[::2], first[1::2]
        col.confirm(chosen, epoch)
        wait(lambda: not set(chosen) & held(node), "the confirmed records deleted")
        assert set(others) <= held(node)
        wait(lambda: counter(col, "confirmed") >= len(chosen), "the confirmations counted")
        assert counter(col, "confirmed") == len(chosen)

        # Another epoch, no epoch (0), another gateway's, a broken one, one larger than the
        # node's buffer (batch_max_bytes): none deletes anything; each is counted.
        where = topic(gw, Channel.STORED)
        other_epoch = f"{(epoch + 1) % 2**63 or 1:016x}"
        for payload in (stored_payload(gw, others, other_epoch),
                        stored_payload(gw, others, None),
                        stored_payload("someone-else", others, f"{epoch:016x}"),
                        stored_payload(gw, others, f"{epoch:016x}")[:-1],
                        stored_payload(gw, others, f"{epoch:016x}", x_pad="x" * 5000)):
            col.client.publish(where, payload, qos=1)
        wait(lambda: counter(col, "stored_other_epoch") == 2 and counter(col, "stored_bad") == 2
             and counter(col, "stored_too_large") == 1, "the refused confirmations counted")
        assert set(others) <= held(node)
        assert counter(col, "confirmed") == len(chosen)

        # The collector confirms from now on: the resends are confirmed, the ring empties.
        col.confirming = True
        upto = max(seen(col))
        wait(lambda: not {s for s in held(node) if s <= upto}, "every record up to then gone")


async def test_a_reboot_resends_what_was_unconfirmed_and_resend_is_answered(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    # A long timeout: nothing is resent for it during this test.
    async with running(tmp_path, fw_build, broker, timeout_s=600.0) as (node, col):
        wait = col.wait
        wait(lambda: len(seen(col)) >= 30, "30 records at the collector")
        before = sorted(seen(col))
        assert all(n == 1 for n in copies(col).values())
        node.kill()  # a power cut: which records were sent is lost with the RAM
        node.start()
        wait(lambda: all(copies(col).get(s, 0) >= 2 for s in before),
             "every record sent before the power cut, sent again")
        epoch = col.batches[0].epoch
        assert {b.epoch for b in col.batches} == {epoch}  # the same ring, the same epoch

        # resend: what is held is queued again, what is not is named missing.
        confirmed = before[5:10]
        col.confirm(confirmed, epoch)
        wait(lambda: not set(confirmed) & held(node), "five records confirmed")
        ask_first, ask_last = before[0], before[14]
        asked = list(range(ask_first, ask_last + 1))
        holding = held(node)
        still = [s for s in asked if s in holding]
        again = copies(col)
        now = int(time.time() * 1000)
        for cid, args in (("r-1", {"ep": f"{epoch:016x}", "first": ask_first,
                                   "last": ask_last}),
                          ("r-2", {"first": ask_first, "last": ask_last}),  # epoch 0
                          ("r-3", {"ep": f"{epoch:016x}", "first": 5, "last": 2})):
            col.client.publish(topic(col.gateway, Channel.CMD), json.dumps(
                {"v": 1, "id": cid, "cmd": "resend", "ts": now, "args": args}), qos=1)
        wait(lambda: len(col.acks) >= 3, "three acks")
        acks = {a.id: a for a in col.acks}
        assert acks["r-1"].ok and acks["r-1"].result is not None
        assert acks["r-1"].result["resent"] == len(still)
        pairs = cast(list[list[int]], acks["r-1"].result["missing"])
        missing = {s for a, b in pairs for s in range(a, b + 1)}
        assert missing == set(asked) - set(still)
        assert set(confirmed) <= missing
        assert acks["r-2"].ok and acks["r-2"].result == {"resent": 0,
                                                         "missing": [[ask_first, ask_last]]}
        assert not acks["r-3"].ok and "first" in str(acks["r-3"].error)
        wait(lambda: all(copies(col)[s] > again[s] for s in still),
             "the held records of the range sent again")


async def test_with_delete_on_puback_the_puback_deletes(
        tmp_path: Path, fw_build: Path, broker: ProvisionedBroker) -> None:
    """``mqtt.delete_on = "puback"``: a broker without a firegate collector; nobody confirms,
    and what the broker acknowledged leaves the ring, as before confirmations existed."""
    async with running(tmp_path, fw_build, broker, timeout_s=1.0, delete_on="puback") as (
            node, col):
        col.wait(lambda: len(seen(col)) >= 30, "30 records at the collector")
        first = sorted(seen(col))[:30]
        col.wait(lambda: not set(first) & held(node), "the acknowledged records deleted")
        col.wait(lambda: bool(col.raw_health), "a health report")
        assert counter(col, "unconfirmed_resent") == 0 and counter(col, "stored") == 0
