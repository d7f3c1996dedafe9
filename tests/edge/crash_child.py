"""The process the crash test kills: appends and deletes (``ack``, or ``mark_sent`` then
``confirm``) in a loop, reporting on stdout.

    python -m tests.edge.crash_child DB SEED

Lines (each written only after the call returned, i.e. after the commit):
``A s1 s2 ...`` appended and durable; ``P s1 ...`` about to be acked or confirmed (may or
may not be deleted when the kill comes); ``D s1 ...`` deleted. ``ready`` once open.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from edge.outbox import Outbox, OutboxConfig
from protocols.wire import Priority, seq_ranges

from .helpers import record


def say(tag: str, seqs: list[int]) -> None:
    sys.stdout.write(f"{tag} {' '.join(map(str, seqs))}\n")
    sys.stdout.flush()


async def main(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    config = OutboxConfig(path, commit_window_s=rng.choice([0.0, 0.002, 0.01]), reserve_bytes=0)
    async with Outbox(config) as outbox:
        say("ready", [])

        async def writer() -> None:
            i = 0
            while True:
                n = rng.randint(1, 40)
                records = [record(rng.choice(list(Priority)), i + j) for j in range(n)]
                i += n
                say("A", [r.seq for r in await outbox.append(records)])

        async def drainer() -> None:
            while True:
                await outbox.wait_for_records()
                batch = [r.seq for r in await outbox.next_batch(max_records=rng.randint(1, 200))]
                if rng.random() < 0.2:
                    outbox.nack(batch)
                    continue
                say("P", batch)
                if rng.random() < 0.5:  # delete_on = "puback"
                    await outbox.ack(batch)
                else:  # delete_on = "stored": sent (in memory), then the collector's word
                    outbox.mark_sent(batch)
                    await outbox.confirm(outbox.epoch, seq_ranges(batch))
                say("D", batch)

        await asyncio.gather(writer(), writer(), writer(), drainer())


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
