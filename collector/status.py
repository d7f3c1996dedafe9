"""The collector's status as plain data, read from its state directory only (the registry
database, the ledger, the collectors' snapshots), never from the broker: it answers whether the
collector runs or not. With several configs (collectors sharing one subscription) the views are
merged, and a seq is missing only if no collector stored it. ``firegate collector status``
renders it; ``--json`` prints it as it is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from common.proc import pid_alive

__all__ = ["RANK", "collect_status", "merge_gaps", "upstream_rows", "webhook_rows"]


def merge_gaps(views: Sequence[tuple[list[tuple[str, int, int, int]], dict[str, int]]]
               ) -> list[dict[str, Any]]:
    """Gaps over several ledgers. Each view: (its gaps as (gateway, first, last, since_ms),
    highest stored-or-announced seq per gateway). A seq is missing when every ledger misses it
    (a ledger misses what is in its gaps or above its highest), up to the highest of all."""
    top: dict[str, int] = {}
    for _, highest in views:
        for gw, h in highest.items():
            top[gw] = max(top.get(gw, 0), h)
    out = []
    for gw in sorted(top):
        missing: list[tuple[int, int, int]] | None = None
        for gaps, highest in views:
            mine = [(a, b, s) for g, a, b, s in gaps if g == gw]
            mine.append((highest.get(gw, 0) + 1, top[gw], 0))
            missing = mine if missing is None else _intersect(missing, mine)
        for a, b, since in missing or []:
            if a <= b:
                out.append({"gateway": gw, "first": a, "last": b, "missing": b - a + 1,
                            "since_ms": since})
    return out


def _intersect(xs: list[tuple[int, int, int]], ys: list[tuple[int, int, int]]
               ) -> list[tuple[int, int, int]]:
    out = []
    for a1, b1, s1 in xs:
        for a2, b2, s2 in ys:
            a, b = max(a1, a2), min(b1, b2)
            if a <= b:
                out.append((a, b, max(s1, s2)))
    return sorted(out)


def collect_status(configs: Sequence[Any]) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the ``--json`` document)."""
    from collector.ledger import SeqLedger
    from collector.registry import read_status

    now_ms = time.time_ns() // 1_000_000
    gateways: dict[str, dict[str, Any]] = {}
    sites: dict[str, dict[str, Any]] = {}
    alarms: list[dict[str, Any]] = []
    collectors: list[dict[str, Any]] = []
    dead: dict[str, int] = {}
    webhooks: list[dict[str, Any]] = []
    upstreams: list[dict[str, Any]] = []
    views = []
    resets: list[dict[str, Any]] = []
    regressions: dict[str, int] = {}
    for cfg in configs:
        try:
            view = read_status(cfg.registry_path)
        except FileNotFoundError:
            collectors.append({"collector": cfg.collector_id, "state": "never run",
                               "state_dir": str(cfg.state_dir)})
            continue
        for g in view.gateways:
            current = gateways.get(g.id)
            if current is None or (g.last_seen_ms or 0) > (current["last_seen_ms"] or 0):
                gateways[g.id] = {**_asdict(g), "collector": cfg.collector_id}
        for s in view.sites:
            if s.id not in sites or s.updated_ms > sites[s.id]["updated_ms"]:
                sites[s.id] = {"site": s.id, "colour": s.colour, "reasons": s.reasons,
                               "since_ms": s.since_ms, "updated_ms": s.updated_ms}
        alarms += [{"site": c.site, "gateway": c.gateway_id, "source": c.source_id,
                    "kind": c.kind, "colour": c.colour.value, "since_ms": c.since_ms,
                    "text": c.text} for c in view.conditions]
        if not view.snapshots:
            collectors.append({"collector": cfg.collector_id, "state": "no snapshot yet",
                               "state_dir": str(cfg.state_dir)})
        for cid, (updated, body) in view.snapshots.items():
            alive = bool(body.get("running")) and pid_alive(body.get("pid")) and \
                now_ms - updated < 60_000
            collectors.append({**body, "collector": cid, "updated_ms": updated,
                               "state": "running" if alive else "stopped"})
            webhooks += webhook_rows(cid, body, alive)
            upstreams += upstream_rows(cid, body, alive)
            for reason, n in (body.get("dead_letters") or {}).items():
                dead[reason] = dead.get(reason, 0) + n
        if cfg.ledger_path.exists():
            ledger = SeqLedger(cfg.ledger_path)
            try:
                stats = ledger.stats().gateways
                views.append(([(g.gateway_id, g.first, g.last, g.since_ms)
                               for g in ledger.gaps()],
                              {gw: max(s.highest, s.announced) for gw, s in stats.items()}))
                resets += [{"gateway": r.gateway_id, "at_ms": r.at_ms,
                            "old_epoch": f"{r.old_epoch:016x}",
                            "new_epoch": f"{r.new_epoch:016x}", "old_highest": r.old_highest,
                            "old_missing": r.old_missing, "collector": cfg.collector_id}
                           for r in ledger.resets(MAX_RESETS)]
                regressions.update({gw: s.regressions for gw, s in stats.items()
                                    if s.regressions})
            finally:
                ledger.close()
    grace_ms = max(cfg.pipeline.gap_grace_s for cfg in configs) * 1000
    all_gaps = merge_gaps(views)
    gaps = [g for g in all_gaps if now_ms - g["since_ms"] >= grace_ms]
    online = sum(1 for g in gateways.values() if g["state"] == "online")
    return {
        "time_ms": now_ms, "collectors": collectors,
        "sites": sorted(sites.values(), key=lambda s: (-RANK.get(s["colour"], 0), s["site"])),
        "alarms": sorted(alarms, key=lambda a: (-RANK.get(a["colour"], 0), a["since_ms"])),
        "gateways": {"online": online,
                     "offline": sum(1 for g in gateways.values() if g["state"] == "offline"),
                     "unknown": len(gateways) - online - sum(
                         1 for g in gateways.values() if g["state"] == "offline"),
                     "list": sorted(gateways.values(), key=lambda g: g["id"])},
        "gaps": {"ranges": len(gaps), "records": sum(g["missing"] for g in gaps),
                 "late_records": sum(g["missing"] for g in all_gaps) - sum(
                     g["missing"] for g in gaps), "list": gaps},
        "dead_letters": dict(sorted(dead.items())),
        "resets": sorted(resets, key=lambda r: -r["at_ms"])[:MAX_RESETS],
        "seq_regressions": dict(sorted(regressions.items())),
        "webhooks": webhooks,
        "upstreams": upstreams,
        "records_per_s": sum(c.get("records_per_s", 0) for c in collectors
                             if c.get("state") == "running"),
    }


RANK = {"green": 0, "yellow": 1, "red": 2}
MAX_RESETS = 50
"""Gateway resets shown (the newest)."""


def webhook_rows(collector: str, body: dict[str, Any], running: bool) -> list[dict[str, Any]]:
    """The webhooks of one collector's snapshot, each sender lane ``up``, ``dead`` (the
    collector runs but the lane's thread died or stopped looking at its queue) or ``stopped``
    (the collector does not run)."""
    rows = []
    for name, hook in sorted((body.get("webhooks") or {}).items()):
        lanes = hook.get("lanes") or {}
        rows.append({
            "collector": collector, "webhook": name,
            "lanes": {lane: ("up" if info.get("alive") else "dead") if running else "stopped"
                      for lane, info in lanes.items()},
            "restarts": sum(info.get("restarts", 0) for info in lanes.values()),
            **{k: hook.get(k) for k in ("pending", "failed", "errors", "last_error",
                                         "last_error_ms")},
        })
    return rows


def upstream_rows(collector: str, body: dict[str, Any], running: bool) -> list[dict[str, Any]]:
    """The higher centres one collector forwards to (collector/uitd/upstream.py): connected,
    queue depth, oldest unconfirmed age, sent / confirmed / resent / evicted counters (since
    the collector started; the queue depth is durable). A stopped collector is not connected."""
    rows = []
    for up in body.get("upstreams") or []:
        if isinstance(up, dict):
            rows.append({**up, "collector": collector,
                         "connected": bool(up.get("connected")) and running})
    return rows


def _asdict(g: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(g)
