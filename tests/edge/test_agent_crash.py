"""``kill -9`` of the agent at random moments while the simulators keep producing.

Twenty rounds of: start ``firegate agent run``, let it work for a random while, SIGKILL it.
The panel simulator keeps raising and restoring faults over a pty (and resends what was not
confirmed), the Modbus simulator keeps answering, a real Mosquitto keeps the cloud's side.
Afterwards one clean run drains the outbox. Then:

* every sequence number the outbox ever assigned reached the broker or is still stored (none
  lost), and a seq seen twice carries the same record (so dropping by seq is exact);
* every upload the panel saw confirmed reached the broker as an event;
* the last state of each component at the broker is the panel's last state.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from pathlib import Path

from protocols.wire import Event, EventType, Record
from tests.infra.mosquitto import Mosquitto
from tests.infra.ports import free_port
from tests.infra.simproc import simulator

from .agent_rig import agent, agent_config, last_seq, stored_seqs, until
from .test_uplink_infra import Collector, Observer

GW = "gw-crash"
ROUNDS = 20
COMPONENTS = {"smoke-3F-east": 0x0BB9, "heat-3F-kitchen": 0x0BBA}
DEVICES = """
[[modbus.device]]
unit = 1
profile = "pressure-a"
interval_s = 0.1

[[modbus.device]]
unit = 2
profile = "level"
interval_s = 0.1
"""


def scenario(seconds: float) -> str:
    events = []
    for n, name in enumerate(COMPONENTS):
        t, k = 1.0 + 0.35 * n, 0
        while t < seconds:
            action = "fault" if k % 2 == 0 else "restore"
            events.append(f'{{ at = {t:.2f}, action = "{action}", component = "{name}" }}')
            t, k = t + 0.7, k + 1
    return ("[panel]\nevents = [\n  " + ",\n  ".join(events) + "\n]\n\n[modbus]\n"
            'devices = [{ id = 1, profile = "pressure-a" }, { id = 2, profile = "level" }]\n')


def confirmed_uploads(ledger: Path, event: str = "confirmed") -> list[tuple[int, bool]]:
    """(component address, fault active) of every component upload the panel saw confirmed
    (or, with ``event="sent"``, sent at least once)."""
    out = []
    for line in ledger.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("event") == event and entry.get("action") in ("fault", "restore"):
            match = re.search(r"0x([0-9a-f]{8}) \".*\" (\S+)$", entry["summary"])
            assert match, entry["summary"]
            out.append((int(match[1], 16), "fault" in match[2].split("+")))
    return out


async def test_kill_minus_9_twenty_times_loses_nothing(tmp_path: Path,
                                                       mosquitto: Mosquitto) -> None:
    site = tmp_path / "site.toml"
    site.write_text(scenario(400), encoding="utf-8")
    ledger = tmp_path / "ledger.jsonl"
    link = tmp_path / "panel-tty"
    obs = Observer(mosquitto.port, client_id="crash-observer", persistent=True)
    # Confirms what it stored, so the agent deletes it (and the drains below can end).
    collector = Collector(mosquitto.port, client_id="crash-collector", persistent=True)
    rng = random.Random(26875)
    kills = 0
    try:
        async with (
            simulator("panel", "--pty", "--link", str(link), "--scenario", str(site),
                      "--ledger", str(ledger), "--quiet", "--confirm-timeout", "2",
                      "--retries", "100"),
            simulator("modbus", "--tcp", f"127.0.0.1:{free_port()}", "--scenario", str(site))
            as (_, address),
        ):
            host, port = address.rsplit(":", 1)
            config = agent_config(tmp_path, gw=GW, broker_port=mosquitto.port, panel_port=link,
                                  modbus=(host, int(port)), devices=DEVICES)
            for _ in range(ROUNDS):
                async with agent(config) as proc:
                    await asyncio.sleep(rng.uniform(0.4, 3.0))
                    proc.kill()
                    await proc.wait()
                    kills += 1
            produced = len(confirmed_uploads(ledger))
            # One clean run while the panel still talks: it drains the outbox.
            async with agent(config):
                await until(lambda: stored_seqs(tmp_path) == [] and len(confirmed_uploads(ledger))
                            > produced, "a drained outbox and fresh uploads", 60)
        async with agent(config):  # the simulators are gone: it reports that, then drains
            await until(lambda: stored_seqs(tmp_path) == [], "a drained outbox", 60)
    finally:
        collector.close()
        obs.close()
    assert kills == ROUNDS

    last = last_seq(tmp_path)
    await until(lambda: set(obs.seqs(GW)) >= set(range(1, last + 1)) - set(stored_seqs(tmp_path)),
                "every seq at the broker", 30)
    seen: dict[int, Record] = {}
    for batch in obs.batches(GW):
        for r in batch.records:
            assert seen.setdefault(r.seq, r) == r, f"seq {r.seq} carried two different records"
    assert set(seen) | set(stored_seqs(tmp_path)) == set(range(1, last + 1))
    assert max(seen) == last and last > 500

    # Every confirmed upload is an event at the broker; the final states agree.
    confirmed = confirmed_uploads(ledger)
    faults = [e for e in sorted(seen.values(), key=lambda r: r.seq)
              if isinstance(e, Event) and e.type is EventType.FAULT
              and e.source.id.startswith("panel/1-1/") and "-0x" in e.source.id]
    at_broker = Counter((int(e.source.id.rsplit("0x", 1)[1], 16), e.active) for e in faults)
    for key, n in Counter(confirmed).items():
        assert at_broker[key] >= n, (key, at_broker[key], n)
    sent = confirmed_uploads(ledger, "sent")
    for component in COMPONENTS.values():
        mine = [active for a, active in confirmed if a == component]
        last_sent = [active for a, active in sent if a == component][-1]
        theirs = [e.active for e in faults if e.source.id.endswith(f"0x{component:08x}")]
        # The simulator may stop between the agent's confirm and its own log line: the last
        # upload stored can be one it sent but never saw confirmed.
        assert mine and theirs and theirs[-1] in (mine[-1], last_sent)

