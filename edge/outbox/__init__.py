"""The edge agent's power-safe outbox: SQLite (WAL, synchronous=FULL) with group commit.

Drivers ``append`` records and get them back numbered once durable; the uplink takes
``next_batch``, publishes, ``mark_sent``s after the PUBACK (or ``nack``s / ``release_all``s)
and deletes with ``confirm`` when the collector says it stored them (``ack`` deletes at the
PUBACK instead, for a broker without a firegate collector). See docs/outbox.md for the
guarantees, the eviction policy and the schema::

    async with Outbox(OutboxConfig(Path("/var/lib/firegate/outbox.db"))) as outbox:
        numbered = await outbox.append([event])          # durable, seqs assigned
        batch = await outbox.next_batch()                 # fire alarms first
        payload = encode_batch_from_encoded(gw, site, now_ms, [r.encoded for r in batch],
                                            epoch=outbox.epoch)
        ...publish, await PUBACK...
        outbox.mark_sent(r.seq for r in batch)            # stored, awaiting confirmation
        ...a stored message arrives...
        await outbox.confirm(stored.epoch, stored.ranges) # deleted
"""

from .config import DEFAULT_MAX_AGE_S, OutboxConfig
from .errors import (
    ErrorReason,
    OutboxClosed,
    OutboxCorrupt,
    OutboxError,
    OutboxFull,
    OutboxLocked,
)
from .model import BATCH_HEAD_MAX, OutboxStats, Resent, StoredRecord
from .outbox import Outbox

__all__ = [
    "BATCH_HEAD_MAX",
    "DEFAULT_MAX_AGE_S",
    "ErrorReason",
    "Outbox",
    "OutboxClosed",
    "OutboxConfig",
    "OutboxCorrupt",
    "OutboxError",
    "OutboxFull",
    "OutboxLocked",
    "OutboxStats",
    "Resent",
    "StoredRecord",
]
