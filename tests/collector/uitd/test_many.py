"""Many UITDs at once on one centre (real TCP, real store): every upload of every UITD is
stored once and confirmed, each UITD's records numbered 1..n in order, while a misbehaving
link (garbage) and a silent half-open one sit beside them."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from collector.uitd import centre as centre_module
from protocols.gb26875 import Command, Frame, Session, StreamDecoder, address_from_int
from tests.collector.conftest import async_wait_until, stored_records
from tests.infra.mosquitto import Mosquitto

from .fake_uitd import fire_alarm
from .helpers import centre

UITDS = 150
UPLOADS = 4
BASE = 0x0000_1000_0000


async def _uitd(port: int, address: int, uploads: int = UPLOADS) -> list[int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session = Session(address_from_int(address), bytes(6))
    decoder = StreamDecoder()
    confirmed = []
    for i in range(uploads):
        raw = session.send(Command.SEND_DATA, fire_alarm(i + 1, active=True, second=i),
                           time.monotonic())
        writer.write(raw)
        serial = raw[2] | raw[3] << 8
        while True:
            data = await asyncio.wait_for(reader.read(4096), 60)
            assert data, "closed by the centre"
            frames = [f for f in decoder.feed(data) if isinstance(f, Frame)]
            if any(f.command == Command.CONFIRM and f.serial == serial for f in frames):
                confirmed.append(serial)
                break
    writer.close()
    return confirmed


async def test_many_uitds_at_once_each_stored_once_in_order(mosquitto: Mosquitto,
                                                            tmp_path: Path) -> None:
    with centre(tmp_path, mosquitto, accept_unknown=True) as (_, ctr, _):
        port = ctr.port or 0
        _, junk = await asyncio.open_connection("127.0.0.1", port)
        junk.write(b"\x00@@##" * 4000)  # garbage: closed, alone
        _, half = await asyncio.open_connection("127.0.0.1", port)
        half.write(b"@@\x00\x00")  # half a header, then silence
        results = await asyncio.gather(*(_uitd(port, BASE + i) for i in range(UITDS)))
        assert all(len(r) == UPLOADS for r in results)
        have = stored_records(tmp_path / "store.sqlite")
        assert len(have) == UITDS
        for gw, seqs in have.items():
            assert gw.startswith("uitd-0000100")
            assert seqs == Counter(range(1, UPLOADS + 1)), (gw, seqs)
        assert ctr.counters["closed_garbage"] == 1
        junk.close()
        half.close()


async def test_a_full_writer_queue_holds_uploads_until_the_store_is_back(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The store is down while 150 UITDs upload: more items than the writer's queue holds
    (128) wait in the centre (one drain timer), nothing is confirmed, and once the store is
    back every upload is stored once and confirmed - in groups larger than
    ``group_max_messages``, taking from the centre's queue too (adaptive grouping)."""
    with centre(tmp_path, mosquitto, accept_unknown=True) as (_, ctr, sink):
        sink.down = True
        tasks = [asyncio.create_task(_uitd(ctr.port or 0, BASE + i)) for i in range(UITDS)]
        await async_wait_until(lambda: ctr.counters["writer_full"] > 0,
                               "the writer's queue full")
        assert ctr.counters["confirmed"] == 0
        sink.down = False
        results = await asyncio.gather(*tasks)
        assert all(len(r) == UPLOADS for r in results)
        have = stored_records(tmp_path / "store.sqlite")
        assert len(have) == UITDS
        assert all(seqs == Counter(range(1, UPLOADS + 1)) for seqs in have.values())
        # Adaptive grouping: what waited (the writer's queue and the centre's own) went
        # into groups larger than group_max_messages (64), one store write each
        assert max(sink.event_gateways) > 64, sink.event_gateways
        assert ctr.taken_by_writer > 0  # ... the centre's taken by the writer directly


async def test_the_state_file_built_in_steps_lists_every_uitd(
        mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``uitd.json`` is built a few UITDs per loop callback (10,000 UITDs must not hold the
    loop): with 4 per step, 30 UITDs take 8 steps and the file still lists every one, as
    JSON; the last file, written on the way out, says the centre stopped."""
    monkeypatch.setattr(centre_module, "STATE_ROWS_PER_STEP", 4)
    path = tmp_path / "c1" / "uitd.json"
    n = 30
    with centre(tmp_path, mosquitto, accept_unknown=True) as (_, ctr, _):
        await asyncio.gather(*(_uitd(ctr.port or 0, BASE + i, uploads=1) for i in range(n)))

        def listed() -> set[str]:
            try:
                body = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return set()
            return {row["gateway"] for row in body["uitds"] if row["next_seq"] == 2}

        await async_wait_until(lambda: len(listed()) == n, "every UITD in uitd.json")
        body = json.loads(path.read_text(encoding="utf-8"))
        assert body["running"] is True and body["counters"]["confirmed"] >= n
    assert json.loads(path.read_text(encoding="utf-8"))["running"] is False
