"""Where the centre joins the collector's one pipeline: its items, and who acknowledges them.

A UITD's upload becomes a wire :class:`~protocols.wire.Batch` handed to the writer as a
:class:`~collector.ingest.Prepared` item, exactly like a batch that came over MQTT: the same
de-duplication, ledger, store, registry, risk colours, notifications. What differs is the
acknowledgement. The writer acknowledges a group through its ``acker`` once the group is stored
and committed; :class:`SplitAcker` sends the MQTT messages of the group to the broker as
before and, for the centre's items (:class:`UitdInbound`), calls their ``on_stored`` hook,
which sends the GB/T 26875.3 confirm on the UITD's connection (图3: confirm only what was
taken). No confirm ever leaves for an upload whose records are not stored.

``is_current`` is True for a centre item while the centre runs, even when its connection has
gone: its records are stored anyway, and the UITD's resend on a new connection is then known
as a duplicate (protocols.gb26875.session.DeliveryMemory) and confirmed at once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from collector.ingest import Inbound, Kind, Prepared
from collector.points import Storable
from protocols.wire import Batch, GatewayState, Priority, Record, Status

__all__ = ["SplitAcker", "UitdInbound", "batch_item", "centre_epoch", "status_item"]

TOPIC_PREFIX = "gb26875/"
"""The ``topic`` of a centre item (dead letters name it): ``gb26875/<gateway id>``."""


class Acknowledger(Protocol):
    def ack(self, items: Sequence[Inbound]) -> int: ...

    def is_current(self, item: Inbound) -> bool: ...


def _nothing() -> None:
    return None


@dataclass(slots=True)
class UitdInbound(Inbound):
    """An item the centre made (not an MQTT message): ``on_stored`` runs once it is stored
    and committed, on the writer's thread (it must only hand over to the centre's loop)."""

    on_stored: Callable[[], None] = field(default=_nothing)
    alive: Callable[[], bool] = field(default=lambda: True)
    confirm_over_mqtt: ClassVar[bool] = False
    """Confirmed on the UITD's link (图3), never by an MQTT ``stored`` message."""


class SplitAcker:
    """The writer's acknowledger: MQTT messages to the broker, centre items to the centre."""

    def __init__(self, mqtt: Acknowledger) -> None:
        self.mqtt = mqtt

    def ack(self, items: Sequence[Inbound]) -> int:
        mine = [i for i in items if isinstance(i, UitdInbound)]
        if not mine:
            return self.mqtt.ack(items)
        sent = self.mqtt.ack([i for i in items if not isinstance(i, UitdInbound)])
        for item in mine:
            item.on_stored()
        return sent + len(mine)

    def is_current(self, item: Inbound) -> bool:
        if isinstance(item, UitdInbound):
            return item.alive()
        return self.mqtt.is_current(item)


def centre_epoch(collector_id: str) -> int:
    """The epoch of the seqs this collector assigns to UITDs: one per collector, so that two
    collectors taking the same UITD in turn (behind a load balancer) keep separate streams in
    the shared store and never number two records alike (docs/gb26875-centre.md)."""
    digest = hashlib.sha256(b"firegate gb26875 centre\0" + collector_id.encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 1) or 1


def _inbound(gateway: str, payload: bytes, on_stored: Callable[[], None],
             alive: Callable[[], bool], received_ms: int) -> UitdInbound:
    return UitdInbound(TOPIC_PREFIX + gateway, payload, 0, 0, False, 0, received_ms,
                       time.perf_counter_ns(), on_stored, alive)


def batch_item(gateway: str, site: str | None, records: Sequence[Record], epoch: int,
               render: Callable[[Batch], Sequence[Storable]], payload: bytes,
               on_stored: Callable[[], None], alive: Callable[[], bool],
               now_ms: int) -> Prepared:
    """One upload's records (numbered already) as the writer's item; ``payload`` (the frame)
    is what a dead letter keeps."""
    batch = Batch(gateway, site, now_ms, tuple(records), epoch)
    return Prepared(_inbound(gateway, payload, on_stored, alive, now_ms), Kind.BATCH, gateway,
                    batch=batch, points=render(batch), epoch=epoch,
                    urgent=any(r.priority is Priority.FIRE for r in batch.records))


def status_item(gateway: str, site: str | None, online: bool, reason: str,
                now_ms: int, alive: Callable[[], bool]) -> Prepared:
    """A UITD's presence as the writer's item (registry online / offline, ``fg_gateway``)."""
    status = Status(gateway, GatewayState.ONLINE if online else GatewayState.OFFLINE, now_ms,
                    site=site, reason=reason)
    return Prepared(_inbound(gateway, b"", _nothing, alive, now_ms), Kind.STATUS, gateway,
                    status=status)
