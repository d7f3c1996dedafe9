"""Builds the centre from a collector's parts (called by :mod:`collector.app`, kept here so the
composition root needs one line per place it touches)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence

from collector.config import CollectorConfig
from collector.ingest import Prepared
from collector.ledger import SeqLedger
from collector.metrics import Metrics
from collector.points import Storable
from collector.registry import Registry
from collector.uitd.centre import Centre
from collector.uitd.metrics import attach_metrics
from collector.uitd.pipeline import centre_epoch
from protocols.wire import Batch

__all__ = ["build_centre"]


def build_centre(config: CollectorConfig, *, prepared: queue.Queue[Prepared],
                 render: Callable[[Batch], Sequence[Storable]], ledger: SeqLedger,
                 registry: Registry, metrics: Metrics | None = None) -> Centre | None:
    """The centre, or None without ``[gb26875]`` or with ``listen = ""`` (upstreams only).

    Each UITD's seqs continue from the highest its gateway has stored under this
    collector's epoch (the ledger is what persists them); its mapper starts from the
    conditions the registry holds active for it, so what cleared while the collector was
    down is restored by the UITD's first word."""
    gb = config.gb26875
    if gb is None or gb.listen is None:
        return None
    epoch = centre_epoch(config.collector_id)
    highest = {gw: s.highest for gw, s in ledger.stats().gateways.items() if s.epoch == epoch}
    previous: dict[str, dict[str, set[str]]] = {}
    for c in registry.conditions():
        previous.setdefault(c.gateway_id, {}).setdefault(c.source_id, set()).add(c.kind)
    centre = Centre(gb, collector_id=config.collector_id, prepared=prepared, render=render,
                    epoch=epoch, next_seqs=highest,
                    previous={gw: {s: frozenset(k) for s, k in src.items()}
                              for gw, src in previous.items()},
                    state_dir=config.state_dir,
                    heartbeat_s=config.pipeline.health_interval_s)
    if metrics is not None:
        attach_metrics(metrics, centre)
    return centre
