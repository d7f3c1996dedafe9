"""The edge agent's power-safe outbox: SQLite (WAL, synchronous=FULL) with group commit.

Drivers ``append`` records and get them back numbered once durable; the uplink takes
``next_batch``, publishes, and ``ack``s after the PUBACK (or ``nack``s / ``release_all``s).
See docs/outbox.md for the guarantees, the eviction policy and the schema::

    async with Outbox(OutboxConfig(Path("/var/lib/firegate/outbox.db"))) as outbox:
        numbered = await outbox.append([event])          # durable, seqs assigned
        batch = await outbox.next_batch()                 # fire alarms first
        payload = encode_batch_from_encoded(gw, site, now_ms, [r.encoded for r in batch])
        ...publish, await PUBACK...
        await outbox.ack(r.seq for r in batch)
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
from .model import BATCH_HEAD_MAX, OutboxStats, StoredRecord
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
    "StoredRecord",
]
